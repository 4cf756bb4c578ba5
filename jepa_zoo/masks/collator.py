"""Batch collator that adds patch masks: a :class:`~jepa_zoo.data.batch.MaskedBatch`
``(inputs, ctx, tgt, labels)``.

``images`` is whatever the transform returned, collated: one tensor (I-JEPA)
or a list such as IWM's ``[source, target, action]``.  ``masking.name`` picks
the strategy: ``multiblock`` (the paper's, :mod:`jepa_zoo.masks.multiblock`)
or one of its ablations ``rasterized``, ``block``, ``random``
(:mod:`jepa_zoo.masks.strategies`); video methods use :class:`VideoMaskCollator` (``multiblock3d``).

Masks are drawn in the dataloader workers, off the training step, from
torch's default generator, which the training loader seeds per global batch
(:mod:`jepa_zoo.data.sampling`).  With ``shard=(rank, replicas)`` the
collator draws the masks of the whole global batch (``replicas × B`` rows:
the same block sizes and context length on every rank, as one process with
the global batch would draw) and keeps rows ``rank, rank + replicas, ...``.
"""

from __future__ import annotations

from typing import Any, Sequence, Tuple

from torch import Tensor
from torch.utils.data import default_collate

from jepa_zoo.data.batch import MaskedBatch

from jepa_zoo.masks.multiblock import sample_masks
from jepa_zoo.masks.multiblock3d import sample_mask_types
from jepa_zoo.masks.strategies import block_masks, random_masks, rasterized_masks

from jepa_zoo.masks.schema import MaskingConfig

STRATEGIES = ("multiblock", "rasterized", "block", "random")


def draw_masks(m: MaskingConfig, batch_size: int, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """``context [B, K_c]`` and ``targets [B, T, K_t]`` from the strategy ``masking.name``."""
    if m.name == "multiblock":
        return sample_masks(batch_size, grid, num_targets=m.num_targets, target_scale=m.target_scale,
                            target_aspect=m.target_aspect, context_scale=m.context_scale, min_keep=m.min_keep)
    if m.name == "rasterized":
        return rasterized_masks(batch_size, grid)
    if m.name == "block":
        return block_masks(batch_size, grid, num_targets=m.num_targets, target_scale=m.target_scale,
                           target_aspect=m.target_aspect)
    if m.name == "random":
        return random_masks(batch_size, grid, target_scale=m.target_scale)
    raise ValueError(f"masking.name {m.name!r} draws no patch masks; expected one of {STRATEGIES}")


class MaskCollator:
    global_batch = True  # SeededCollate passes shard=(rank, replicas)

    def __init__(self, grid: Tuple[int, int], masking: MaskingConfig):
        self.grid = tuple(grid)
        self.masking = masking
        if masking.name not in STRATEGIES:  # fail at construction, not in a loader worker
            raise ValueError(f"masking.name {masking.name!r} draws no patch masks; expected one of {STRATEGIES}")

    def __call__(self, samples: Sequence[Any], shard: Tuple[int, int] = (0, 1)) -> MaskedBatch:
        images, labels = default_collate(samples)
        rank, replicas = shard
        ctx, tgt = draw_masks(self.masking, len(samples) * replicas, self.grid)
        return MaskedBatch(images, ctx[rank::replicas], tgt[rank::replicas], labels)


class VideoMaskCollator:
    """V-JEPA's collator: clips and one ``(context [B, K_c], targets [B, K_t])`` pair per mask type of
    ``masking.mask_types`` (:mod:`jepa_zoo.masks.multiblock3d`) on the ``(t, h, w)`` token ``grid``: a
    :class:`~jepa_zoo.data.batch.MaskedBatch` whose ``ctx`` and ``tgt`` are lists, one entry per type.
    Sharded as :class:`MaskCollator` is (the global batch's masks drawn, this rank's rows kept)."""

    global_batch = True

    def __init__(self, grid: Tuple[int, int, int], masking: MaskingConfig):
        if masking.name != "multiblock3d":
            raise ValueError(f"masking.name {masking.name!r}: video methods draw multiblock3d masks")
        self.grid = tuple(grid)
        self.types = [dict(num_blocks=t.num_blocks, spatial_scale=tuple(t.spatial_scale),
                           temporal_scale=tuple(t.temporal_scale), aspect=tuple(t.aspect)) for t in masking.mask_types]

    def __call__(self, samples: Sequence[Any], shard: Tuple[int, int] = (0, 1)) -> MaskedBatch:
        clips, labels = default_collate(samples)
        rank, replicas = shard
        pairs = sample_mask_types(len(samples) * replicas, self.grid, self.types)
        return MaskedBatch(clips, [c[rank::replicas] for c, _ in pairs], [t[rank::replicas] for _, t in pairs], labels)
