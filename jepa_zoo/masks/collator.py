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

import importlib
from typing import Any, Callable, Sequence, Tuple

from torch import Tensor
from torch.utils.data import default_collate

from jepa_zoo.data.batch import MaskedBatch
from jepa_zoo.masks.schema import MASKINGS, PATCH_MASKINGS, VIDEO_MASKINGS, MaskingConfig

STRATEGIES = PATCH_MASKINGS  # the names MaskCollator draws (an image's patch grid)


def drawer(m: MaskingConfig, grid: str) -> Callable:
    """The drawing function of masking ``m`` (its row of :data:`jepa_zoo.masks.schema.MASKINGS`), which must
    mask a ``grid`` (``image`` or ``clip``); a ValueError naming the maskings that do otherwise."""
    spec = MASKINGS.get(m.name)
    if spec is None or spec.grid != grid or spec.draw is None:
        names = PATCH_MASKINGS if grid == "image" else VIDEO_MASKINGS
        kind = "patch masks" if grid == "image" else "clip masks"
        raise ValueError(f"masking.name {m.name!r} draws no {kind}; expected one of {names}")
    module, _, fn = spec.draw.partition(":")
    return getattr(importlib.import_module(module), fn)


def draw_masks(m: MaskingConfig, batch_size: int, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """``context [B, K_c]`` and ``targets [B, T, K_t]`` from the strategy ``masking.name``."""
    return drawer(m, "image")(m, batch_size, grid)


class MaskCollator:
    global_batch = True  # SeededCollate passes shard=(rank, replicas)

    def __init__(self, grid: Tuple[int, int], masking: MaskingConfig):
        self.grid = tuple(grid)
        self.masking = masking
        self.draw = drawer(masking, "image")  # fails at construction, not in a loader worker

    def __call__(self, samples: Sequence[Any], shard: Tuple[int, int] = (0, 1)) -> MaskedBatch:
        images, labels = default_collate(samples)
        rank, replicas = shard
        ctx, tgt = self.draw(self.masking, len(samples) * replicas, self.grid)
        return MaskedBatch(images, ctx[rank::replicas], tgt[rank::replicas], labels)


class VideoMaskCollator:
    """V-JEPA's collator: clips and one ``(context [B, K_c], targets [B, K_t])`` pair per mask type of
    ``masking.mask_types`` (:mod:`jepa_zoo.masks.multiblock3d`) on the ``(t, h, w)`` token ``grid``: a
    :class:`~jepa_zoo.data.batch.MaskedBatch` whose ``ctx`` and ``tgt`` are lists, one entry per type.
    Sharded as :class:`MaskCollator` is (the global batch's masks drawn, this rank's rows kept)."""

    global_batch = True

    def __init__(self, grid: Tuple[int, int, int], masking: MaskingConfig):
        self.draw = drawer(masking, "clip")
        self.grid = tuple(grid)
        self.masking = masking

    def __call__(self, samples: Sequence[Any], shard: Tuple[int, int] = (0, 1)) -> MaskedBatch:
        clips, labels = default_collate(samples)
        rank, replicas = shard
        pairs = self.draw(self.masking, len(samples) * replicas, self.grid)
        return MaskedBatch(clips, [c[rank::replicas] for c, _ in pairs], [t[rank::replicas] for _, t in pairs], labels)
