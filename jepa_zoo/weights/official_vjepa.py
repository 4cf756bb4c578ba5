"""The official V-JEPA (facebookresearch/jepa, ``.pth.tar``) and V-JEPA 2 (facebookresearch/vjepa2,
``.pt``) checkpoints.

Both are the dict their ``save_checkpoint`` writes: ``encoder``, ``predictor``, ``target_encoder``
state dicts under DDP's and the multi-mask wrappers' ``module.backbone.`` (plus ``opt``, ``scaler``,
``epoch``, ... never read here).  The encoders' keys are :class:`jepa_zoo.models.video.VideoViTEncoder`'s
``model`` keys once the prefix is stripped (``patch_embed.proj`` is a ``Conv3d`` of kernel
``(tubelet, patch, patch)``).  The predictor maps onto :class:`jepa_zoo.models.video_predictor.VideoPredictor`::

    predictor_embed -> embed     predictor_blocks.i -> blocks.i    predictor_norm -> norm
    predictor_proj  -> proj      mask_tokens.j      -> mask_tokens.j
    predictor_pos_embed: regenerated (checked, not loaded)

Which model: V-JEPA stores fixed 3-D sin-cos ``pos_embed`` (uniform power, checked against
:func:`jepa_zoo.models.posembed.sincos_3d`; its grid, so the frame count and image size, is the
factorisation of its length that matches) and 2 mask tokens.  V-JEPA 2 uses RoPE and stores no
table, or tables its RoPE model ignores (its hub loader loads with ``strict=False``): a file is read
as RoPE when its encoder has no ``pos_embed``, its predictor no ``predictor_pos_embed``, its
predictor more than 2 mask tokens (the hub's have 10), or its ``pos_embed`` is not V-JEPA's
sin-cos; ``pos=`` overrides.  A RoPE file
does not record the clip length or image size (``None`` in ``arch``: the run's data settings decide).
Heads are read from the ViT size table (V-JEPA 2's ViT-g has 22); the predictor's from the official
configurations: the encoder's for V-JEPA, 12 for V-JEPA 2's 384-wide predictors.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from torch import Tensor

from jepa_zoo.models.posembed import sincos_3d
from jepa_zoo.weights.official_ijepa import Imported, patch_embed_dims

NAME = "official-vjepa"
# width -> (timm model family, heads) of the official video ViTs (V-JEPA 2's vit_giant has 22 heads)
VIT_SIZES = {192: ("vit_tiny", 3), 384: ("vit_small", 6), 768: ("vit_base", 12), 1024: ("vit_large", 16),
             1280: ("vit_huge", 16), 1408: ("vit_giant", 22)}
PREFIXES = ("module.backbone.", "module.", "backbone.")
PRED_KEYS = {"predictor_embed": "embed", "predictor_norm": "norm", "predictor_proj": "proj"}


def _strip(sd: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    out = {}
    for k, v in sd.items():
        p = next((p for p in PREFIXES if k.startswith(p)), "")
        out[k[len(p):]] = v
    return out


def detect(state: Any) -> bool:
    """Whether ``state`` is an official V-JEPA / V-JEPA 2 checkpoint (an encoder with a 3-D tubelet embedding)."""
    return patch_embed_dims(state) == 5


def grid_of(pe: Tensor) -> Optional[Tuple[int, int, int]]:
    """The ``(t, g, g)`` grid whose 3-D sin-cos embedding (uniform power) ``pe [1, N, D]`` is, or None."""
    n, dim = pe.shape[-2], pe.shape[-1]
    flat = pe.reshape(n, dim).float()
    for g in range(1, math.isqrt(n) + 1):
        if n % (g * g) == 0:
            grid = (n // (g * g), g, g)
            if flat.sub(sincos_3d(grid, dim)).abs().max() <= 1e-4:
                return grid
    return None


def encoder_arch(sd: Mapping[str, Tensor]) -> Dict[str, Any]:
    """A video ViT's architecture from its (prefix-free) state dict's shapes."""
    w = sd["patch_embed.proj.weight"]  # (D, 3, tubelet, p, p)
    dim, tubelet, patch = int(w.shape[0]), int(w.shape[2]), int(w.shape[-1])
    if dim not in VIT_SIZES:
        raise ValueError(f"encoder width {dim} is not a ViT size this importer knows ({sorted(VIT_SIZES)})")
    family, heads = VIT_SIZES[dim]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    return {"embed_dim": dim, "depth": depth, "num_heads": heads, "patch_size": patch, "tubelet_size": tubelet,
            "mlp_ratio": sd["blocks.0.mlp.fc1.weight"].shape[0] / dim, "timm_name": f"{family}_patch{patch}_224",
            "num_frames": None, "img_size": None}


def predictor_state(sd: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """The official predictor's keys as :class:`~jepa_zoo.models.video_predictor.VideoPredictor`'s."""
    out = {}
    for k, v in sd.items():
        if k == "predictor_pos_embed":
            continue
        k = re.sub(r"^predictor_blocks\.", "blocks.", k)
        head, _, tail = k.partition(".")
        out[f"{PRED_KEYS[head]}.{tail}" if head in PRED_KEYS else k] = v
    return out


def read(state: Mapping[str, Any], pos: Optional[str] = None) -> Imported:
    """An official V-JEPA / V-JEPA 2 checkpoint -> :class:`Imported` (``format`` ``official-vjepa`` or
    ``official-vjepa2``; ``arch["pos"]`` ``sincos`` or ``rope``).  ``pos`` overrides the detection
    (module docstring)."""
    enc = _strip(state["encoder"])
    target = _strip(state.get("target_encoder") or {})
    pred_raw = _strip(state.get("predictor") or {})
    arch = encoder_arch(enc)
    pe = enc.pop("pos_embed", None)
    if pos is None:
        tokens = sum(1 for k in pred_raw if k.startswith("mask_tokens."))
        # V-JEPA stores its uniform-power sin-cos in the encoder and the predictor, with one mask token per
        # mask type (2); V-JEPA 2 files store no table, or tables RoPE ignores, and 10 mask tokens (its hub)
        rope = (pe is None or (pred_raw and "predictor_pos_embed" not in pred_raw) or tokens > 2
                or grid_of(pe) is None)
        pos = "rope" if rope else "sincos"
    arch["pos"] = pos
    target.pop("pos_embed", None)
    if pos == "sincos":
        grid = grid_of(pe) if pe is not None else None
        if grid is None:
            raise ValueError("encoder.pos_embed is not V-JEPA's 3-D sin-cos embedding of any (t, g, g) grid")
        arch["num_frames"], arch["img_size"] = grid[0] * arch["tubelet_size"], grid[1] * arch["patch_size"]
    if pred_raw:
        arch["pred_dim"] = int(pred_raw["predictor_embed.weight"].shape[0])
        arch["pred_depth"] = 1 + max(int(m.group(1)) for k in pred_raw
                                     if (m := re.match(r"predictor_blocks\.(\d+)\.", k)))
        arch["num_mask_tokens"] = sum(1 for k in pred_raw if k.startswith("mask_tokens."))
        arch["pred_heads"] = 12 if pos == "rope" and arch["pred_dim"] == 384 else arch["num_heads"]
        ppe = pred_raw.get("predictor_pos_embed")
        if pos == "sincos" and ppe is not None and grid_of(ppe) != grid:
            raise ValueError("predictor.predictor_pos_embed is not the 3-D sin-cos embedding of the encoder's grid")
    fmt = "official-vjepa2" if pos == "rope" else "official-vjepa"
    return Imported(fmt, arch, enc, target, predictor_state(pred_raw))
