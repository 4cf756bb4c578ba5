"""Batch collator that adds multi-block masks: ``(images, context_idx, target_idx, labels)``.

``images`` is whatever the transform returned, collated: one tensor (I-JEPA)
or a list such as IWM's ``[source, target, action]``.

Masks are drawn in the dataloader workers, off the training step, from
torch's default generator, which the training loader seeds per global batch
(:mod:`jepa_zoo.data.sampling`).  With ``shard=(rank, replicas)`` the
collator draws the masks of the whole global batch (``replicas × B`` rows:
the same block sizes and context length on every rank, as one process with
the global batch would draw) and keeps rows ``rank, rank + replicas, ...``.
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

from torch.utils.data import default_collate

from jepa_zoo.config import MaskingConfig
from jepa_zoo.masks.multiblock import sample_masks


class MultiBlockCollator:
    global_batch = True  # SeededCollate passes shard=(rank, replicas)

    def __init__(self, grid: Tuple[int, int], masking: MaskingConfig):
        self.grid = tuple(grid)
        self.masking = masking

    def __call__(self, samples: Sequence[Any], shard: Tuple[int, int] = (0, 1)) -> List[Any]:
        images, labels = default_collate(samples)
        rank, replicas = shard
        m = self.masking
        ctx, tgt = sample_masks(
            len(samples) * replicas, self.grid, generator=None, num_targets=m.num_targets,
            target_scale=m.target_scale, target_aspect=m.target_aspect, context_scale=m.context_scale,
            min_keep=m.min_keep,
        )
        return [images, ctx[rank::replicas], tgt[rank::replicas], labels]
