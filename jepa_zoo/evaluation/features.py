"""Frozen features, extracted once per evaluation and kept for every head, seed and protocol.

:func:`extract` runs the encoder over a dataset (pooled features ``[M, D]`` and labels ``[M]``,
in order). :class:`FeatureCache` keeps the features of each dataset it has seen by index, so a
low-shot evaluation over several seeds, a kNN and a linear probe on the same images, or a suite's
entries on one dataset extract every image once.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, Hashable, List, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

log = logging.getLogger("jepa_zoo.eval")


@torch.no_grad()
def extract(encoder: nn.Module, ds: Dataset, batch_size: int, num_workers: int,
            name: str = "images") -> Tuple[Tensor, Tensor]:
    """Pooled features ``[M, D]`` (float32) and labels ``[M]`` of a dataset, in order (progress
    logged about every 10 % and at the end)."""
    feats, labels = [], []
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers)
    every, start = max(1, len(loader) // 10), time.perf_counter()
    log.info("features of %d %s (%d batches) ...", len(ds), name, len(loader))
    param = next(encoder.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    for i, (x, y) in enumerate(loader):
        feats.append(encoder(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
        if (i + 1) % every == 0 and i + 1 < len(loader):
            log.info("  %d/%d batches, %.0f images/s", i + 1, len(loader),
                     sum(map(len, labels)) / (time.perf_counter() - start))
    log.info("features of %d %s: done in %.1f s", len(ds), name, time.perf_counter() - start)
    return torch.cat(feats), torch.cat(labels)


class FeatureCache:
    """Features of ``(key, index)`` pairs, extracted on first use: ``key`` names a dataset and
    how its images are prepared (clean centre crops, or the ``c``-th augmented copy)."""

    def __init__(self, encoder: nn.Module, batch_size: int, num_workers: int):
        self.encoder, self.batch_size, self.num_workers = encoder, batch_size, num_workers
        self.rows: Dict[Hashable, Dict[int, int]] = {}
        self.feats: Dict[Hashable, List[Tensor]] = {}
        self.labels: Dict[Hashable, List[Tensor]] = {}
        self.images = 0  # images run through the encoder (for the log and the benchmark)

    def get(self, key: Hashable, ds: Dataset, indices: Sequence[int], name: str = "images") -> Tuple[Tensor, Tensor]:
        """(features ``[len(indices), D]``, labels) of ``ds[i]`` for ``i`` in ``indices``."""
        rows = self.rows.setdefault(key, {})
        missing = sorted({int(i) for i in indices} - rows.keys())
        if missing:
            f, y = extract(self.encoder, Subset(ds, missing), self.batch_size, self.num_workers, name)
            self.images += len(missing)
            self.feats.setdefault(key, []).append(f)
            self.labels.setdefault(key, []).append(y)
            if len(self.feats[key]) > 1:  # one tensor per key: later lookups index it directly
                self.feats[key], self.labels[key] = [torch.cat(self.feats[key])], [torch.cat(self.labels[key])]
            start = len(rows)
            rows.update({i: start + n for n, i in enumerate(missing)})
        at = torch.tensor([rows[int(i)] for i in indices], dtype=torch.long)
        return self.feats[key][0][at], self.labels[key][0][at]
