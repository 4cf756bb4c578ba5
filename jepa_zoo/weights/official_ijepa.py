"""The official I-JEPA checkpoint (facebookresearch/ijepa ``src/train.py``'s ``save_checkpoint``).

A ``.pth.tar`` dict with ``encoder``, ``predictor`` and ``target_encoder`` state dicts (keys under
DDP's ``module.``), plus ``opt``, ``scaler``, ``epoch``, ``loss``, ``batch_size``, ``world_size``,
``lr`` (never read here).  The encoders' keys are timm's ViT keys once ``module.`` is stripped,
with a fixed 2-D sin-cos ``pos_embed`` (column frequencies first, :mod:`jepa_zoo.models.posembed`),
no class token, LayerNorm eps 1e-6.  The predictor maps onto :class:`jepa_zoo.models.predictor.Predictor`::

    predictor_embed  -> embed        predictor_blocks.i -> blocks.i
    mask_token       -> mask_token   predictor_norm     -> norm
    predictor_proj   -> proj         predictor_pos_embed: regenerated (checked, not loaded)

The architecture is read from the shapes: width and patch from ``patch_embed.proj.weight``, depth
from the block count, the grid from ``pos_embed`` (so the image size), the MLP ratio from
``fc1``, the heads from the ViT size table (the official models: ViT-H/14, H/16, g/16).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping

from torch import Tensor

from jepa_zoo.models.posembed import sincos_order_of

NAME = "official-ijepa"
# width -> (timm model family, heads): the ViT sizes of the I-JEPA paper and of timm
VIT_SIZES = {192: ("vit_tiny", 3), 384: ("vit_small", 6), 768: ("vit_base", 12), 1024: ("vit_large", 16),
             1280: ("vit_huge", 16), 1408: ("vit_giant", 16)}
PREFIX = "module."


@dataclass
class Imported:
    """What a checkpoint holds, in jepa_zoo's terms: the architecture and state dicts keyed as
    ``ViTEncoder.model`` (encoders) and ``Predictor`` (predictor) are."""

    format: str
    arch: Dict[str, Any]  # embed_dim, depth, num_heads, patch_size, img_size, mlp_ratio, timm_name; pred_*
    encoder: Dict[str, Tensor]
    target_encoder: Dict[str, Tensor] = field(default_factory=dict)
    predictor: Dict[str, Tensor] = field(default_factory=dict)


def patch_embed_dims(state: Any) -> int:
    """The dimensions of the patch embedding's weight in an official-layout checkpoint (``encoder``,
    ``predictor``, ... state dicts; not a jepa_zoo ``.ckpt``): 4 for I-JEPA's Conv2d, 5 for V-JEPA's
    Conv3d, 0 for anything else."""
    if not (isinstance(state, Mapping) and isinstance(state.get("encoder"), Mapping)
            and "hyper_parameters" not in state):
        return 0
    w = next((v for k, v in state["encoder"].items() if k.endswith("patch_embed.proj.weight")), None)
    return w.dim() if isinstance(w, Tensor) else 0


def detect(state: Any) -> bool:
    """Whether ``state`` (a loaded checkpoint) is an official I-JEPA checkpoint."""
    return patch_embed_dims(state) == 4


def _strip(sd: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    return {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in sd.items()}


def encoder_arch(sd: Mapping[str, Tensor]) -> Dict[str, Any]:
    """A ViT's architecture from its (prefix-free) state dict's shapes."""
    w = sd["patch_embed.proj.weight"]  # (D, 3, p, p)
    dim, patch = int(w.shape[0]), int(w.shape[-1])
    if dim not in VIT_SIZES:
        raise ValueError(f"encoder width {dim} is not a ViT size this importer knows ({sorted(VIT_SIZES)})")
    family, heads = VIT_SIZES[dim]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    n = int(sd["pos_embed"].shape[1]) if "pos_embed" in sd else None
    grid = math.isqrt(n) if n else None
    if n is not None and grid * grid != n:
        raise ValueError(f"pos_embed holds {n} positions: not a square grid")
    mlp_ratio = sd["blocks.0.mlp.fc1.weight"].shape[0] / dim
    return {"embed_dim": dim, "depth": depth, "num_heads": heads, "patch_size": patch, "mlp_ratio": mlp_ratio,
            "img_size": grid * patch if grid else None, "timm_name": f"{family}_patch{patch}_224"}


def predictor_state(sd: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """The official predictor's keys as :class:`~jepa_zoo.models.predictor.Predictor`'s."""
    out = {}
    for k, v in sd.items():
        if k == "predictor_pos_embed":
            continue  # fixed sin-cos, regenerated (read_official checks it)
        k = re.sub(r"^predictor_blocks\.", "blocks.", k)
        k = {"predictor_embed.weight": "embed.weight", "predictor_embed.bias": "embed.bias",
             "predictor_norm.weight": "norm.weight", "predictor_norm.bias": "norm.bias",
             "predictor_proj.weight": "proj.weight", "predictor_proj.bias": "proj.bias"}.get(k, k)
        out[k] = v
    return out


def read(state: Mapping[str, Any]) -> Imported:
    """An official I-JEPA checkpoint -> :class:`Imported` (checks the stored sin-cos embeddings
    against the regenerated ones)."""
    enc = _strip(state["encoder"])
    arch = encoder_arch(enc)
    grid = arch["img_size"] // arch["patch_size"]
    _check_sincos(enc.pop("pos_embed", None), grid, "encoder.pos_embed")
    target = _strip(state.get("target_encoder") or {})
    _check_sincos(target.pop("pos_embed", None), grid, "target_encoder.pos_embed")
    pred_raw = _strip(state.get("predictor") or {})
    if pred_raw:
        _check_sincos(pred_raw.get("predictor_pos_embed"), grid, "predictor.predictor_pos_embed")
        arch["pred_dim"] = int(pred_raw["predictor_embed.weight"].shape[0])
        arch["pred_depth"] = 1 + max(int(m.group(1)) for k in pred_raw
                                     if (m := re.match(r"predictor_blocks\.(\d+)\.", k)))
    return Imported(NAME, arch, enc, target, predictor_state(pred_raw))


def _check_sincos(pe: Any, grid: int, key: str) -> None:
    if pe is None:
        return
    if pe.shape[-2] != grid * grid or sincos_order_of(pe) != "ijepa":
        raise ValueError(f"{key} is not the official I-JEPA sin-cos embedding of a {grid}x{grid} grid")


def write(encoder: Mapping[str, Tensor], target_encoder: Mapping[str, Tensor], predictor: Mapping[str, Tensor],
          **extra: Any) -> Dict[str, Any]:
    """The official checkpoint dict (the reverse of :func:`read`) from timm-keyed encoder state dicts
    holding their ``pos_embed [1, N, D]`` and a :class:`~jepa_zoo.models.predictor.Predictor` state
    dict holding its ``pos_embed [1, N, D_p]``: ``module.`` prefixes, the position embeddings stored
    as the official modules store them (so official code loads exactly what jepa_zoo computes);
    ``extra`` (e.g. ``epoch``) at the top level."""
    back = {"embed.weight": "predictor_embed.weight", "embed.bias": "predictor_embed.bias",
            "norm.weight": "predictor_norm.weight", "norm.bias": "predictor_norm.bias",
            "proj.weight": "predictor_proj.weight", "proj.bias": "predictor_proj.bias",
            "pos_embed": "predictor_pos_embed", "mask_token": "mask_token"}
    pred = {PREFIX + back.get(k, re.sub(r"^blocks\.", "predictor_blocks.", k)): v for k, v in predictor.items()}
    return {"encoder": {PREFIX + k: v for k, v in encoder.items()}, "predictor": pred,
            "target_encoder": {PREFIX + k: v for k, v in target_encoder.items()}, **extra}
