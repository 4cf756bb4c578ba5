"""The configuration error every layer raises, and the checks the schemas use.

The lowest module of the package (it imports nothing from it), so that each layer's schema can
live with its code (``models.backbones.BackboneConfig``, ``data.datamodule.DataConfig``, ...)
and still fail with the one error the entry points turn into a one-line message and exit 2.
"""

from __future__ import annotations

from typing import Sequence


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or impossible."""


def check(cond: bool, key: str, msg: str) -> None:
    """Raise ``ConfigError("<key>: <msg>")`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def check_range(pair: Sequence[float], key: str, lo: float, hi: float) -> None:
    """``pair`` is ``[min, max]`` with ``lo <= min <= max <= hi``."""
    check(len(pair) == 2, key, f"expected [min, max], got {list(pair)}")
    check(lo <= pair[0] <= pair[1] <= hi, key, f"expected {lo} <= min <= max <= {hi}, got {list(pair)}")
