"""Command-line checks run before Hydra composes, where Hydra's own message would not help a user.

* A misspelled key (``method.lamda=0.1``): Hydra says "Key 'lamda' is not in struct ... use
  +method.lamda" (advice to add the typo).  :func:`check_keys` names the closest existing keys.
* A path holding ``=`` (a sweep job's dir, ``0_method.lambd=0.05``) given unquoted: Hydra's
  grammar fails with "mismatched input '='".  :func:`check_paths` says how to quote it.
* A value of the wrong type (``method.lambd=abc``): Hydra prints four lines; :func:`check_keys`
  names the key and the problem.

Both print one line and exit 2.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _overrides(argv: Sequence[str]) -> List[str]:
    return [a for a in argv if not a.startswith("-") and "=" in a]


def check_paths(argv: Sequence[str], run_dir: str = "outputs", sweep_dir: str = "multirun") -> None:
    """Refuse an unquoted path with ``=`` in it, with the quoting that works; and an output dir that
    cannot be made (Hydra would raise FileNotFoundError / NotADirectoryError / PermissionError with a
    traceback): ``hydra.run.dir`` (``hydra.sweep.dir`` with ``--multirun``) or, unset, ``run_dir``
    (``sweep_dir``) under the working dir."""
    from jepa_zoo.runs import PATH_KEYS

    for arg in _overrides(argv):
        key, _, value = arg.partition("=")
        if key.lstrip("+") in PATH_KEYS and "=" in value and value[:1] not in ("'", '"'):
            _fail(f"{key}: the path contains '=', which Hydra's override grammar reserves; quote it: "
                  f"\"{key}='{value}'\"")
    multirun = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [a.partition("=")[2] for a in _overrides(argv) if a.partition("=")[0].lstrip("+") == key]
    check_writable(key, given[-1].strip("'\"") if given else (sweep_dir if multirun else run_dir))


def check_writable(key: str, path: str) -> None:
    """Exit 2 with one line unless the folder ``path`` (up to its first ``${...}``) can be made: its
    nearest existing ancestor is a folder this process can create a folder in (tried, then removed)."""
    import os
    import tempfile

    literal = path.split("${", 1)[0] or "."
    base = Path(literal).expanduser().absolute()
    while not base.exists() and not base.is_symlink():
        base = base.parent
    if not base.is_dir():
        _fail(f"{key}: cannot make {path} there: {base} is a file, not a folder; give another {key}=<dir>")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".jz-write-test-", dir=base))
    except OSError as e:
        _fail(f"{key}: cannot make {path} there: {base} is not writable ({e.strerror}); give another {key}=<dir>")


def _leaves(node, prefix: str = "") -> Iterator[str]:
    from omegaconf import DictConfig

    for k in node.keys():
        path = f"{prefix}{k}"
        child = node._get_node(k)
        yield path
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            yield from _leaves(child, path + ".")


def _groups(config_dir: Path) -> set:
    """The config groups of ``config_dir`` (its sub-folders, ``hydra/launcher`` style for nested ones)."""
    return {p.relative_to(config_dir).as_posix() for p in config_dir.rglob("*") if p.is_dir()}


# Keys that existed once, or exist for another method: why a command's key is gone, and what to type.
RETIRED = {
    "method.mrr": "the world-model MRR (val/mrr) is IWM's, method=iwm: I-JEPA's predictor takes no action, "
                  "so its MRR is chance by construction",
}


def check_keys(argv: Sequence[str], config_dir: Path, config_name: str) -> Optional[str]:
    """Refuse a ``key=value`` override whose key the composed config does not have, naming the closest
    existing keys; return the composed config's ``method.name`` (None where it has none).

    The config is composed with the command's group choices (``method=iwm``, ``experiment=...``; a
    swept choice with its first value); keys added with ``+`` / ``++``, deletions and ``hydra.*``
    are Hydra's to check, and so is everything when ``--config-name`` / ``--config-dir`` is given."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    if any(a.split("=")[0] in ("-cn", "--config-name", "-cd", "--config-dir") for a in argv):
        return None
    groups_here = _groups(config_dir)
    overrides = [a for a in _overrides(argv) if not a.startswith(("+", "~", "hydra.", "hydra/"))]
    groups = [a for a in overrides if a.partition("=")[0] in groups_here]
    keys = [a.partition("=")[0] for a in overrides if a not in groups]
    choices = [a if "(" in a else a.split(",")[0] for a in groups]  # a swept choice: its first value
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=choices)
    except HydraException:  # a bad group choice: Hydra's own message (with the allowed options) follows
        return None
    known: Optional[List[str]] = None
    for key in keys:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
        if node is not None and hasattr(node, "keys") and leaf in node.keys():
            continue
        retired = next((why for k, why in RETIRED.items() if key == k or key.startswith(k + ".")), None)
        if retired:
            _fail(f"{key}: no such key for method.name={OmegaConf.select(cfg, 'method.name')}; {retired}")
        known = known if known is not None else list(_leaves(cfg))
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.75)
        hint = f"did you mean {' or '.join(close)}?" if close else "no similar key exists"
        _fail(f"{key}: no such key in the config; {hint} (to add a new key on purpose: +{key}=...)")
    _check_types(config_dir, config_name, choices, [a for a in overrides if a not in groups])
    name = OmegaConf.select(cfg, "method.name", default=None)
    return name if isinstance(name, str) else None


def _check_types(config_dir: Path, config_name: str, choices: List[str], values: List[str]) -> None:
    """Refuse a value of the wrong type for a typed key (``method.lambd=abc``; the method sections are
    their schemas, :func:`jepa_zoo.registry.register_schemas`), naming the key: Hydra would print
    four lines and exit 1.  Swept values are Hydra's to check, job by job."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, HydraException

    try:
        plain = [o.input_line for o in OverridesParser.create().parse_overrides(values) if not o.is_sweep_override()]
    except HydraException:  # a grammar error: Hydra's own message follows
        return
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            compose(config_name, overrides=choices + plain)
    except ConfigCompositionException as e:
        cause = e.__cause__
        key = getattr(cause, "full_key", None)
        msg = getattr(cause, "msg", None)
        if key and msg:
            _fail(f"{key}: {msg.splitlines()[0]}")
