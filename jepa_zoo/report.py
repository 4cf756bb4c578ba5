"""Sweep report: ``python -m jepa_zoo.report SWEEP_DIR [--out DIR] [--metrics a,b] [--format md|csv]``.

Finds every run dir under ``SWEEP_DIR`` (a dir holding ``.hydra/overrides.yaml`` or
``checkpoints/config.yaml``; ``SWEEP_DIR`` may itself be one), reads its overrides, status,
the last value of each metric in ``csv/version_*/metrics.csv`` (launches merged in order,
the later wins) and the numbers in ``checkpoints/eval_*.json``, and writes ``report.md``,
``report.csv`` and ``plots/*.png`` into ``--out`` (default ``SWEEP_DIR``).  Overrides whose
value is the same in every run are listed once as "fixed"; the others are the table's columns.
Plots (:mod:`jepa_zoo.report_plots`) show each metric against each key a sweep swept.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import io
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from hydra.errors import OverrideParseException

from jepa_zoo.report_plots import LOSS, MISSING, num as _num, write_plots
from jepa_zoo.report_sections import loss_correlation, suite_sections
from jepa_zoo.runs import PATH_KEYS, SUMMARY, read_summary, swept_keys

EXCLUDED_KEYS = PATH_KEYS  # paths and resume=auto: not hyperparameters
EXCLUDED_PREFIXES = ("hydra.",)
DEFAULT_METRIC_PREFIXES = ("val/", "probe/", "eval/", "final/")
LOG_LINE = re.compile(r"^\[[^\]]*\]\[[^\]]*\]\[(\w+)\] - (.*)")  # Hydra's job log format


@dataclass
class Run:
    """One run dir: swept values, status and the last value (and its step) of each metric."""

    path: Path
    name: str
    overrides: Dict[str, str]
    status: str = "unknown"
    has_ckpt: bool = False
    step: Optional[int] = None
    metrics: Dict[str, Tuple[float, Optional[int]]] = field(default_factory=dict)  # name -> (value, step)
    loss_curve: List[Tuple[int, float]] = field(default_factory=list)
    val_images: Optional[int] = None  # images each validation scored (run_summary.json)


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a training run dir: it has ``run_summary.json``, ``checkpoints/config.yaml``
    or Hydra's record of a ``jepa_zoo.train`` job (an evaluation's or benchmark's run dir has none)."""
    if (path / SUMMARY).is_file() or (path / "checkpoints" / "config.yaml").is_file():
        return True
    hydra = _load_yaml(path / ".hydra" / "hydra.yaml")
    job = ((hydra or {}).get("hydra") or {}).get("job") if isinstance(hydra, dict) else None
    return isinstance(job, dict) and job.get("name") == "train"  # not eval's or the benchmark's


def find_run_dirs(root: Path) -> List[Path]:
    """Run dirs at ``root`` or below it (not looking inside a run dir), sorted by path."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):  # symlinked dirs are not followed
        if is_run_dir(Path(dirpath)):
            found.append(Path(dirpath))
            dirnames.clear()
        dirnames.sort()
    return sorted(found)


def parse_override(text: str) -> Optional[Tuple[str, str]]:
    """``"+method.lambd=0.01"`` -> ``("method.lambd", "0.01")``; ``None`` for excluded keys."""
    key, sep, value = str(text).partition("=")
    key = key.lstrip("+~").strip()
    if not sep:
        value = "<deleted>" if str(text).startswith("~") else ""
    if not key or key in EXCLUDED_KEYS or key.startswith(EXCLUDED_PREFIXES):
        return None
    return key, value.strip()


def _load_yaml(path: Path):
    import yaml

    try:
        return yaml.safe_load(path.read_text(errors="replace"))
    except (OSError, yaml.YAMLError):
        return None


def read_overrides(run_dir: Path) -> Dict[str, str]:
    """The run's command-line overrides (``.hydra/overrides.yaml``) as ``{key: value}``."""
    items = _load_yaml(run_dir / ".hydra" / "overrides.yaml")
    pairs = (parse_override(s) for s in items) if isinstance(items, list) else ()
    return dict(p for p in pairs if p is not None)


def config_value(run_dir: Path, key: str) -> Optional[str]:
    """A key's value in a run that did not override it: its config-group choice
    (``.hydra/hydra.yaml``) or scalar in ``checkpoints/config.yaml`` / ``.hydra/config.yaml``."""
    for path, dotted in ((run_dir / ".hydra" / "hydra.yaml", ["hydra", "runtime", "choices", key]),
                         (run_dir / "checkpoints" / "config.yaml", key.split(".")),
                         (run_dir / ".hydra" / "config.yaml", key.split("."))):
        node = _load_yaml(path)
        for part in dotted:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and not isinstance(node, (dict, list)):
            return str(node).lower() if isinstance(node, bool) else str(node)  # as a command writes it: true
    return None


def read_metrics_csv(path: Path) -> List[Dict[str, float]]:
    """Rows of a Lightning ``metrics.csv`` as ``{column: value}`` without the empty cells.  Bad rows
    are skipped: a last line without its newline (the writer was killed), a wrong number of
    fields, a cell that is not a number."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    lines = text.splitlines()
    if lines and not text.endswith(("\n", "\r")):
        lines = lines[:-1]
    if not lines:
        return []
    header = next(csv.reader([lines[0]]))
    rows = []
    for line in lines[1:]:
        try:
            cells = next(csv.reader([line]))
            row = {k: float(v) for k, v in zip(header, cells) if v.strip()} if len(cells) == len(header) else None
            if row is not None and all(math.isfinite(row[k]) for k in ("epoch", "step") if k in row):
                rows.append(row)
        except (csv.Error, StopIteration, ValueError):
            continue
    return rows


def _version(path: Path) -> Tuple[int, str]:
    tail = path.parent.name.rpartition("_")[2]
    return (int(tail), "") if tail.isdigit() else (sys.maxsize, path.parent.name)


Metrics = Dict[str, Tuple[float, Optional[int]]]  # name -> (last value, its step)


def csv_metrics(run_dir: Path) -> Tuple[Metrics, List[Tuple[int, float]], Optional[int]]:
    """Over all ``csv/version_*/metrics.csv`` in launch order: the last value and step of each
    metric, the ``train/loss`` curve (a later launch replaces the earlier one's steps from where
    it starts) and the last logged step."""
    final: Metrics = {}
    curve: Dict[int, float] = {}
    last_step = None
    for path in sorted((run_dir / "csv").glob("version_*/metrics.csv"), key=_version):
        rows = read_metrics_csv(path)
        steps = [r["step"] for r in rows if "step" in r]
        if steps:
            curve = {s: v for s, v in curve.items() if s < min(steps)}
            last_step = int(steps[-1])
        for row in rows:
            step = int(row["step"]) if "step" in row else None
            for k, v in row.items():
                if k not in ("epoch", "step"):
                    final[k] = (v, step)
            if LOSS in row and step is not None:
                curve[step] = row[LOSS]
    return final, sorted(curve.items()), last_step


EVAL_FIGURE = re.compile(r"(top1|top5|rankme|mrr|r2|error)(_std)?$")  # an eval record's figures


def eval_metrics(run_dir: Path) -> Metrics:
    """Numbers of ``checkpoints/eval_<protocol>[_predictor]_<init>.json`` as
    ``eval/<protocol>[_predictor]/<key>`` (``..._random/<key>`` for the ``init=random`` baseline)."""
    out = {}
    for path in sorted((run_dir / "checkpoints").glob("eval_*.json")):
        tag, _, init = path.stem[len("eval_"):].rpartition("_")
        tag = (tag or init) + ("_random" if init == "random" and tag else "")
        try:
            record = json.loads(path.read_text(errors="replace"))
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        step = record.get("step") if isinstance(record.get("step"), int) else None
        for k, v in record.items():  # the figures, not the counts and sizes (queries, img_size, ...)
            if EVAL_FIGURE.search(k) and isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"eval/{tag}/{k}"] = (float(v), step)
    return out


def run_status(run_dir: Path) -> str:
    """The status in ``run_summary.json`` (``running``, ``finished``, ``failed``, ``stopped``); for a run
    dir without one (written before it existed): ``finished`` (train.log's last event is "final
    metrics"), ``failed`` (an ERROR line), ``running`` (neither since the last launch; also a run
    killed without a word), ``unknown`` (no log)."""
    summary = read_summary(run_dir)
    if summary is not None and isinstance(summary.get("status"), str):
        return summary["status"]
    log = run_dir / "train.log"
    if not log.is_file():
        return "unknown"
    status = "running"
    with open(log, errors="replace") as f:
        for m in filter(None, map(LOG_LINE.match, f)):
            if m.group(1) in ("ERROR", "CRITICAL"):
                status = "failed"
            elif m.group(2).startswith("final metrics"):
                status = "finished"
            elif status == "failed":  # logging again after an error: relaunched
                status = "running"
    return status


def load_run(run_dir: Path, root: Path) -> Run:
    """Everything the report shows about one run dir."""
    name = run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.resolve().name
    final, curve, step = csv_metrics(run_dir)
    final.update(eval_metrics(run_dir))
    val_images = (read_summary(run_dir) or {}).get("val_images")
    return Run(path=run_dir, name=name, overrides=read_overrides(run_dir), status=run_status(run_dir),
               has_ckpt=(run_dir / "checkpoints" / "last.ckpt").is_file(), step=step, metrics=final,
               loss_curve=curve, val_images=val_images if isinstance(val_images, int) else None)


def fill_defaults(runs: Sequence[Run]) -> List[Run]:
    """Copies of ``runs`` where a key that other runs override but a run does not gets the value
    in that run's config (when it has one), so that it compares with the others."""
    keys = sorted({k for r in runs for k in r.overrides})
    out = []
    for r in runs:
        found = {k: config_value(r.path, k) for k in keys if k not in r.overrides}
        out.append(replace(r, overrides={**r.overrides, **{k: v for k, v in found.items() if v is not None}}))
    return out


def split_keys(runs: Sequence[Run]) -> Tuple[List[str], Dict[str, str]]:
    """(swept keys, ``{fixed key: value}``): a key with one value in every run is fixed."""
    keys = sorted({k for r in runs for k in r.overrides})
    fixed = {k: runs[0].overrides[k] for k in keys
             if all(k in r.overrides for r in runs) and len({r.overrides[k] for r in runs}) == 1}
    return [k for k in keys if k not in fixed], fixed


def collect(root: Path) -> Tuple[List[Run], List[str], Dict[str, str]]:
    """(runs sorted by swept values, swept keys, fixed overrides) of every run dir under ``root``."""
    runs = fill_defaults([load_run(d, root) for d in find_run_dirs(root)])
    swept, fixed = split_keys(runs) if runs else ([], {})
    return sort_runs(runs, swept), swept, fixed


def sweep_keys(runs: Sequence[Run]) -> List[str]:
    """The keys that the Hydra sweeps of ``runs`` swept (from each sweep dir's ``multirun.yaml``, in
    command-line order): the keys worth a plot.  Runs launched one by one sweep nothing."""
    keys: List[str] = []
    for sweep_dir in sorted({r.path.parent for r in runs}):
        cfg = _load_yaml(sweep_dir / "multirun.yaml")
        hydra = cfg.get("hydra") if isinstance(cfg, dict) else None
        if not isinstance(hydra, dict):
            continue
        task = (hydra.get("overrides") or {}).get("task") or []
        params = (hydra.get("sweeper") or {}).get("params") or {}
        try:
            found = swept_keys([str(t) for t in task], {str(k): str(v) for k, v in params.items()})
        except OverrideParseException as e:
            print(f"report: warning: {sweep_dir / 'multirun.yaml'}: cannot read its sweep ({e}); no plots by key",
                  file=sys.stderr)
            found = []
        keys += [k for k in found if k not in keys and k not in EXCLUDED_KEYS]
    return keys


def sort_key(value: Optional[str]) -> Tuple:
    """Numbers by value, then strings, then missing."""
    x = _num(value)
    return (0, x, "") if x is not None else ((1, 0.0, value) if value is not None else (2, 0.0, ""))


def sort_runs(runs: Sequence[Run], swept: Sequence[str]) -> List[Run]:
    """Runs ordered by their swept values (numeric-aware), then by name."""
    return sorted(runs, key=lambda r: ([sort_key(r.overrides.get(k)) for k in swept], r.name))


def select_metrics(runs: Sequence[Run], requested: Optional[Sequence[str]] = None) -> List[str]:
    """``requested`` (names or glob patterns, in that order), or every val/, probe/, eval/, final/ metric
    and train/loss found."""
    found = sorted({k for r in runs for k in r.metrics})
    if requested is None:
        return ([LOSS] if LOSS in found else []) + [k for k in found if k.startswith(DEFAULT_METRIC_PREFIXES)]
    out: List[str] = []
    for pat in requested:
        for k in (fnmatch.filter(found, pat) if any(c in pat for c in "*?[") else [pat]):
            if k not in out:
                out.append(k)
    return out


def fmt(value, digits: Optional[int] = 4) -> str:
    """A cell: floats to ``digits`` significant digits (full precision with ``None``; whole numbers
    below a million as integers), missing as "–"."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        if digits is not None and value.is_integer() and abs(value) < 1e6:
            return str(int(value))
        return repr(value) if digits is None else f"{value:.{digits}g}"
    return str(value)


def table(runs: Sequence[Run], swept: Sequence[str], metrics: Sequence[str], digits: Optional[int] = 4):
    """Header and rows (lists of strings) of the report table."""
    header = ["run", "status", "last.ckpt", "step", *swept, *metrics]
    rows = [[r.name, r.status, "yes" if r.has_ckpt else "no", fmt(r.step),
             *(r.overrides.get(k, MISSING) for k in swept),
             *(fmt(r.metrics[m][0], digits) if m in r.metrics else MISSING for m in metrics)] for r in runs]
    return header, rows


def _family(run: Run) -> Tuple[Optional[str], Optional[str]]:
    """(method, dataset) of a run: the runs whose losses compare."""
    return (run.overrides.get("method.name") or config_value(run.path, "method.name"),
            run.overrides.get("data.name") or config_value(run.path, "data.name"))


def _lambd(run: Run) -> Optional[float]:
    """A run's LeJEPA λ (``method.lambd``), or None."""
    return _num(run.overrides.get("method.lambd") or config_value(run.path, "method.lambd"))


def to_markdown(root: Path, runs: Sequence[Run], swept, fixed: Dict[str, str], metrics) -> str:
    """The Markdown report: sweep dir, fixed overrides, table."""
    header, rows = table(runs, swept, metrics)
    cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = [f"# Sweep report: `{root}`", "",
             "fixed: " + (", ".join(f"`{k}={v}`" for k, v in fixed.items()) or "(none)"), "",
             "| " + " | ".join(map(cell, header)) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(runs: Sequence[Run], swept, metrics) -> str:
    """The table in full precision, plus ``<metric>@step`` (the step each value was logged at)."""
    header, rows = table(runs, swept, metrics, digits=None)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header + [f"{m}@step" for m in metrics])
    for r, row in zip(runs, rows):
        w.writerow([c if c != MISSING else "" for c in row] +
                   [fmt(r.metrics[m][1]) if m in r.metrics and r.metrics[m][1] is not None else "" for m in metrics])
    return buf.getvalue()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit code (2: no such dir, or no run dirs in it)."""
    ap = argparse.ArgumentParser(prog="python -m jepa_zoo.report", description="Table (report.md, report.csv) and plots of the runs of a sweep.")
    ap.add_argument("sweep_dir", type=Path, help="a sweep dir, a run dir, or any dir holding run dirs")
    ap.add_argument("--out", type=Path, default=None,
                    help="where to write report.md, report.csv and plots/ (default: SWEEP_DIR)")
    ap.add_argument("--metrics", default=None, help="comma-separated metric names or globs, e.g. 'val/*,eval/knn/*'")
    ap.add_argument("--format", choices=("md", "csv"), default="md", help="what to print on stdout")
    args = ap.parse_args(argv)
    root = args.sweep_dir
    if not root.is_dir():
        print(f"report: error: {'not a directory' if root.exists() else 'no such directory'}: {root}", file=sys.stderr)
        return 2
    runs, swept, fixed = collect(root)
    if not runs:
        print(f"report: error: no run dirs (with .hydra/overrides.yaml or checkpoints/config.yaml) in {root}",
              file=sys.stderr)
        return 2
    requested = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    metrics = select_metrics(runs, requested)
    md, csv_text = to_markdown(root, runs, swept, fixed, metrics), to_csv(runs, swept, metrics)
    sections = [*loss_correlation(runs, select_metrics(runs), _lambd, _family), *suite_sections(root)]
    md += "\n".join(sections) + "\n" if sections else ""  # each section starts with a blank line
    out = args.out or root
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(md)
        (out / "report.csv").write_text(csv_text)
        write_plots(runs, [k for k in sweep_keys(runs) if k in swept], swept, metrics, out / "plots")
    except OSError as e:
        print(f"report: error: cannot write to {out}: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(md if args.format == "md" else csv_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
