"""Low-shot subsets and their summary over seeds.

``shots=N``: ``N`` training images of every class, drawn without replacement
with the seed; ``fraction=f``: ``round(f·M_c)`` images of each class ``c``
(at least one), so the class balance of the full split is kept (I-JEPA's
1 % ImageNet). Results over ``S`` seeds are reported as mean ± standard
deviation (the sample std, ``S − 1`` in the denominator; 0 for one seed).
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Dict, List, Optional, Sequence

import torch

from jepa_zoo.data.datasets import DataError


def draw(labels: Sequence[int], pool: Sequence[int], seed: int, shots: Optional[int] = None,
         fraction: Optional[float] = None, class_names: Optional[Sequence[str]] = None) -> List[int]:
    """Indices (sorted) of a per-class subset of ``pool`` (indices into ``labels``).

    Raises:
        DataError: a class of ``labels`` has fewer than ``shots`` images (or none) in ``pool``, naming it."""
    by_class: Dict[int, List[int]] = {int(c): [] for c in set(labels)}  # every class of the split
    for i in pool:
        by_class[int(labels[i])].append(int(i))
    gen = torch.Generator().manual_seed(seed)
    out: List[int] = []
    for c in sorted(by_class):
        members = by_class[c]
        n = shots if shots is not None else max(1, round(fraction * len(members)))
        if n > len(members) or not members:
            name = class_names[c] if class_names and c < len(class_names) else str(c)
            what = f"shots={shots}" if shots is not None else f"fraction={fraction} (at least one)"
            raise DataError(f"{'shots' if shots is not None else 'fraction'}: class '{name}' has {len(members)} "
                            f"training images to draw from, fewer than {what} (train_limit and the images "
                            "held out to choose a probe's head leave fewer than the split has)")
        out += [members[j] for j in torch.randperm(len(members), generator=gen)[:n].tolist()]
    return sorted(out)


def summarize(per_seed: List[Dict[str, Any]]) -> Dict[str, Any]:
    """``{metric: mean, metric_std: std}`` over seeds for every number the seeds' results share, and
    the seeds' own results under ``per_seed``."""
    out: Dict[str, Any] = {}
    for k, v in per_seed[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and all(k in r for r in per_seed):
            values = [float(r[k]) for r in per_seed]
            out[k] = statistics.fmean(values)
            out[f"{k}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            if not all(math.isfinite(x) for x in values):
                out[k] = float("nan")
    out["per_seed"] = per_seed
    return out
