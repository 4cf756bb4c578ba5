"""V-JEPA 3-D multi-block masks, vectorised (Bardes et al., 2024, Sec. 3.2; V-JEPA 2 keeps them).

For a batch of clips on a ``T × H × W`` token grid (``N = T·H·W``, tokens ordered time, row,
column) and one mask type (``num_blocks``, ``spatial_scale``, ``temporal_scale``, ``aspect``):

1. one block size per batch and mask type: ``s ~ U(spatial_scale)``, ``τ ~ U(temporal_scale)``,
   ``a ~ U(aspect)``; ``n = ⌊s·H·W⌋``, ``h = round(√(n·a))``, ``w = round(√(n/a))`` (clamped to the
   grid), ``t = max(1, ⌊τ·T⌋)`` frames (the papers' ``τ = 1``: every frame, a spatial block
   repeated over time, so nothing can be copied from a neighbouring frame);
2. per sample, ``num_blocks`` blocks at uniform positions (edges included), in time and space;
3. targets = the union of the blocks; context = every other token (a clip whose blocks cover it
   all is drawn again, as in the official code, at most :data:`MAX_REDRAWS` times);
4. every sample keeps the batch's smallest count of context tokens and of target tokens: a
   uniformly random subset of its own.  (The official collator keeps the lowest indices, which
   drops the last frames' tokens first; here nothing is biased towards early frames.)

V-JEPA uses two mask types per clip (:data:`VJEPA_MASKS`): 8 "short-range" blocks of 15 % and 2
"long-range" blocks of 70 %, aspect 0.75-1.5; the encoder and predictor run once per type.
Returned indices are sorted (token order); context and targets of a sample never overlap.
"""

from __future__ import annotations

import math
from typing import List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from jepa_zoo.masks.multiblock import _place, _select, _uniform

MAX_REDRAWS = 100
VJEPA_MASKS = (
    {"num_blocks": 8, "spatial_scale": (0.15, 0.15), "temporal_scale": (1.0, 1.0), "aspect": (0.75, 1.5)},
    {"num_blocks": 2, "spatial_scale": (0.7, 0.7), "temporal_scale": (1.0, 1.0), "aspect": (0.75, 1.5)},
)


def block_size_3d(spatial: float, temporal: float, aspect: float, grid: Tuple[int, int, int]) -> Tuple[int, int, int]:
    """``(t, h, w)`` of a block (step 1 of the module docstring)."""
    T, H, W = grid
    n = int(H * W * spatial)
    h = min(max(int(round(math.sqrt(n * aspect))), 1), H)
    w = min(max(int(round(math.sqrt(n / aspect))), 1), W)
    return max(1, int(T * temporal)), h, w


def _union(batch: int, count: int, size: Tuple[int, int, int], grid: Tuple[int, int, int],
           gen: Optional[torch.Generator]) -> Tensor:
    """``[B, T·H·W]``: the union of ``count`` blocks of ``size`` per clip, at uniform positions."""
    T, H, W = grid
    t, h, w = size
    space = _place(batch, count, (h, w), (H, W), gen)  # [B, M, H, W]
    start = (torch.rand(batch, count, generator=gen) * (T - t + 1)).long()
    frames = torch.arange(T).view(1, 1, T)
    in_time = (frames >= start[..., None]) & (frames < start[..., None] + t)  # [B, M, T]
    return (in_time[..., None, None] & space[:, :, None]).any(dim=1).view(batch, T * H * W)


def sample_masks_3d(
    batch_size: int,
    grid: Sequence[int],
    *,
    generator: Optional[torch.Generator] = None,
    num_blocks: int = 8,
    spatial_scale: Sequence[float] = (0.15, 0.15),
    temporal_scale: Sequence[float] = (1.0, 1.0),
    aspect: Sequence[float] = (0.75, 1.5),
) -> Tuple[Tensor, Tensor]:
    """Context ``[B, K_c]`` and targets ``[B, K_t]`` token indices of one mask type (module docstring)."""
    T, H, W = (int(g) for g in grid)
    if batch_size < 1 or num_blocks < 1:
        raise ValueError(f"batch_size and num_blocks must be >= 1, got {batch_size}, {num_blocks}")
    for name, (lo, hi), top in (("spatial_scale", spatial_scale, 1.0), ("temporal_scale", temporal_scale, 1.0),
                                ("aspect", aspect, math.inf)):
        if not 0 < lo <= hi <= top:
            raise ValueError(f"{name} must satisfy 0 < min <= max <= {top}, got ({lo}, {hi})")
    s = _uniform(*spatial_scale, generator)
    tau = _uniform(*temporal_scale, generator)
    a = _uniform(*aspect, generator)
    t, h, w = block_size_3d(s, tau, a, (T, H, W))
    target = _union(batch_size, num_blocks, (t, h, w), (T, H, W), generator)
    for _ in range(MAX_REDRAWS):  # a clip whose blocks cover it all is drawn again, as the official code does
        full = target.all(dim=1)
        if not full.any():
            break
        target[full] = _union(int(full.sum()), num_blocks, (t, h, w), (T, H, W), generator)
    else:
        raise ValueError(f"{num_blocks} blocks of {t}x{h}x{w} keep covering the whole {T}x{H}x{W} grid of a clip; "
                         "lower num_blocks or spatial_scale")
    context = ~target
    k_c, k_t = int(context.sum(1).min()), int(target.sum(1).min())
    return _select(context, k_c, generator), _select(target, k_t, generator)


def sample_mask_types(batch_size: int, grid: Sequence[int], mask_types: Sequence[Mapping],
                      generator: Optional[torch.Generator] = None) -> List[Tuple[Tensor, Tensor]]:
    """One ``(context, targets)`` pair per mask type (each a mapping of :func:`sample_masks_3d`'s keywords)."""
    return [sample_masks_3d(batch_size, grid, generator=generator, **dict(m)) for m in mask_types]


def draw(masking, batch_size: int, grid: Sequence[int]) -> List[Tuple[Tensor, Tensor]]:
    """``masking=multiblock3d``'s entry in :data:`jepa_zoo.masks.schema.MASKINGS`: one pair per mask type
    of a :class:`~jepa_zoo.masks.schema.MultiBlock3DMasking`."""
    types = [dict(num_blocks=t.num_blocks, spatial_scale=tuple(t.spatial_scale), temporal_scale=tuple(t.temporal_scale),
                  aspect=tuple(t.aspect)) for t in masking.mask_types]
    return sample_mask_types(batch_size, grid, types)
