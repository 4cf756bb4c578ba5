"""Sections of the sweep report beyond its table: evaluation suites and the loss as a selection signal.

* :func:`suite_sections`: every ``suite_<name>.md`` that ``python -m jepa_zoo.eval suite=<name>``
  wrote into the sweep dir, as a section of ``report.md``.
* :func:`loss_correlation`: LeJEPA's claim that its training loss selects models: the Spearman
  rank correlation ρ between the final ``train/loss`` and each accuracy over the runs, and for runs
  with a ``method.lambd`` the same for ``loss / λ^0.4`` (the LeJEPA paper's scaling across λ).
  ρ is Pearson's correlation of the ranks (ties share their mean rank); a loss that selects
  models well has ρ near −1.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, List, Optional, Sequence

LOSS = "train/loss"
ACCURACY_SUFFIXES = ("top1", "acc", "knn_top1")


def suite_sections(root: Path) -> List[str]:
    """The suite tables in ``root``, each under a ``## Suite`` heading."""
    out = []
    for path in sorted(root.glob("suite_*.md")):
        lines = path.read_text(errors="replace").splitlines()
        if lines and lines[0].startswith("# "):
            lines[0] = "#" + lines[0]
        out += ["", *lines]
    return out


def ranks(values: Sequence[float]) -> List[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Spearman's ρ of paired values; None with fewer than 3 pairs or a constant side."""
    if len(x) != len(y) or len(x) < 3:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def loss_correlation(runs: Sequence, metrics: Sequence[str], lambd: Callable[[object], Optional[float]],
                     family: Callable[[object], object] = lambda r: None) -> List[str]:
    """The Markdown section: ρ(loss, accuracy) and ρ(loss/λ^0.4, accuracy) for each accuracy metric
    that at least 3 runs of one family (``family(run)``: method and dataset; losses of different
    methods or data do not compare) have with a final loss; empty when none."""
    groups: dict = {}
    for r in runs:
        groups.setdefault(family(r), []).append(r)
    rows = []
    for fam, members in groups.items():
        label = " / ".join(str(x) for x in fam if x) if isinstance(fam, tuple) else str(fam or "")
        rows += _rows(members, metrics, lambd, label or "all")
    if not rows:
        return []
    return ["", "## Training loss as a model-selection signal", "",
            "Spearman ρ over the runs of one method and dataset between the final train/loss and each accuracy "
            "(−1: the lowest loss is the most accurate run); loss/λ^0.4 for LeJEPA runs with a method.lambd.", "",
            "| runs of | accuracy | runs | ρ(loss) | ρ(loss/λ^0.4) |", "| --- | --- | --- | --- | --- |", *rows]


def _rows(runs: Sequence, metrics: Sequence[str], lambd: Callable[[object], Optional[float]], name: str) -> List[str]:
    rows = []
    for m in metrics:
        if not m.endswith(ACCURACY_SUFFIXES) or m.endswith("select_top1") or "_random/" in m:
            continue  # test accuracies of the trained encoders (not the head-selection split, not baselines)
        pairs = [(r.metrics[LOSS][0], r.metrics[m][0], lambd(r)) for r in runs if LOSS in r.metrics and m in r.metrics]
        pairs = [p for p in pairs if all(math.isfinite(v) for v in p[:2])]
        rho = spearman([p[0] for p in pairs], [p[1] for p in pairs])
        if rho is None:
            continue
        scaled = [(p[0] / p[2] ** 0.4, p[1]) for p in pairs if p[2] is not None and p[2] > 0]
        rho_l = spearman([s[0] for s in scaled], [s[1] for s in scaled]) if len(scaled) == len(pairs) else None
        rows.append(f"| {name} | {m} | {len(pairs)} | {rho:+.3f} | "
                    + (f"{rho_l:+.3f}" if rho_l is not None else "–") + " |")
    return rows
