"""Batch collator that adds multi-block masks: ``(images, context_idx, target_idx, labels)``.

``images`` is whatever the transform returned, collated: one tensor (I-JEPA)
or a list such as IWM's ``[source, target, action]``.

Masks are drawn in the dataloader workers, off the training step.  Each
process owns a generator seeded from its worker seed (which Lightning's
``seed_everything(workers=True)`` derives from the run seed) or, without
workers, from ``seed``: the mask stream is reproducible for a given seed and
worker count.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import default_collate, get_worker_info

from jepa_zoo.config import MaskingConfig
from jepa_zoo.masks.multiblock import sample_masks


class MultiBlockCollator:
    def __init__(self, grid: Tuple[int, int], masking: MaskingConfig, seed: int = 0):
        self.grid = tuple(grid)
        self.masking = masking
        self.seed = seed
        self._gen: Optional[torch.Generator] = None
        self._owner: Optional[int] = None

    def _generator(self) -> torch.Generator:
        info = get_worker_info()
        owner = info.id if info is not None else -1
        if self._gen is None or self._owner != owner:
            self._gen = torch.Generator().manual_seed(info.seed if info is not None else self.seed)
            self._owner = owner
        return self._gen

    def __call__(self, samples: Sequence[Any]) -> List[Any]:
        images, labels = default_collate(samples)
        m = self.masking
        ctx, tgt = sample_masks(
            len(samples), self.grid, generator=self._generator(), num_targets=m.num_targets,
            target_scale=m.target_scale, target_aspect=m.target_aspect, context_scale=m.context_scale,
            min_keep=m.min_keep,
        )
        return [images, ctx, tgt, labels]
