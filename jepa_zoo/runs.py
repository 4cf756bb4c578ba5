"""What a training run dir holds besides its checkpoints: its name in a sweep and ``run_summary.json``.

* :func:`sweep_subdir` — ``${jz_sweep_subdir:}`` in ``conf/train.yaml``: a sweep job's dir is
  ``<job number>_<swept key=value,...>``, the keys the sweep varies (from the command line or
  ``hydra.sweeper.params``), not every override of the command.
* :func:`is_fresh` / :func:`remove_launch` — a launch refused before it trained leaves no run dir behind.
* :func:`write_summary` / :func:`read_summary` — ``<run dir>/run_summary.json``: status
  (``running``, ``finished``, ``failed``, ``stopped``), the error of a failed run, final metrics
  and paths.  Written at the start of each launch and at its end, atomically; ``python -m
  jepa_zoo.report`` reads it instead of parsing logs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

SUMMARY = "run_summary.json"
# settings that hold paths: no hyperparameters (left out of sweep dir names and report columns)
PATH_KEYS = ("data.root", "data.cache_dir", "hydra.run.dir", "hydra.sweep.dir", "resume", "init_from", "ckpt")


def short_dirname(name: str, max_len: int = 180) -> str:
    """A dir name cut to ``max_len`` characters with a hash of the whole, so that names stay
    unique (file systems refuse names over 255 bytes)."""
    if len(name) <= max_len:
        return name
    return f"{name[: max_len - 9]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def swept_keys(overrides: Sequence[str], sweeper_params: Optional[Dict[str, Any]] = None) -> List[str]:
    """The keys that a multirun's overrides (``a=1,2``, ``b=range(3)``, ``c=glob(*)``) and the
    sweeper's ``params`` (``{key: "1,2"}``) sweep, in command-line order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    items = [*overrides, *(f"{k}={v}" for k, v in (sweeper_params or {}).items())]
    keys: List[str] = []
    for o in OverridesParser.create().parse_overrides(items):
        if o.is_sweep_override() and o.key_or_group not in keys:
            keys.append(o.key_or_group)
    return keys


def job_dirname(num: int, job_overrides: Sequence[str], keys: Sequence[str]) -> str:
    """``<num>_<key=value,...>`` of the swept keys among a job's overrides (paths left out)."""
    parts = []
    for item in job_overrides:
        key, sep, value = str(item).partition("=")
        key = key.lstrip("+~")
        if sep and key in keys and key not in PATH_KEYS:
            parts.append(f"{key}={value}")
    return short_dirname("_".join([str(num), ",".join(parts)]) if parts else str(num))


def sweep_subdir() -> str:
    """A sweep job's dir name (the resolver ``${jz_sweep_subdir:}``): the swept keys are read from
    the ``multirun.yaml`` that Hydra's sweeper writes into the sweep dir before any job starts
    (a job under the SLURM launcher runs in another process, with only its own overrides)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hc = HydraConfig.get()
    sweep = OmegaConf.load(Path(hc.sweep.dir) / "multirun.yaml").hydra
    params = sweep.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=False) if params is not None else {}
    keys = swept_keys(list(sweep.overrides.task), params)
    return job_dirname(hc.job.num, list(hc.overrides.task), keys)


def atomic_write(path: Path, text: str) -> None:
    """``path`` holds ``text`` whole or keeps what it held: a temporary file beside it, renamed over it
    (removed if anything fails)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_summary(run_dir: Path, status: str, new_launch: bool = False, **fields: Any) -> Path:
    """Write (atomically) ``<run dir>/run_summary.json`` with ``status`` and ``fields``; the fields of
    the file's earlier writes are kept unless ``new_launch`` (the start of a launch) drops them."""
    path = Path(run_dir) / SUMMARY
    old = {} if new_launch else (read_summary(run_dir) or {})
    record = {**old, **fields, "status": status,
              "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write(path, json.dumps(record, indent=2, default=str) + "\n")
    return path


def read_summary(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The run's summary, or None when it has none (or it is not a JSON object)."""
    try:
        record = json.loads((Path(run_dir) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


LAUNCH_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "checkpoints/config.yaml", SUMMARY)


def is_fresh(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds only what Hydra wrote for this launch (``.hydra/`` and the job log):
    nothing of an earlier run or of the user's, so that :func:`remove_launch` may undo it."""
    return Path(run_dir).is_dir() and all(p.name == ".hydra" or (p.is_file() and p.suffix == ".log")
                                          for p in Path(run_dir).iterdir())


def remove_launch(run_dir: Path, log_name: str) -> None:
    """Undo a refused launch of a fresh run dir (:func:`is_fresh`, checked when it started): delete the
    files it wrote (:data:`LAUNCH_FILES` and ``log_name``), then the dirs left empty, up to the working
    dir.  Nothing else is deleted: a file someone else put there keeps its dir.  The log handler
    writing ``log_name`` is closed first."""
    import logging

    run_dir = Path(run_dir).resolve()
    log_file = run_dir / log_name
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve() == log_file:
            root.removeHandler(h)
            h.close()
    for name in (*LAUNCH_FILES, log_name):
        (run_dir / name).unlink(missing_ok=True)
    cwd = Path.cwd().resolve()
    # the dirs it made and left empty (.hydra, checkpoints, a logger's csv/version_0), deepest first
    for d in sorted((p for p in run_dir.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    if run_dir == cwd or any(run_dir.iterdir()):
        return
    run_dir.rmdir()
    for d in run_dir.parents:  # outputs/<method>/ left empty, below the working dir only
        if d == cwd or cwd not in d.parents or any(d.iterdir()):
            break
        d.rmdir()
