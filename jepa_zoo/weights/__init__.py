"""Pretrained weights from other codebases: one reader per checkpoint format.

Each format is a module with ``NAME``, ``detect(state) -> bool`` and ``read(state) ->
Imported`` (:class:`jepa_zoo.weights.official_ijepa.Imported`: the architecture and state dicts in
jepa_zoo's key space).  :func:`read_weights` loads a file ``weights_only`` and gives it to the
first format that recognises it; adding a format is one module and one entry in :data:`FORMATS`.  jepa_zoo's own ``.ckpt`` files are read by
:func:`jepa_zoo.checkpointing.read_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import torch

from jepa_zoo.errors import ConfigError
from jepa_zoo.weights import hf_vjepa2, official_ijepa, official_vjepa, timm_weights
from jepa_zoo.weights.official_ijepa import Imported

# in order: a V-JEPA file has I-JEPA's layout with a 3-D patch embedding; a timm state dict is any flat mapping
FORMATS = [official_vjepa, official_ijepa, hf_vjepa2, timm_weights]

__all__ = ["FORMATS", "Imported", "detect_format", "load_file", "read_weights"]


def load_file(path: Path, key: str, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU (memory-mapped with ``mmap``), or a
    safetensors file's tensors; one-line ConfigErrors naming ``key``: no such file, neither
    (a zip archive, a pickle or safetensors; its first bytes are shown), unreadable (truncated,
    or a pickle that is not ``weights_only``-safe)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}: no such checkpoint file: {path}")
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] == b"{":  # safetensors: an 8-byte header length, then its JSON header
        from safetensors import SafetensorError
        from safetensors.torch import load_file as load_safetensors

        try:
            return load_safetensors(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ConfigError(f"{key}: {path} is not a readable safetensors file ({e})") from e
    head = head[:4]
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise ConfigError(f"{key}: {path} is not a PyTorch checkpoint (a {path.stat().st_size}-byte file "
                          f"starting {head!r}; expected a .ckpt written by jepa_zoo.train or official weights)")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as e:  # a legacy (non-zip) file cannot be memory-mapped: read it whole
            if not (mmap and "mmap" in str(e)):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure (truncated file, unsafe pickle): one line
        first = str(e).splitlines()[0] if str(e) else ""
        first = first if len(first) <= 200 else first[:200].rsplit(" ", 1)[0] + " ..."  # whole words
        raise ConfigError(f"{key}: {path} is not a readable weights-only PyTorch checkpoint, truncated or corrupt "
                          f"({type(e).__name__}: {first})") from e


def detect_format(state: Any) -> Any:
    """The format module that recognises ``state``, or None."""
    return next((f for f in FORMATS if f.detect(state)), None)


def unknown_format(path: Path, key: str, state: Any) -> ConfigError:
    """The one-line error for a PyTorch file of no format jepa_zoo reads, naming what it holds."""
    seen: List[str] = sorted(map(str, state))[:10] if isinstance(state, dict) else [type(state).__name__]
    names = ", ".join(f.NAME for f in FORMATS)
    return ConfigError(f"{key}: {path} is in no format jepa_zoo reads (known: jepa_zoo .ckpt, {names}); "
                       f"it holds: {', '.join(seen)}")


def read_imported(path: Path, key: str, state: Any) -> Imported:
    """``state`` (loaded from ``path``) read by the format that recognises it."""
    fmt = detect_format(state)
    if fmt is None:
        raise unknown_format(path, key, state)
    try:
        return fmt.read(state)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"{key}: {path} looks like {fmt.NAME} but {e}") from e


def read_weights(path: Path, key: str) -> Imported:
    """A checkpoint of a known foreign format -> :class:`Imported`.

    Raises:
        ConfigError: one line naming ``key`` when the file is unreadable or of no known format
            (naming the top-level keys seen)."""
    return read_imported(Path(path).expanduser(), key, load_file(path, key, mmap=True))


def summary(imported: Imported) -> Dict[str, Any]:
    """What was found, for logs: the format, the architecture and the parts present."""
    parts = [p for p in ("encoder", "target_encoder", "predictor") if getattr(imported, p)]
    return {"format": imported.format, **imported.arch, "parts": parts}
