"""A data source that lives outside the package (``data.module=toy_data``): labelled images drawn from
a seed, no folders.  It exists to show (and test) that a data source is one module: see tests/test_data_sources.py."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from jepa_zoo.data.schema import DataSource


class Stripes(Dataset):
    """``n`` images of horizontal (label 0) or vertical (label 1) stripes at a random phase, uint8 ``[3, S, S]``."""

    classes = ["horizontal", "vertical"]

    def __init__(self, n: int, size: int, seed: int, transform=None, period: int = 4):
        self.n, self.size, self.seed, self.transform, self.period = n, size, seed, transform, period

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + i)
        label = i % 2
        phase = int(torch.randint(self.period, (1,), generator=gen))
        line = ((torch.arange(self.size) + phase) // (self.period // 2)) % 2
        img = (line[:, None] if label == 0 else line[None, :]).expand(self.size, self.size)
        img = (img * 255).to(torch.uint8).expand(3, -1, -1).contiguous()
        return (self.transform(img) if self.transform is not None else img), label


def build(data, transform, seed: int, train: bool) -> Dataset:
    """``data.kwargs.n`` training images (default 64), a quarter as many for validation."""
    n = int(data.kwargs.get("n", 64))
    return Stripes(n if train else max(n // 4, 2), data.img_size, seed if train else seed + 1, transform)


SOURCE = DataSource("image", root=False, build="toy_data:build")
