"""The batches a method's step receives, typed.

Each is a ``NamedTuple``: fields by name (``batch.inputs``, ``batch.labels``), still unpacked
positionally (``views, labels = batch``), and moved to the device whole by Lightning, which
rebuilds named tuples field by field.  ``inputs`` is whatever the method's training transform
returned, collated: one tensor (I-JEPA), a list of views (LeJEPA), ``(source, target, action)``
(IWM); with ``views.photometric=device`` uint8 crops and their parameters until the datamodule
makes the views on the device.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from torch import Tensor
from torch.utils.data import default_collate


class Batch(NamedTuple):
    """Views and labels: every method without masks, and every validation batch."""

    inputs: Any
    labels: Tensor  # (N,) class indices; -1 where the image has no label


class MaskedBatch(NamedTuple):
    """Views, patch masks and labels (I-JEPA, IWM: :class:`jepa_zoo.masks.collator.MaskCollator`;
    V-JEPA: :class:`~jepa_zoo.masks.collator.VideoMaskCollator`, one entry per mask type)."""

    inputs: Any
    ctx: Any  # (N, K_c) context patch indices; video: a list of them, one per mask type
    tgt: Any  # (N, T, K_t) patch indices of T target blocks; video: a list of (N, K_t), one per mask type
    labels: Tensor


def collate(samples: Sequence[Any]) -> Batch:
    """``(inputs, label)`` samples -> one :class:`Batch` (torch's ``default_collate`` per field)."""
    inputs, labels = default_collate(samples)
    return Batch(inputs, labels)
