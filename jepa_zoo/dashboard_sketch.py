"""A picture of a workspace's layout, drawn from its sections (:mod:`jepa_zoo.panels`) with
matplotlib: one band per section, one box per panel with its kind, title and keys; collapse
panels framed in red, sweep sections shaded.  It shows what ``python -m jepa_zoo.dashboard``
builds where no W&B server can be seen (``docs/dashboards.md``)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Sequence

from jepa_zoo.panels import Bar, Line, Media, Parallel, Scatter, Section

COLUMNS = 4
KIND = {Line: "line plot", Media: "media", Scatter: "scatter (one point per run)",
        Parallel: "parallel coordinates", Bar: "bar chart (mean per group)"}


def _describe(p) -> str:
    if isinstance(p, (Line, Media)):
        keys = ", ".join(p.keys)
    elif isinstance(p, Scatter):
        keys = f"{'cfg.' if p.x_config else ''}{p.x} → {p.y}" + (f", colour cfg.{p.color}" if p.color else "")
    elif isinstance(p, Parallel):
        keys = ", ".join(f"cfg.{c}" for c in p.columns) + " → " + ", ".join(p.metrics)
    else:
        keys = f"{p.metric} by cfg.{p.group_by}"
    extra = []
    if isinstance(p, Line):
        extra += ["log y"] if p.log_y else []
        extra += [f"smoothing {p.smoothing}"] if p.smoothing else []
        extra += [f"only with {p.when}"] if p.when else []
    return keys + (f" ({'; '.join(extra)})" if extra else "")


def sketch(sections: Sequence[Section], title: str, path: Path) -> Path:
    """Draw the layout of ``sections`` to the PNG ``path`` (written whole, then renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    rows = [(s, i) for s in sections for i in range(0, max(1, len(s.panels)), COLUMNS)]
    box_h, head_h, width = 1.25, 0.45, COLUMNS * 3.2
    height = sum(box_h + (head_h if i == 0 else 0) for _, i in rows) + 0.8
    fig = plt.figure(figsize=(width, height * 0.72))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    y = height - 0.2
    ax.text(0.1, y, title, fontsize=13, weight="bold", va="top")
    y -= 0.55
    for section, start in rows:
        if start == 0:
            label = section.name + ("   (sweep: compares runs)" if section.sweep else "")
            ax.add_patch(FancyBboxPatch((0.05, y - head_h + 0.05), width - 0.1, head_h - 0.1, boxstyle="round,pad=0.02",
                                        fc="#dfe7f2" if not section.sweep else "#f2e6d5", ec="none"))
            ax.text(0.15, y - head_h / 2, "▾ " + label, fontsize=10.5, weight="bold", va="center")
            y -= head_h
        for j, p in enumerate(section.panels[start:start + COLUMNS]):
            x0 = 0.1 + j * (width - 0.2) / COLUMNS
            w = (width - 0.2) / COLUMNS - 0.1
            collapse = bool(getattr(p, "collapse", ""))
            ax.add_patch(FancyBboxPatch((x0, y - box_h + 0.08), w, box_h - 0.16, boxstyle="round,pad=0.02",
                                        fc="#fbf7ee" if section.sweep else "white",
                                        ec="#c62828" if collapse else "#8a8a8a", lw=2.0 if collapse else 0.8))
            head = KIND[type(p)] + (": " + p.title if p.title else "")
            ax.text(x0 + 0.08, y - 0.18, textwrap.shorten(head, 46), fontsize=7.6, weight="bold", va="top")
            body = textwrap.fill(_describe(p), 50)
            if collapse:
                body += f"\ncollapse: {p.collapse}"
            ax.text(x0 + 0.08, y - 0.45, "\n".join(body.splitlines()[:4]), fontsize=6.8, va="top", family="monospace",
                    color="#c62828" if collapse else "#333333")
        y -= box_h
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
