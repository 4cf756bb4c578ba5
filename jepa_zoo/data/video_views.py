"""Clip transforms (torchvision transforms v2 on ``tv_tensors.Video``).

v2 draws a transform's random parameters once per call and applies them to every frame of a
``Video``, so one random-resized crop and one flip hold for the whole clip, as V-JEPA's recipe
needs (its default: scale U(0.3, 1), aspect log-U(0.75, 1.35), flip 0.5, no colour
augmentation).  Input: uint8 ``[..., T, C, H, W]`` (a clip, or ``[clips, T, C, H, W]``); output:
normalised float ``[..., C, T, H, W]``, the layout the video encoder takes.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2


class ClipTransform:
    """A v2 pipeline applied to a clip as one ``Video``, then ``[..., T, C, H, W] -> [..., C, T, H, W]``."""

    def __init__(self, ops: Sequence[v2.Transform], mean: Sequence[float], std: Sequence[float]):
        self.pipeline = v2.Compose([*ops, v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])

    def __call__(self, clip: Tensor) -> Tensor:
        out = self.pipeline(tv_tensors.Video(clip))
        return out.as_subclass(Tensor).transpose(-4, -3).contiguous()


def video_train_transform(size: int, scale: Sequence[float], aspect: Sequence[float], flip_p: float,
                          mean: Sequence[float], std: Sequence[float]) -> ClipTransform:
    """One random-resized crop (``scale``, ``aspect``) and a flip with probability ``flip_p`` per clip."""
    ops = [v2.RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(aspect), antialias=True)]
    if flip_p > 0:
        ops.append(v2.RandomHorizontalFlip(flip_p))
    return ClipTransform(ops, mean, std)


def video_eval_transform(size: int, crop_ratio: float, mean: Sequence[float], std: Sequence[float]) -> ClipTransform:
    """Short side to ``size / crop_ratio``, centre crop ``size``."""
    return ClipTransform([v2.Resize(int(round(size / crop_ratio)), antialias=True), v2.CenterCrop(size)], mean, std)
