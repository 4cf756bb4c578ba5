"""Evaluation suites: ``python -m jepa_zoo.eval suite=<name> ckpt=<checkpoint | sweep dir | timm:name>``.

A suite (``conf/suite/<name>.yaml``) lists entries, each a name and the eval overrides that make
it (dataset, protocol, shots, limits)::

    entries:
      clothing_knn: [data=folder, "data.root=${suite.data_dir}/clothing-small-160.tar", protocol=knn]

Every checkpoint (a file, or each run's ``checkpoints/last.ckpt`` under a sweep dir) is evaluated
on every entry, and with ``suite.baseline=true`` the same encoder at its seeded random
initialisation too (once per distinct architecture and seed). The command's own overrides
(``num_workers=0``, ``probe.epochs=3``) apply to every entry, after the entry's. Features are
extracted once per encoder and dataset and shared by the entries that use them.

Writes ``suite_<name>.md``, ``.csv`` and ``.json`` (a row per checkpoint and init, a column per
entry: kNN@k or top-1 in %, mean ± std over seeds) into the sweep dir, the checkpoint's run dir,
or for ``timm:`` the eval run dir; each evaluation also writes its own ``eval_*.json`` beside its
checkpoint, which ``python -m jepa_zoo.report`` reads, and the report includes the suite tables.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from omegaconf import DictConfig, OmegaConf

from jepa_zoo.data.datasets import DataError
from jepa_zoo.errors import ConfigError
from jepa_zoo.runs import atomic_write

log = logging.getLogger("jepa_zoo.eval")


def checkpoints(ckpt: str) -> Tuple[List[Tuple[str, str]], Path]:
    """([(row label, checkpoint)], where the tables go) for ``ckpt=``."""
    from jepa_zoo.pretrained import TIMM_PREFIX

    if ckpt.startswith(TIMM_PREFIX):
        from hydra.core.hydra_config import HydraConfig

        return [(ckpt, ckpt)], Path(HydraConfig.get().runtime.output_dir)
    path = Path(ckpt).expanduser()
    if path.is_dir():
        from jepa_zoo.report import find_run_dirs

        runs = find_run_dirs(path)
        found = [r / "checkpoints" / "last.ckpt" for r in runs if (r / "checkpoints" / "last.ckpt").is_file()]
        for r in runs:
            if not (r / "checkpoints" / "last.ckpt").is_file():
                log.warning("suite: %s has no checkpoints/last.ckpt (not finished?): left out", r)
        if not found:
            raise ConfigError(f"ckpt: no run with checkpoints/last.ckpt under {path}")
        def label(p: Path) -> str:  # the run dir's path in the sweep dir; ckpt=<run dir>: its name
            rel = p.parent.parent.relative_to(path).as_posix()
            return path.resolve().name if rel == "." else rel

        return [(label(p), str(p)) for p in found], path
    if not path.is_file():
        raise ConfigError(f"ckpt: no such checkpoint file or sweep dir: {path}")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return [(run_dir.name, str(path))], run_dir


def headline(record: Dict[str, Any], k: int) -> Tuple[str, float, float]:
    """(the metric, its value, its std) an entry's column shows: kNN@k top-1, or the head's top-1."""
    key = f"knn{k}_top1" if record["protocol"] == "knn" else "top1"
    return key, float(record[key]), float(record.get(f"{key}_std", 0.0))


def cell(value: float, std: float, seeds: int) -> str:
    return f"{value:.2f} ± {std:.2f}" if seeds > 1 else f"{value:.2f}"


def _command_overrides() -> List[str]:
    """The command's overrides that every entry takes (not the suite, ckpt or init)."""
    from hydra.core.hydra_config import HydraConfig

    skip = ("suite", "ckpt", "init")
    return [o for o in HydraConfig.get().overrides.task
            if o.lstrip("+~").split("=", 1)[0].split(".")[0] not in skip]


def footer(names: List[str], rows: List[Dict[str, Any]]) -> str:
    """What each column's cells hold (``name = knn20_top1 (%)``; a column of errors only: ``name: failed``)."""
    metrics = {n: next((r["records"][n]["metric"] for r in rows if n in r["records"]), None) for n in names}
    return ", ".join(f"{n} = {m} (%)" if m else f"{n}: failed (see the log)" for n, m in metrics.items())


def run_suite(cfg: DictConfig, evaluate: Callable[..., Dict[str, Any]]) -> Dict[str, Any]:
    """Evaluate ``cfg.ckpt`` on every entry of ``cfg.suite`` with ``evaluate`` (the eval entry point's
    :func:`jepa_zoo.eval.evaluate`, passed in: the suite sits above it); write and return the table."""
    from hydra import compose
    from hydra.errors import HydraException

    s = cfg.suite
    if not s.get("entries"):
        raise ConfigError(f"suite: {s.get('name')} lists no entries")
    rows_in, out_dir = checkpoints(str(cfg.ckpt))
    common = _command_overrides()
    caches: Dict[Any, Any] = {}
    rows: List[Dict[str, Any]] = []
    baselines_done = set()
    def entry_config(name: str, overrides: Any, ckpt: str, init: str) -> Tuple[DictConfig, List[str]]:
        made = [*map(str, overrides), *common, f"ckpt='{ckpt}'", f"init={init}"]
        try:
            return compose("eval", overrides=made), made
        except HydraException as e:
            raise ConfigError(f"suite.entries.{name}: {str(e).splitlines()[0]}") from None

    for name, overrides in s.entries.items():  # every entry composes, before anything runs
        entry_config(name, overrides, rows_in[0][1], "trained")
    failed: List[str] = []
    for label, ckpt in rows_in:
        stock = ckpt.startswith("timm:") and not cfg.timm_file  # already at random init: no baseline row
        for init in ("trained", "random") if s.baseline and not stock else ("trained",):
            row: Dict[str, Any] = {"run": label, "ckpt": ckpt, "init": init, "cells": {}, "records": {}}
            for name, overrides in s.entries.items():
                entry, entry_overrides = entry_config(name, overrides, ckpt, init)
                log.info("suite %s: %s (%s) on %s", s.name, label, init, name)
                try:
                    record = evaluate(entry, caches=caches, overrides=entry_overrides)
                except (ConfigError, DataError) as e:  # this checkpoint or entry: the others go on
                    log.error("suite %s: %s (%s) on %s: %s", s.name, label, init, name, e)
                    failed.append(f"{label} ({init}) on {name}: {e}")
                    row["cells"][name] = "error"
                    continue
                if init == "random" and record["init_key"] in baselines_done:
                    break  # this architecture and seed has its random-init row already
                key, value, std = headline(record, entry.knn.k[0])
                row["cells"][name] = cell(value, std, entry.seeds)
                row["records"][name] = {"metric": key, "value": value, "std": std, "seeds": entry.seeds,
                                        "file": record.get("file")}
                row["init_key"], row["init"] = record["init_key"], record["init"]  # a stock timm model: random
            if init == "random" and (row.get("init_key") in baselines_done or not row["records"]):
                continue
            if init == "random":
                baselines_done.add(row["init_key"])
            rows.append(row)
    names = list(s.entries.keys())
    md = [f"# Suite `{s.name}`", "", f"checkpoints: `{cfg.ckpt}`", "",
          "| run | init | " + " | ".join(names) + " |", "| --- | --- |" + " --- |" * len(names)]
    md += [f"| {r['run']} | {r['init']} | " + " | ".join(r["cells"].get(n, "-") for n in names) + " |" for r in rows]
    md += ["", "cells: " + footer(names, rows)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", "init", *names, *(f"{n}_std" for n in names)])
    for r in rows:
        rec = r["records"]
        w.writerow([r["run"], r["init"], *(rec[n]["value"] if n in rec else "" for n in names),
                    *(rec[n]["std"] if n in rec else "" for n in names)])
    table = {"suite": s.name, "ckpt": str(cfg.ckpt), "entries": OmegaConf.to_container(s.entries, resolve=True),
             "rows": [{k: v for k, v in r.items() if k not in ("cells", "init_key")} for r in rows]}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for ext, text in (("md", "\n".join(md) + "\n"), ("csv", buf.getvalue()),
                          ("json", json.dumps(table, indent=2) + "\n")):
            atomic_write(out_dir / f"suite_{s.name}.{ext}", text)
    except OSError as e:
        print("\n".join(md))
        raise ConfigError(f"suite: cannot write the tables into {out_dir} ({e.strerror}); the table is printed "
                          "above") from None
    print("\n".join(md))
    log.info("suite %s: tables written to %s/suite_%s.{md,csv,json}", s.name, out_dir, s.name)
    if failed:
        raise DataError(f"suite {s.name}: {len(failed)} evaluation(s) failed (cells 'error' in the table), the "
                        f"first: {failed[0]}")
    return table
