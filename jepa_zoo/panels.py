"""Dashboard panels as data: what a W&B workspace shows of the metrics a run logs.

Each part of the framework that logs metrics declares its panels beside its ``log`` calls, in
these plain dataclasses (no W&B import): a method in its ``MethodSpec(panels=...)``, the shared
parts in their modules (``methods/base.py``, ``callbacks/monitors.py``, ``callbacks/perf.py``,
``callbacks/images.py``). :func:`jepa_zoo.callbacks.assemble.panels` gathers a method's
sections; :mod:`jepa_zoo.dashboard` turns them into a ``wandb-workspaces`` workspace or report.

Keys:

* metric keys (``Line.keys``, ``Scatter``/``Parallel``/``Bar`` metrics) are the names the run
  logs, as in its ``metrics.csv`` header;
* media keys (``Media.keys``) are the image panels' names (``images/<name>``; the PNGs are
  ``<run dir>/images/<name>_step<N>.png``);
* config keys (``Parallel.columns``, ``Scatter.color``, ``Bar.group_by``) are override paths of
  the validated config (``method.lambd``); W&B holds them under ``cfg.`` (the module's
  hyper-parameters are ``{"cfg": <config>}``).

``when`` names the condition without which a metric is not logged (``perf/mfu``: a GPU whose peak
Lightning knows); a key without one is logged by every run of the method with the default monitors
(``tests/test_dashboard.py`` checks it against real runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence, Tuple, Union

__all__ = ["Line", "Media", "Scatter", "Parallel", "Bar", "Section", "Panel", "metric_keys", "media_keys",
           "config_keys", "merge"]


@dataclass(frozen=True)
class Line:
    """A line plot of ``keys`` against the optimiser step; ``collapse``: what collapse looks like."""

    keys: Tuple[str, ...]
    title: str = ""
    log_y: bool = False
    smoothing: float = 0.0
    collapse: str = ""
    when: str = ""


@dataclass(frozen=True)
class Media:
    """Image panels (``images/<name>``), stepped through by the optimiser step they were drawn at."""

    keys: Tuple[str, ...]
    title: str = ""


@dataclass(frozen=True)
class Scatter:
    """One point per run: summary ``x`` (config key ``x`` when ``x_config``) against summary ``y``,
    coloured by config key ``color``."""

    x: str
    y: str
    color: str = ""
    title: str = ""
    x_config: bool = False


@dataclass(frozen=True)
class Parallel:
    """Parallel coordinates: config ``columns`` (the swept keys) into summary ``metrics``."""

    columns: Tuple[str, ...]
    metrics: Tuple[str, ...]
    title: str = ""


@dataclass(frozen=True)
class Bar:
    """Summary ``metric`` of the runs grouped by config key ``group_by`` (mean per group)."""

    metric: str
    group_by: str
    title: str = ""


Panel = Union[Line, Media, Scatter, Parallel, Bar]


@dataclass(frozen=True)
class Section:
    """A named row of panels; ``sweep``: its panels compare runs (one point per run), for sweeps
    (shaded in the layout sketch; a report of a sweep takes these)."""

    name: str
    panels: Tuple[Panel, ...] = field(default_factory=tuple)
    sweep: bool = False


def merge(*groups: Sequence[Section]) -> Tuple[Section, ...]:
    """The sections of ``groups`` with those of one name joined (panels in order of declaration), in
    the order their names first appear; a sweep section stays one."""
    names: list = []
    joined: dict = {}
    for group in groups:
        for s in group:
            if s.name not in joined:
                names.append(s.name)
                joined[s.name] = s
            else:
                first = joined[s.name]
                joined[s.name] = Section(s.name, first.panels + s.panels, first.sweep or s.sweep)
    return tuple(joined[n] for n in names)


def _unique(groups) -> Tuple[str, ...]:
    """The keys of ``groups`` (iterables of keys) in order, once each."""
    out: list = []
    for keys in groups:
        out += [k for k in keys if k not in out]
    return tuple(out)


def _panels(sections: Sequence[Section]) -> Iterator[Panel]:
    for s in sections:
        yield from s.panels


def _metrics(p: Panel, conditional: bool) -> Tuple[str, ...]:
    if isinstance(p, Line):
        return p.keys if (conditional or not p.when) else ()
    if isinstance(p, Scatter):
        return (p.y,) if p.x_config else (p.x, p.y)
    if isinstance(p, Parallel):
        return p.metrics
    return (p.metric,) if isinstance(p, Bar) else ()


def _config(p: Panel) -> Tuple[str, ...]:
    if isinstance(p, Parallel):
        return p.columns
    if isinstance(p, Scatter):
        return tuple(k for k in ((p.x if p.x_config else ""), p.color) if k)
    return (p.group_by,) if isinstance(p, Bar) else ()


def metric_keys(sections: Sequence[Section], conditional: bool = False) -> Tuple[str, ...]:
    """The metric keys the panels plot, in order, once each; ``conditional=False`` leaves out the
    keys of panels with a ``when`` (not logged by every run)."""
    return _unique(_metrics(p, conditional) for p in _panels(sections))


def media_keys(sections: Sequence[Section]) -> Tuple[str, ...]:
    """The image panels' keys (``images/<name>``), once each."""
    return _unique(p.keys for p in _panels(sections) if isinstance(p, Media))


def config_keys(sections: Sequence[Section]) -> Tuple[str, ...]:
    """The config keys (override paths) the sweep panels compare runs by, once each."""
    return _unique(_config(p) for p in _panels(sections))
