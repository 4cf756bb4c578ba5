"""The masking strategies I-JEPA is compared against (Assran et al., 2023, Table 6).

All take a batch size and an ``H × W`` patch grid (``N = H·W``) and return
the same pair as :func:`jepa_zoo.masks.multiblock.sample_masks`: ``context``
``[B, K_c]`` and ``targets`` ``[B, T, K_t]``, sorted raster indices, the
context disjoint from every target of its sample.  In each, the context is
the *complement* of the targets (the paper's ablation), never a separate block:

* ``rasterized_masks``: the grid is cut into four quadrants at row ``⌊H/2⌋``
  and column ``⌊W/2⌋``; per sample one quadrant, uniformly chosen, is the
  context and the other three form one target (``T = 1``, about 75 % of the
  image).
* ``block_masks``: ``T`` blocks per sample (the paper: one block of 60 %),
  sized as in multi-block: scale ``s ~ U(target_scale)`` and aspect
  ``a ~ U(target_aspect)`` once per batch, positions per sample, edges
  reachable; context = every patch outside the blocks.
* ``random_masks``: one target of ``K_t = round(s·N)`` patches drawn uniformly
  without replacement per sample, ``s ~ U(target_scale)`` once per batch; context
  = the other ``N − K_t`` patches.

Where the counts differ between samples (odd grids, overlapping blocks) every
sample keeps ``K = min_b |·|`` of its patches, a uniformly random subset, so
the batch is rectangular; on even grids with one target nothing is dropped.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from jepa_zoo.masks.multiblock import Grid, _place, _select, _uniform, block_size


def _grid(grid: Grid) -> Tuple[int, int]:
    H, W = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if H < 2 or W < 2:
        raise ValueError(f"the patch grid must be at least 2x2, got {H}x{W}")
    return H, W


def _check_batch(batch_size: int, num_targets: int = 1) -> None:
    if batch_size < 1 or num_targets < 1:
        raise ValueError(f"batch_size and num_targets must be >= 1, got {batch_size}, {num_targets}")


def _check_scale(scale: Sequence[float], name: str = "target_scale") -> None:
    lo, hi = scale
    if not 0 < lo <= hi < 1:
        raise ValueError(f"{name} must satisfy 0 < min <= max < 1 (the context needs a patch), got ({lo}, {hi})")


def _rectangular(context: Tensor, targets: Tensor, gen: Optional[torch.Generator]) -> Tuple[Tensor, Tensor]:
    """Boolean ``context [B, N]`` and ``targets [B, T, N]`` -> sorted index tensors, each row cut to
    the batch's smallest count by a uniformly random subset."""
    B, T, N = targets.shape
    k_c = int(context.sum(1).min())
    k_t = int(targets.sum(2).min())
    if k_c < 1 or k_t < 1:
        raise ValueError("a sample has an empty context or target; change the target scale")
    ctx = _select(context, k_c, gen)
    tgt = _select(targets.view(B * T, N), k_t, gen).view(B, T, k_t)
    return ctx, tgt


def rasterized_masks(batch_size: int, grid: Grid, *, generator: Optional[torch.Generator] = None
                     ) -> Tuple[Tensor, Tensor]:
    """Context: one random quadrant per sample; target: the other three (``T = 1``).

    Returns ``context [B, K_c]`` and ``targets [B, 1, K_t]`` with ``K_c + K_t = N`` on even grids.
    """
    _check_batch(batch_size)
    H, W = _grid(grid)
    rows = torch.arange(H).view(H, 1) >= H // 2  # bottom half
    cols = torch.arange(W).view(1, W) >= W // 2  # right half
    quadrant = (rows.long() * 2 + cols.long()).view(1, H * W)  # 0 TL, 1 TR, 2 BL, 3 BR
    pick = torch.randint(0, 4, (batch_size, 1), generator=generator)
    context = quadrant == pick  # [B, N]
    return _rectangular(context, (~context)[:, None, :], generator)


def block_masks(
    batch_size: int,
    grid: Grid,
    *,
    generator: Optional[torch.Generator] = None,
    num_targets: int = 1,
    target_scale: Sequence[float] = (0.6, 0.6),
    target_aspect: Sequence[float] = (0.75, 1.5),
) -> Tuple[Tensor, Tensor]:
    """``num_targets`` blocks per sample as targets; the context is every patch outside them.

    Returns ``context [B, K_c]`` and ``targets [B, T, h·w]``.
    """
    _check_batch(batch_size, num_targets)
    _check_scale(target_scale)
    H, W = _grid(grid)
    lo, hi = target_aspect
    if not 0 < lo <= hi:
        raise ValueError(f"target_aspect must satisfy 0 < min <= max, got ({lo}, {hi})")
    h, w = block_size(_uniform(*target_scale, generator), _uniform(*target_aspect, generator), (H, W))
    if h * w >= H * W:
        raise ValueError(f"target_scale {tuple(target_scale)} makes a block cover the whole {H}x{W} grid")
    targets = _place(batch_size, num_targets, (h, w), (H, W), generator).view(batch_size, num_targets, H * W)
    return _rectangular(~targets.any(dim=1), targets, generator)


def random_masks(
    batch_size: int,
    grid: Grid,
    *,
    generator: Optional[torch.Generator] = None,
    target_scale: Sequence[float] = (0.6, 0.6),
) -> Tuple[Tensor, Tensor]:
    """One target of ``round(s·N)`` uniformly random patches per sample; context = the rest.

    Returns ``context [B, N − K_t]`` and ``targets [B, 1, K_t]``.
    """
    _check_batch(batch_size)
    _check_scale(target_scale)
    H, W = _grid(grid)
    N = H * W
    k_t = min(max(round(_uniform(*target_scale, generator) * N), 1), N - 1)
    order = torch.rand(batch_size, N, generator=generator).argsort(dim=1)
    tgt = order[:, :k_t].sort(dim=1).values
    ctx = order[:, k_t:].sort(dim=1).values
    return ctx, tgt[:, None, :]



# The entries of jepa_zoo.masks.schema.MASKINGS: each ablation from its schema's keys (one target).
def draw_rasterized(masking, batch_size: int, grid: Grid) -> Tuple[Tensor, Tensor]:
    return rasterized_masks(batch_size, grid)


def draw_block(masking, batch_size: int, grid: Grid) -> Tuple[Tensor, Tensor]:
    return block_masks(batch_size, grid, num_targets=1, target_scale=masking.target_scale,
                       target_aspect=masking.target_aspect)


def draw_random(masking, batch_size: int, grid: Grid) -> Tuple[Tensor, Tensor]:
    return random_masks(batch_size, grid, target_scale=masking.target_scale)
