"""Command-line checks run before Hydra composes, where Hydra's own message would not help a user.

* A misspelled key (``method.lamda=0.1``): Hydra says "Key 'lamda' is not in struct ... use
  +method.lamda" (advice to add the typo).  :func:`check_keys` names the closest existing keys.
* A path holding ``=`` (a sweep job's dir, ``0_method.lambd=0.05``) given unquoted: Hydra's
  grammar fails with "mismatched input '='".  :func:`check_paths` says how to quote it.

Both print one line and exit 2.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

PATH_KEYS = ("ckpt", "resume", "data.root", "data.cache_dir", "init_from", "hydra.run.dir", "hydra.sweep.dir")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _overrides(argv: Sequence[str]) -> List[str]:
    return [a for a in argv if not a.startswith("-") and "=" in a]


def check_paths(argv: Sequence[str]) -> None:
    """Refuse an unquoted path with ``=`` in it, with the quoting that works."""
    for arg in _overrides(argv):
        key, _, value = arg.partition("=")
        if key.lstrip("+") in PATH_KEYS and "=" in value and value[:1] not in ("'", '"'):
            _fail(f"{key}: the path contains '=', which Hydra's override grammar reserves; quote it: "
                  f"\"{key}='{value}'\"")


def _leaves(node, prefix: str = "") -> Iterator[str]:
    from omegaconf import DictConfig

    for k in node.keys():
        path = f"{prefix}{k}"
        child = node._get_node(k)
        yield path
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            yield from _leaves(child, path + ".")


def check_keys(argv: Sequence[str], config_dir: Path, config_name: str) -> None:
    """Refuse a ``key=value`` override whose key the composed config does not have, naming the closest
    existing keys.  The config is composed with the command's group choices (``method=iwm``,
    ``experiment=...``); keys added with ``+`` / ``++``, deletions and ``hydra.*`` are Hydra's to check,
    and a command that sweeps a group choice is left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    overrides = _overrides(argv)
    groups = [a for a in overrides if "." not in a.partition("=")[0] and not a.startswith(("+", "~"))]
    keys = [a.partition("=")[0] for a in overrides if a not in groups and not a.startswith(("+", "~", "hydra."))]
    if not keys or any(any(c in a.partition("=")[2] for c in ",(") for a in groups):
        return
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=groups)
    except HydraException:  # a bad group choice: Hydra's own message (with the allowed options) follows
        return
    known: Optional[List[str]] = None
    for key in keys:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
        if node is not None and hasattr(node, "keys") and leaf in node.keys():
            continue
        known = known if known is not None else list(_leaves(cfg))
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.75)
        hint = f"did you mean {' or '.join(close)}?" if close else "no similar key exists"
        _fail(f"{key}: no such key in the config; {hint} (to add a new key on purpose: +{key}=...)")
