"""I-JEPA multi-block masks, vectorised (Assran et al., 2023, Sec. 3).

For a batch on an ``H × W`` patch grid (``N = H·W``):

1. one target block size per batch: scale ``s ~ U(target_scale)`` and aspect
   ``a ~ U(target_aspect)`` drawn *independently*; ``h = round(√(s·N·a))``,
   ``w = round(s·N / h)`` (both clamped to the grid), so every target block
   holds ``h·w ≈ s·N`` patches;
2. one context block size per batch: ``s_c ~ U(context_scale)``, aspect 1;
3. per sample, ``num_targets`` target blocks and one context block placed
   uniformly: top-left corners in ``[0, H − h] × [0, W − w]`` *inclusive*, so
   the last row and column are reachable;
4. context = context block minus the union of that sample's targets;
5. every sample keeps the same number of context patches
   ``K_c = max(min_b |context_b|, min_keep)``: samples with more keep a
   uniformly random subset (not the raster-order prefix), samples with fewer
   are topped up with random patches outside their targets.

No rejection sampling, so no retry loop can spin (the official collator never
terminates on 8×8 grids).  Returned indices are sorted (raster order).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

Grid = Union[int, Tuple[int, int]]


def _uniform(lo: float, hi: float, gen: Optional[torch.Generator]) -> float:
    return lo + (hi - lo) * torch.rand((), generator=gen).item()


def block_size(scale: float, aspect: float, grid: Tuple[int, int]) -> Tuple[int, int]:
    """Block ``(h, w)`` covering about ``scale·H·W`` patches with ``h/w ≈ aspect``, clamped to the grid."""
    H, W = grid
    area = scale * H * W
    h = min(max(round(math.sqrt(area * aspect)), 1), H)
    w = min(max(round(area / h), 1), W)
    return h, w


def _place(batch: int, count: int, size: Tuple[int, int], grid: Tuple[int, int],
           gen: Optional[torch.Generator]) -> Tensor:
    """``[B, count, H, W]`` boolean masks of ``h × w`` blocks at uniform positions (edges included)."""
    H, W = grid
    h, w = size
    top = (torch.rand(batch, count, generator=gen) * (H - h + 1)).long()
    left = (torch.rand(batch, count, generator=gen) * (W - w + 1)).long()
    rows = torch.arange(H).view(1, 1, H, 1)
    cols = torch.arange(W).view(1, 1, 1, W)
    t, l = top[..., None, None], left[..., None, None]
    return (rows >= t) & (rows < t + h) & (cols >= l) & (cols < l + w)


def _select(mask: Tensor, k: int, gen: Optional[torch.Generator], preferred: Optional[Tensor] = None) -> Tensor:
    """Sorted indices of ``k`` patches per row of ``mask`` ``[B, N]``, chosen at random.

    Patches in ``preferred`` are taken first; patches outside ``mask`` never.
    """
    score = torch.rand(mask.shape, generator=gen)
    if preferred is not None:
        score = score + 2.0 * preferred
    score = score.masked_fill(~mask, -1.0)
    idx = score.topk(k, dim=1).indices
    return idx.sort(dim=1).values


def sample_masks(
    batch_size: int,
    grid: Grid,
    *,
    generator: Optional[torch.Generator] = None,
    num_targets: int = 4,
    target_scale: Sequence[float] = (0.15, 0.2),
    target_aspect: Sequence[float] = (0.75, 1.5),
    context_scale: Sequence[float] = (0.85, 1.0),
    min_keep: int = 10,
) -> Tuple[Tensor, Tensor]:
    """Sample I-JEPA context and target patch indices (see module docstring).

    Returns:
        ``context`` LongTensor ``[B, K_c]`` and ``targets`` LongTensor
        ``[B, num_targets, K_t]`` of raster indices into the ``H·W`` grid;
        context and targets of a sample never overlap.
    """
    H, W = (grid, grid) if isinstance(grid, int) else tuple(grid)
    N = H * W
    if batch_size < 1 or num_targets < 1:
        raise ValueError(f"batch_size and num_targets must be >= 1, got {batch_size}, {num_targets}")
    for name, (lo, hi), top in (("target_scale", target_scale, 1.0), ("context_scale", context_scale, 1.0),
                                ("target_aspect", target_aspect, math.inf)):
        if not 0 < lo <= hi <= top:
            raise ValueError(f"{name} must satisfy 0 < min <= max <= {top}, got ({lo}, {hi})")

    th, tw = block_size(_uniform(*target_scale, generator), _uniform(*target_aspect, generator), (H, W))
    ch, cw = block_size(_uniform(*context_scale, generator), 1.0, (H, W))

    targets = _place(batch_size, num_targets, (th, tw), (H, W), generator).view(batch_size, num_targets, N)
    union = targets.any(dim=1)  # [B, N]
    context = _place(batch_size, 1, (ch, cw), (H, W), generator).view(batch_size, N) & ~union
    free = ~union
    k_ctx = max(int(context.sum(1).min()), min_keep)
    k_ctx = min(k_ctx, int(free.sum(1).min()))
    if k_ctx < 1:
        raise ValueError(f"targets cover the whole {H}x{W} grid; lower num_targets or target_scale")

    context_idx = _select(free, k_ctx, generator, preferred=context)
    k_t = th * tw
    target_idx = targets.float().topk(k_t, dim=2).indices.sort(dim=2).values  # each block has exactly k_t
    return context_idx, target_idx


def draw(masking, batch_size: int, grid: Grid) -> Tuple[Tensor, Tensor]:
    """``masking=multiblock``'s entry in :data:`jepa_zoo.masks.schema.MASKINGS`: :func:`sample_masks` with
    the keys of a :class:`~jepa_zoo.masks.schema.MultiBlockMasking`."""
    m = masking
    return sample_masks(batch_size, grid, num_targets=m.num_targets, target_scale=m.target_scale,
                        target_aspect=m.target_aspect, context_scale=m.context_scale, min_keep=m.min_keep)
