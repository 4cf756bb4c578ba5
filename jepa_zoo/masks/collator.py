"""Batch collator that adds multi-block masks: ``(images, context_idx, target_idx, labels)``.

``images`` is whatever the transform returned, collated: one tensor (I-JEPA)
or a list such as IWM's ``[source, target, action]``.

Masks are drawn in the dataloader workers, off the training step, from
torch's default generator: in a worker it is seeded by the DataLoader from a
base seed drawn in the main process (which ``seed_everything`` seeds), and
without workers it is the main process's own.  Either way the mask stream
follows the main process's generator, which checkpoints save and restore
(:class:`jepa_zoo.checkpointing.RNGState`), so a resumed run draws the same
masks as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

from torch.utils.data import default_collate

from jepa_zoo.config import MaskingConfig
from jepa_zoo.masks.multiblock import sample_masks


class MultiBlockCollator:
    def __init__(self, grid: Tuple[int, int], masking: MaskingConfig):
        self.grid = tuple(grid)
        self.masking = masking

    def __call__(self, samples: Sequence[Any]) -> List[Any]:
        images, labels = default_collate(samples)
        m = self.masking
        ctx, tgt = sample_masks(
            len(samples), self.grid, generator=None, num_targets=m.num_targets,
            target_scale=m.target_scale, target_aspect=m.target_aspect, context_scale=m.context_scale,
            min_keep=m.min_keep,
        )
        return [images, ctx, tgt, labels]
