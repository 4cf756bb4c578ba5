"""An evaluation's record: its file name, where it goes, and what the log shows of it.

One file per result, so that no evaluation overwrites another's::

    eval_<protocol>[_predictor][_context][_<N>shot|_frac<f>][_<S>seeds][_cv<K>][_on-<data>][_<S>px][_<C>clips]
        [_<F>f][_every<S>|_fps<R>][_train<N>][_test<N>][_s<hash>]_<init>.json

Every setting the command gives that changes the result is in the name: the readable tags above
(``_<F>f``, ``_every<S>`` / ``_fps<R>``: a clip length and spacing the command chose;
``_train<N>`` / ``_test<N>``: ``train_limit`` / ``test_limit``), and every other one
(``knn.k``, ``probe.*``, ``finetune.*``, ``batch_size``, other ``data.*`` keys) through
``_s<hash>``, the first 8 hex digits of the SHA-1 of those overrides, sorted; the record lists
them under ``settings``.  Settings that do not change the result (:data:`NEUTRAL`: where the
files are, workers, the progress bar) are left out.

Records go beside the checkpoint (a stock ``timm:`` model's: the eval run dir), or to
``out=<dir>/<checkpoint label>/`` (:func:`checkpoint_label`);
the path is logged, with a table of the headline figures.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from jepa_zoo.errors import ConfigError

log = logging.getLogger("jepa_zoo.eval")

# the command's keys that do not change a result: where things are, how fast, what is shown
NEUTRAL = ("ckpt", "init", "timm_file", "data_root", "out", "num_workers", "progress_bar", "suite", "data.root",
           "data.cache_dir", "data.num_workers", "data.pin_memory", "data.batch_size", "data.val_batch_size")
# keys the file name spells out (a tag of their own, or the data's name)
TAGGED = ("protocol", "features", "weights", "shots", "fraction", "seeds", "folds", "train_limit", "test_limit",
          "data", "data.name", "data.img_size", "data.eval_clips", "data.num_frames", "data.frame_step", "data.fps")


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def set_by(overrides: Iterable[str], keys: Sequence[str]) -> List[str]:
    """Those of ``keys`` (``data.<key>``) that ``overrides`` set."""
    names = {_key(o) for o in overrides}
    return [k for k in keys if f"data.{k}" in names]


def hashed_settings(overrides: Iterable[str]) -> List[str]:
    """The overrides that change the result and that no readable tag names: sorted ``key=value``."""
    return sorted(o.lstrip("+") for o in overrides
                  if _key(o) not in NEUTRAL and _key(o) not in TAGGED and not _key(o).startswith("hydra"))


def result_tag(cfg: Any, data: Any, data_name: Optional[str], overrides: Sequence[str]) -> str:
    """The file name's middle (module docstring); ``data_name``: the dataset's name when the command
    chose other data than the checkpoint's own, else None; ``data``: the evaluated DataConfig."""
    chosen = set(set_by(overrides, ("img_size", "eval_clips", "num_frames", "frame_step", "fps")))
    video = bool(getattr(data, "video", False))
    settings = hashed_settings(overrides)
    spacing = ([f"fps{data.fps:g}"] if video and "fps" in chosen and data.fps else
               [f"every{data.frame_step}"] if video and chosen & {"frame_step", "fps"} else [])
    return "_".join([
        cfg.protocol, *(["predictor"] if cfg.features == "predictor" else []),
        *(["context"] if cfg.weights == "context" else []),
        *([f"{cfg.shots}shot"] if cfg.shots is not None else []),
        *([f"frac{cfg.fraction:g}"] if cfg.fraction is not None else []),
        *([f"{cfg.seeds}seeds"] if cfg.seeds > 1 else []),
        *([f"cv{cfg.folds}"] if cfg.get("folds") else []),
        *([f"on-{data_name}"] if data_name else []),
        *([f"{data.img_size}px"] if "img_size" in chosen else []),
        *([f"{data.eval_clips}clips"] if video and "eval_clips" in chosen else []),
        *([f"{data.num_frames}f"] if video and "num_frames" in chosen else []), *spacing,
        *([f"train{cfg.train_limit}"] if cfg.train_limit is not None else []),
        *([f"test{cfg.test_limit}"] if cfg.test_limit is not None else []),
        *([f"s{hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:8]}"] if settings else [])])


def out_dir(cfg: Any) -> Optional[Path]:
    """``out=<dir>``, made if missing (called before the evaluation runs: a folder that cannot be made
    is one line before any work, not after it), or None."""
    if not cfg.get("out"):
        return None
    where = Path(str(cfg.out)).expanduser()
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"out: cannot make the folder {where} ({e.strerror})") from None
    return where


def checkpoint_label(ckpt: str, timm_file: Optional[str]) -> str:
    """A folder name of the weights for ``out=`` (records of several checkpoints share it): the run
    dir's name (with the file's stem unless ``last``), else the file's stem, and 6 hex digits of the
    path's SHA-1 (two sweeps' ``0_...`` runs stay apart)."""
    path = Path(ckpt)
    if path.parent.name == "checkpoints":
        name = path.parent.parent.name + ("" if path.stem == "last" else f"_{path.stem}")
    else:
        name = path.stem.replace(":", "-")
    key = f"{Path(ckpt).expanduser().absolute() if ':' not in ckpt else ckpt}|{timm_file or ''}"
    return f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:6]}"


def record_path(cfg: Any, tag: str, init: str, default_dir: Path) -> Path:
    """``<default_dir>/eval_<tag>_<init>.json``, or with ``out=<dir>``
    ``<dir>/<checkpoint label>/eval_<tag>_<init>.json`` (:func:`checkpoint_label`)."""
    where = out_dir(cfg)
    if where is None:
        return default_dir / f"eval_{tag}_{init}.json"
    where = where / checkpoint_label(str(cfg.ckpt), cfg.get("timm_file"))
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"out: cannot make the folder {where} ({e.strerror})") from None
    return where / f"eval_{tag}_{init}.json"


def write_record(record: Dict[str, Any], path: Path) -> None:
    """Write ``record`` to ``path`` whole (a temporary file renamed over it), log where and a table of
    its figures, and print it as one JSON line (the last line of stdout: for scripts).  A folder that
    cannot be written: the record is printed, then one line says so (``ConfigError``)."""
    from jepa_zoo.runs import atomic_write

    try:
        atomic_write(path, json.dumps(record, indent=2) + "\n")
    except OSError as e:
        print(json.dumps(record))
        raise ConfigError(f"out: cannot write {path} ({e.strerror}); the result is printed above; out=<dir> "
                          "writes it elsewhere") from None
    log.info("%s\nrecord: %s", table(record), path)
    print(json.dumps(record))


def table(record: Dict[str, Any]) -> str:
    """The figures of a record, one per line (percentages to 2 decimals, with ± std where averaged)."""
    rows = []
    for k, v in record.items():
        if k.endswith("_std") or k in ("init_key", "step") or not isinstance(v, float):
            continue
        std = record.get(f"{k}_std")
        rows.append((k, f"{v:.2f}" + (f" ± {std:.2f}" if isinstance(std, float) else "")))
    head = f"{record.get('protocol')} of {record.get('ckpt')} ({record.get('init')}) on {record.get('data')}"
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join([head, *(f"  {k:<{width}}  {v}" for k, v in rows)])
