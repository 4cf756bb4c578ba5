"""Frozen features, extracted once per evaluation and kept for every head, seed and protocol.

:func:`extract` runs the encoder over a dataset (pooled features ``[M, D]`` and labels ``[M]``,
in order). :class:`FeatureCache` keeps the features of each dataset it has seen by index, so a
low-shot evaluation over several seeds, a kNN and a linear probe on the same images, or a suite's
entries on one dataset extract every image once.

A sample the dataset cannot read (:class:`jepa_zoo.data.datasets.Unreadable`, evaluation's
``data.bad_images=skip``) is dropped, never replaced by another one (which could be a duplicate,
or under ``folds=K`` a sample of another fold): its features are missing, the cache remembers it
(:attr:`FeatureCache.unreadable`) and :func:`unreadable_in` finds such samples without an encoder
for the protocols that train on the fly.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, Hashable, List, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from jepa_zoo.data.datasets import drop_unreadable

log = logging.getLogger("jepa_zoo.eval")


@torch.no_grad()
def extract(encoder: nn.Module, ds: Dataset, batch_size: int, num_workers: int,
            name: str = "images") -> Tuple[Tensor, Tensor, Dict[int, str]]:
    """Pooled features ``[M, D]`` (float32) and labels ``[M]`` of the readable samples of a dataset,
    in order, and the unreadable ones' paths by their index in ``ds`` (progress logged about every
    10 % and at the end)."""
    feats, labels, dropped = [], [], {}
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers, collate_fn=drop_unreadable)
    every, start = max(1, len(loader) // 10), time.perf_counter()
    log.info("features of %d %s (%d batches) ...", len(ds), name, len(loader))
    param = next(encoder.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    for i, (batch, bad) in enumerate(loader):
        dropped.update({i * batch_size + k: u.path for k, u in bad.items()})
        if batch is None:
            continue
        x, y = batch
        feats.append(encoder(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
        if (i + 1) % every == 0 and i + 1 < len(loader):
            log.info("  %d/%d batches, %.0f images/s", i + 1, len(loader),
                     sum(map(len, labels)) / (time.perf_counter() - start))
    log.info("features of %d %s: done in %.1f s%s", len(ds), name, time.perf_counter() - start,
             f" ({len(dropped)} unreadable, dropped)" if dropped else "")
    if not feats:
        from jepa_zoo.data.datasets import DataError

        raise DataError(f"none of the {len(ds)} {name} could be read (first: {next(iter(dropped.values()))})")
    return torch.cat(feats), torch.cat(labels), dropped


def unreadable_in(ds: Dataset, indices: Sequence[int], batch_size: int, num_workers: int) -> Dict[int, str]:
    """The samples among ``ds[indices]`` that cannot be read, by index (one decoding pass, no encoder)."""
    def only_dropped(batch):
        return {k: s.path for k, s in drop_unreadable(batch)[1].items()}

    loader = DataLoader(Subset(ds, list(indices)), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=only_dropped)
    found: Dict[int, str] = {}
    for b, bad in enumerate(loader):
        found.update({int(indices[b * batch_size + k]): path for k, path in bad.items()})
    return found


class FeatureCache:
    """Features of ``(key, index)`` pairs, extracted on first use: ``key`` names a dataset and
    how its images are prepared (clean centre crops, or the ``c``-th augmented copy)."""

    def __init__(self, encoder: nn.Module, batch_size: int, num_workers: int):
        self.encoder, self.batch_size, self.num_workers = encoder, batch_size, num_workers
        self.rows: Dict[Hashable, Dict[int, int]] = {}
        self.feats: Dict[Hashable, List[Tensor]] = {}
        self.labels: Dict[Hashable, List[Tensor]] = {}
        self.images = 0  # images run through the encoder (for the log and the benchmark)
        self.unreadable: Dict[Hashable, Dict[int, str]] = {}  # per key: index -> path, dropped

    def get(self, key: Hashable, ds: Dataset, indices: Sequence[int], name: str = "images") -> Tuple[Tensor, Tensor]:
        """(features, labels) of ``ds[i]`` for the readable ``i`` in ``indices``, in their order (an
        unreadable sample has none: :attr:`unreadable`)."""
        rows = self.rows.setdefault(key, {})
        bad = self.unreadable.setdefault(key, {})
        missing = sorted({int(i) for i in indices} - rows.keys() - bad.keys())
        if missing:
            f, y, dropped = extract(self.encoder, Subset(ds, missing), self.batch_size, self.num_workers, name)
            self.images += len(missing)
            bad.update({missing[p]: path for p, path in dropped.items()})
            self.feats.setdefault(key, []).append(f)
            self.labels.setdefault(key, []).append(y)
            if len(self.feats[key]) > 1:  # one tensor per key: later lookups index it directly
                self.feats[key], self.labels[key] = [torch.cat(self.feats[key])], [torch.cat(self.labels[key])]
            start = len(rows)
            rows.update({i: start + n for n, i in enumerate(i for i in missing if i not in bad)})
        at = torch.tensor([rows[int(i)] for i in indices if int(i) not in bad], dtype=torch.long)
        return self.feats[key][0][at], self.labels[key][0][at]
