"""The plots of ``python -m jepa_zoo.report``: each metric against each swept key, and the loss curves.

* ``plots/<metric>_vs_<key>.png`` for every numeric key a sweep swept: one series per combination
  of the other swept keys, labelled with their short names (``lambd=0.05``); series of fewer than
  three points are drawn as markers only (a line through two points suggests a trend it cannot show).
* ``plots/loss_curves.png``: ``train/loss`` against the step (integer ticks), a curve per run.

Legends keep to a few short entries and stand beside the axes, never over them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

MAX_LEGEND = 12  # entries shown; the rest are counted in the last one
MISSING = "–"  # a value a run does not have
LOSS = "train/loss"


def num(value: Optional[str]) -> Optional[float]:
    """A swept value as a number, or None when it is not one."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def use_log_x(values: Sequence[float]) -> bool:
    """A log x axis: all values positive and spanning more than a decade."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 10


def safe_name(text: str) -> str:
    """A file-name-safe version of a metric or key name (``/`` and other odd characters -> ``_``)."""
    import re

    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_") or "_"


def short_key(key: str, keys: Sequence[str]) -> str:
    """``method.lambd`` -> ``lambd`` unless another key ends the same way."""
    tail = key.rpartition(".")[2]
    return tail if sum(k.rpartition(".")[2] == tail for k in keys) == 1 else key


def label(run: Any, keys: Sequence[str]) -> str:
    """``lambd=0.05, seed=2``: the run's values of ``keys`` (the ones it has)."""
    return ", ".join(f"{short_key(k, keys)}={run.overrides[k]}" for k in keys if run.overrides.get(k, MISSING) != MISSING)


def counts(runs: Sequence[Any]) -> str:
    """``4 runs, 2000 validation images`` (a range when runs differ; left out when unknown)."""
    vals = sorted({r.val_images for r in runs if r.val_images is not None})
    images = "" if not vals else f", {vals[0]} validation images" if len(vals) == 1 else \
        f", {vals[0]}-{vals[-1]} validation images"
    return f"{len(runs)} run{'s' if len(runs) != 1 else ''}{images}"


def _legend(ax) -> None:
    """At most :data:`MAX_LEGEND` entries (the last counts the rest), right of the axes."""
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    if not labels:
        return
    if len(labels) > MAX_LEGEND:
        rest = len(labels) - MAX_LEGEND + 1
        handles, labels = handles[: MAX_LEGEND - 1] + [Line2D([], [], alpha=0)], labels[: MAX_LEGEND - 1] + [f"(+{rest} more)"]
    ax.legend(handles, labels, fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)


def write_plots(runs: Sequence[Any], plot_keys: Sequence[str], swept: Sequence[str], metrics: Sequence[str],
                out_dir: Path) -> List[Path]:
    """``<metric>_vs_<key>.png`` for each numeric key of ``plot_keys`` (the keys a sweep swept) and each
    metric, a series per combination of the other ``plot_keys``; and ``loss_curves.png`` labelled by
    the ``swept`` values.  Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key in plot_keys:
        values = [r.overrides.get(key) for r in runs]
        xs = [num(v) for v in values]
        present = [x for v, x in zip(values, xs) if v is not None]
        if any(x is None for x in present) or len(set(present)) < 2:  # not numeric, or one value
            continue
        others = [k for k in plot_keys if k != key]
        for metric in metrics:
            groups: Dict[str, List[Tuple[float, float]]] = {}
            for r, x in zip(runs, xs):
                if x is not None and metric in r.metrics:
                    groups.setdefault(label(r, others), []).append((x, r.metrics[metric][0]))
            if not groups:
                continue
            fig, ax = plt.subplots(figsize=(6, 4))
            for name, pts in groups.items():
                pts.sort()
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name or None,
                        linestyle="-" if len(pts) >= 3 else "none")
            if use_log_x(present):
                ax.set_xscale("log")
            elif all(float(x).is_integer() for x in present):  # seeds, depths, counts: integer ticks
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set(xlabel=key, ylabel=metric, title=f"{metric} vs {short_key(key, plot_keys)} ({counts(runs)})")
            ax.grid(alpha=0.3)
            _legend(ax)
            path = out_dir / f"{safe_name(metric)}_vs_{safe_name(key)}.png"
            fig.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(fig)
            written.append(path)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        if r.loss_curve:
            ax.plot([p[0] for p in r.loss_curve], [p[1] for p in r.loss_curve], label=label(r, swept) or r.name,
                    marker="o" if len(r.loss_curve) < 3 else None)
    ax.set(xlabel="step", ylabel=LOSS, title="training loss")
    steps = sorted({p[0] for r in runs for p in r.loss_curve})
    if len(steps) == 1:  # one logged step: a tick there, not 1.900 ... 2.100
        ax.set_xticks(steps)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.lines:
        _legend(ax)
    path = out_dir / "loss_curves.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return written + [path]
