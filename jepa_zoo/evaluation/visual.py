"""Panels researchers look at: masks on images, IWM view pairs with their actions, retrievals.

Each function takes float images ``[B, 3, H, W]`` in [0, 1] (normalisation
undone) and returns one uint8 image grid ``[3, H', W']`` for a logger or a PNG.
"""

from __future__ import annotations

import colorsys
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import draw_segmentation_masks, make_grid

# The 7 numbers of IWM's action a_{x→y} (jepa_zoo.data.actions): target − source jitter deltas,
# each over its range, then the source's destructive-augmentation flags.
ACTION_NAMES = ("d_brightness", "d_contrast", "d_saturation", "d_hue", "grayscale", "blur", "solarize")
FLAGS = ("grayscale", "blur", "solarize")  # on/off: shown as such, not as numbers

TINT_ALPHA = 0.5  # weight of a target block's colour
DIM = 0.3  # brightness kept by patches that are neither context nor target
PAD = 2


def to_uint8(images: Tensor) -> Tensor:
    """Float images in [0, 1] -> uint8 (on the CPU)."""
    return TF.to_dtype(images.detach().float().clamp(0, 1).cpu(), torch.uint8, scale=True)


def block_colors(n: int) -> List[Tuple[int, int, int]]:
    """``n`` distinct saturated colours, evenly spaced in hue."""
    return [tuple(round(255 * c) for c in colorsys.hsv_to_rgb(i / n, 1.0, 1.0)) for i in range(n)]


def _patch_mask(idx: Tensor, grid: Tuple[int, int], patch: int) -> Tensor:
    """Raster patch indices ``[K]`` -> boolean pixel mask ``[H·patch, W·patch]``."""
    gh, gw = grid
    m = torch.zeros(gh * gw, dtype=torch.bool)
    m[idx.cpu()] = True
    return m.view(gh, gw).repeat_interleave(patch, 0).repeat_interleave(patch, 1)


def mask_overlay(images: Tensor, context_idx: Tensor, target_idx: Tensor, grid: Union[int, Tuple[int, int]],
                 patch: int) -> Tensor:
    """I-JEPA / IWM masks drawn over the images: one row per image, the image then its masks.

    In the masked copy the context patches (what the context encoder sees) keep their pixels,
    each target block (what the predictor must predict) is tinted with its own colour
    (``TINT_ALPHA`` of the colour; where blocks overlap the tint is black), and every other
    patch is dimmed to ``DIM`` of its brightness.

    Args:
        images: float ``[B, 3, H, W]`` in [0, 1], ``H = grid_h · patch``, ``W = grid_w · patch``.
        context_idx: ``[B, K_c]`` raster patch indices; target_idx: ``[B, T, K_t]``.
    """
    grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
    b, _, h, w = images.shape
    if (h, w) != (grid[0] * patch, grid[1] * patch):
        raise ValueError(f"images of {h}x{w} px do not match a {grid[0]}x{grid[1]} grid of {patch} px patches")
    if context_idx.shape[0] != b or target_idx.shape[0] != b or target_idx.dim() != 3:
        raise ValueError(f"expected context [B, K_c] and targets [B, T, K_t] for B={b}, "
                         f"got {tuple(context_idx.shape)} and {tuple(target_idx.shape)}")
    imgs = to_uint8(images)
    colors = block_colors(target_idx.shape[1])
    tiles = []
    for i in range(b):
        targets = torch.stack([_patch_mask(t, grid, patch) for t in target_idx[i]])
        keep = _patch_mask(context_idx[i], grid, patch) | targets.any(0)
        dimmed = torch.where(keep, imgs[i], (imgs[i].float() * DIM).to(torch.uint8))
        tiles += [imgs[i], draw_segmentation_masks(dimmed, targets, alpha=TINT_ALPHA, colors=colors)]
    return make_grid(tiles, nrow=2, padding=PAD)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


FONT = 12
LINE = FONT + 4


def titled(image: Tensor, title: str, headers: Sequence[Tuple[int, str]] = (),
           swatches: Sequence[Tuple[Tuple[int, int, int], str]] = ()) -> Tensor:
    """``image`` (uint8 ``[3, H, W]``) under a band with a ``title`` line, an optional line of
    coloured ``swatches`` (colour, label) and a line of column ``headers`` (x, text)."""
    font = _font(FONT)
    lines = 1 + bool(swatches) + bool(headers)
    band = lines * LINE + 4
    swatch_w = sum(FONT + 10 + int(font.getlength(text)) for _, text in swatches)
    width = max(image.shape[-1], int(font.getlength(title)) + 8, swatch_w + 4)
    canvas = Image.new("RGB", (width, band + image.shape[-2]), (0, 0, 0))
    canvas.paste(TF.to_pil_image(image), (0, band))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill=(255, 255, 255), font=font)
    y = 2 + LINE
    if swatches:
        x = 4
        for color, text in swatches:
            draw.rectangle((x, y + 2, x + FONT - 2, y + FONT), fill=tuple(color))
            draw.text((x + FONT + 2, y), text, fill=(220, 220, 220), font=font)
            x += FONT + 10 + int(font.getlength(text))
        y += LINE
    for x, text in headers:
        draw.text((x, y), text, fill=(255, 230, 120), font=font)
    return TF.pil_to_tensor(canvas)


def mask_panel(images: Tensor, context_idx: Tensor, target_idx: Tensor, grid: Union[int, Tuple[int, int]],
               patch: int, step: Optional[int] = None) -> Tensor:
    """:func:`mask_overlay` with a title, column headers and a legend of the target blocks' colours."""
    out = mask_overlay(images, context_idx, target_idx, grid, patch)
    w = images.shape[-1]
    colors = block_colors(target_idx.shape[1])
    swatches = [((255, 255, 255), "context (kept)"), ((int(255 * DIM),) * 3, "neither (dimmed)")]
    swatches += [(c, f"target {i + 1}") for i, c in enumerate(colors)]
    title = "masks: the context encoder sees the kept patches, the predictor predicts each target" + (
        f" (step {step})" if step is not None else "")
    return titled(out, title, [(PAD, "image"), (2 * PAD + w, "context / targets")], swatches)


PAIR_FONT = 11


def pair_scale(h: int, lines: int) -> int:
    """The integer upscaling of ``h``-px views that makes them as tall as ``lines`` lines of the action."""
    return max(1, math.ceil((lines * (PAIR_FONT + 3) + 4) / h))


def pair_panel(source: Tensor, target: Tensor, action: Tensor, names: Sequence[str] = ACTION_NAMES) -> Tensor:
    """IWM's world-model inputs: one row per pair, source view | target view | the action a_{x→y}.

    The action's 7 numbers are written beside each pair, one per line, named as in
    :mod:`jepa_zoo.data.actions`: the target-minus-source jitter deltas (over their ranges,
    in [−1, 1]) and the source's grayscale / blur / solarize flags.  Small views are upscaled
    (nearest) so that the image is at least as tall as the text.

    Args:
        source, target: float ``[B, 3, H, W]`` in [0, 1]; action: ``[B, len(names)]``.
    """
    b = source.shape[0]
    if target.shape != source.shape or action.shape != (b, len(names)):
        raise ValueError(f"expected source/target [B, 3, H, W] and action [B, {len(names)}], got "
                         f"{tuple(source.shape)}, {tuple(target.shape)}, {tuple(action.shape)}")
    font_size, line = PAIR_FONT, PAIR_FONT + 3
    h, w = source.shape[-2:]
    scale = pair_scale(h, len(names))
    views = to_uint8(torch.cat([source, target]))
    if scale > 1:
        views = F.interpolate(views, scale_factor=scale, mode="nearest")
    sh, sw = h * scale, w * scale
    font = _font(font_size)
    text_w = max(int(font.getlength(f"{n} +0.00")) for n in names) + 8  # "on"/"off" are narrower
    rows = []
    for i in range(b):
        canvas = Image.new("RGB", (2 * sw + PAD + text_w, max(sh, len(names) * line + 4)), (0, 0, 0))
        canvas.paste(TF.to_pil_image(views[i]), (0, 0))
        canvas.paste(TF.to_pil_image(views[b + i]), (sw + PAD, 0))
        draw = ImageDraw.Draw(canvas)
        for j, (name, v) in enumerate(zip(names, action[i].tolist())):
            value = ("on" if v > 0.5 else "off") if name in FLAGS else f"{v:+.2f}"
            draw.text((2 * sw + PAD + 4, 2 + j * line), f"{name} {value}", fill=(255, 255, 255), font=font)
        rows.append(TF.pil_to_tensor(canvas))
    return make_grid(rows, nrow=1, padding=PAD)


def pairs_panel(source: Tensor, target: Tensor, action: Tensor, step: Optional[int] = None) -> Tensor:
    """:func:`pair_panel` with a title and "source | target | action" headers."""
    out = pair_panel(source, target, action)
    s = source.shape[-1] * pair_scale(source.shape[-2], action.shape[1])  # each view's drawn width
    title = "IWM world-model inputs: the predictor maps source to target given the action" + (
        f" (step {step})" if step is not None else "")
    return titled(out, title, [(PAD, "source"), (2 * PAD + s, "target"), (3 * PAD + 2 * s, "action a(x->y)")])


def nearest(query_feats: Tensor, bank_feats: Tensor, k: int, self_index: Optional[Tensor] = None) -> Tensor:
    """Indices ``[Q, k]`` of each query's ``k`` most cosine-similar bank entries, best first.

    ``self_index[q]``: the bank position holding query ``q`` itself (when the bank is the query
    set), never returned.  ``k`` is capped at the number of bank entries left.
    """
    sim = F.normalize(query_feats.float(), dim=-1) @ F.normalize(bank_feats.float(), dim=-1).T
    if self_index is not None:
        sim[torch.arange(sim.shape[0], device=sim.device), self_index.to(sim.device)] = -math.inf
    k = min(k, bank_feats.shape[0] - (self_index is not None))
    if k < 1:
        raise ValueError(f"a bank of {bank_feats.shape[0]} images has no neighbours to show")
    return sim.topk(k, dim=1).indices


def retrieval_panel(query_images: Tensor, bank_images: Tensor, query_feats: Tensor, bank_feats: Tensor, k: int,
                    self_index: Optional[Tensor] = None) -> Tensor:
    """Nearest-neighbour retrieval: one row per query, the query then its ``k`` nearest bank images
    by cosine similarity of the features, most similar first (distinct bank images; with
    ``self_index`` the query's own entry in the bank is left out, see :func:`nearest`).

    Args:
        query_images ``[Q, 3, H, W]``, bank_images ``[N, 3, H, W]``: float in [0, 1];
        query_feats ``[Q, D]``, bank_feats ``[N, D]``.
    """
    return _retrieval_grid(query_images, bank_images, nearest(query_feats, bank_feats, k, self_index).cpu())


def _retrieval_grid(query_images: Tensor, bank_images: Tensor, idx: Tensor) -> Tensor:
    queries, bank = to_uint8(query_images), to_uint8(bank_images)
    tiles = [t for q in range(idx.shape[0]) for t in (queries[q], *bank[idx[q]])]
    return make_grid(tiles, nrow=idx.shape[1] + 1, padding=PAD)


def retrievals_panel(query_images: Tensor, bank_images: Tensor, query_feats: Tensor, bank_feats: Tensor, k: int,
                     self_index: Optional[Tensor] = None, query_labels: Optional[Tensor] = None,
                     bank_labels: Optional[Tensor] = None, class_names: Optional[Sequence[str]] = None,
                     step: Optional[int] = None) -> Tensor:
    """:func:`retrieval_panel` for a reader: a title, a framed "query" column, and under every image
    its class (with labels) and under each neighbour its cosine similarity to the query, green when
    its class is the query's, red when not."""
    idx = nearest(query_feats, bank_feats, k, self_index).cpu()
    grid = _retrieval_grid(query_images, bank_images, idx)
    sim = (F.normalize(query_feats.float(), dim=-1) @ F.normalize(bank_feats.float(), dim=-1).T).cpu()
    h, w = query_images.shape[-2:]
    font = _font(FONT - 1)
    rows, cols = idx.shape[0], idx.shape[1] + 1
    canvas = Image.new("RGB", (grid.shape[-1], grid.shape[-2] + rows * LINE), (0, 0, 0))
    src = TF.to_pil_image(grid)
    draw = ImageDraw.Draw(canvas)

    def name(label: int) -> str:
        if class_names is not None and 0 <= label < len(class_names):
            return str(class_names[label])[:12]
        return str(label) if label >= 0 else "?"

    for r in range(rows):
        y0 = PAD + r * (h + PAD)  # in the grid
        y = y0 + r * LINE  # on the canvas: each row gets a caption line below it
        canvas.paste(src.crop((0, y0 - PAD, grid.shape[-1], y0 + h + PAD)), (0, y - PAD))
        draw.rectangle((PAD - 1, y - 1, PAD + w, y + h), outline=(255, 210, 0), width=2)
        for c in range(cols):
            x = PAD + c * (w + PAD)
            if c == 0:
                text, color = ("query " + name(int(query_labels[r]))) if query_labels is not None else "query", (255, 210, 0)
            else:
                j = int(idx[r, c - 1])
                same = None if query_labels is None or bank_labels is None else int(bank_labels[j]) == int(query_labels[r])
                text = (f"{name(int(bank_labels[j]))} " if bank_labels is not None else "") + f"{float(sim[r, j]):.2f}"
                color = (200, 200, 200) if same is None else ((90, 220, 90) if same else (240, 90, 90))
            draw.text((x, y + h + 1), text, fill=color, font=font)
    title = "nearest neighbours by cosine similarity of the evaluation encoder's features" + (
        f" (step {step})" if step is not None else "")
    headers = [(PAD, "query")] + [(PAD + c * (w + PAD), f"#{c}") for c in range(1, cols)]
    return titled(TF.pil_to_tensor(canvas), title, headers)
