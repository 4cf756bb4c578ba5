"""Synthetic clips of a shape moving with a known velocity, for tests and CPU examples.

Clip ``i`` (drawn from a generator seeded by ``seed`` and ``i``, so the same every time) shows one
square or disc of random colour and size on a dark, slightly noisy background.  Its label is its
motion, one of four classes that a horizontal flip leaves unchanged (so V-JEPA's flip keeps the
labels true)::

    0 still          velocity 0
    1 horizontal     (±v, 0)
    2 vertical       (0, ±v)
    3 diagonal       (±v, ±v)

with ``v`` between 1 and 2 pixels per frame at 32 px (scaled with the image size) and a start chosen
so the shape stays inside the frame.  One frame cannot tell the classes apart (the shape and its
position are random in every class): a probe above chance needs features that see motion.
Samples are uint8 ``[T, 3, H, W]`` clips, as :class:`jepa_zoo.data.video.VideoClips` gives.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor
from torch.utils.data import Dataset

CLASSES = ["still", "horizontal", "vertical", "diagonal"]
DIRECTIONS = {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (1, 1)}  # (rows, columns) moved per unit of speed


class MovingShapes(Dataset):
    def __init__(self, size: int, num_frames: int, img_size: int, seed: int = 0,
                 transform: Optional[Callable] = None):
        self.size, self.num_frames, self.img_size, self.seed = size, num_frames, img_size, seed
        self.transform = transform
        self.classes = list(CLASSES)

    def __len__(self) -> int:
        return self.size

    @property
    def targets(self):
        """Every clip's label, without drawing it."""
        return [i % len(CLASSES) for i in range(self.size)]

    def clip(self, i: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        n, t = self.img_size, self.num_frames
        label = i % len(CLASSES)
        side = int(n * (0.2 + 0.15 * torch.rand((), generator=g).item()))
        speed = (1.0 + torch.rand((), generator=g).item()) * n / 32
        signs = torch.randint(0, 2, (2,), generator=g) * 2 - 1
        vel = torch.tensor(DIRECTIONS[label], dtype=torch.float32) * signs * speed  # (rows, cols) per frame
        travel = vel * (t - 1)
        lo = torch.clamp(-travel, min=0)  # the start leaves room for the whole path
        hi = (n - side) - torch.clamp(travel, min=0)
        start = lo + torch.rand(2, generator=g) * (hi - lo).clamp(min=0)
        colour = 0.4 + 0.6 * torch.rand(3, generator=g)
        disc = bool(torch.rand((), generator=g) < 0.5)
        rows = torch.arange(n, dtype=torch.float32).view(1, n, 1)
        cols = torch.arange(n, dtype=torch.float32).view(1, 1, n)
        pos = start + vel * torch.arange(t, dtype=torch.float32)[:, None]  # [T, 2] top-left corners
        top, left = pos[:, 0].view(t, 1, 1), pos[:, 1].view(t, 1, 1)
        if disc:
            r = side / 2
            inside = (rows - top - r) ** 2 + (cols - left - r) ** 2 <= r * r
        else:
            inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
        background = 0.1 + 0.05 * torch.rand(t, 3, n, n, generator=g)
        frames = torch.where(inside[:, None], colour.view(1, 3, 1, 1), background)
        return (frames * 255).round().to(torch.uint8)

    def __getitem__(self, i: int):
        clip = self.clip(i)
        return (self.transform(clip) if self.transform else clip), i % len(CLASSES)


def split(data, transform: Optional[Callable], seed: int, train: bool) -> Dataset:
    """``data=moving_shapes``'s :class:`~jepa_zoo.data.schema.DataSource` build: ``data.fake_size`` clips for
    training, a quarter as many (at least 4) for validation, from other seeds."""
    if train:
        return MovingShapes(data.fake_size, data.num_frames, data.img_size, seed, transform)
    return MovingShapes(max(data.fake_size // 4, 4), data.num_frames, data.img_size, seed + 1, transform)
