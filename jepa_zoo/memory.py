"""Memory of this process, for ``perf/`` and the benchmark harness.

CUDA: the caching allocator's counters (``max_memory_allocated``, reset by
``reset_peak_memory_stats``).  CPU: the resident set from ``/proc/self/status`` (Linux):
``VmRSS`` now and ``VmHWM``, its high-water mark, which ``echo 5 > /proc/self/clear_refs``
restarts (Linux >= 4.0); elsewhere ``getrusage``'s peak since the start, which cannot restart.
"""

from __future__ import annotations

import resource
import warnings
from pathlib import Path
from typing import Optional

import torch

_cannot_reset = False  # /proc/self/clear_refs refused a write once: do not try again


def status_mib(field: str) -> Optional[float]:
    """``VmRSS`` / ``VmHWM`` of this process in MiB; None where /proc does not have it."""
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def reset_peak(device: torch.device) -> None:
    """Restart the high-water mark that :func:`peak_mib` reads."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    global _cannot_reset
    clear_refs = Path("/proc/self/clear_refs")
    if _cannot_reset or not clear_refs.exists():
        return
    try:
        clear_refs.write_text("5")
    except OSError as e:  # a read-only /proc (some containers): say so once, then peaks are since the start
        _cannot_reset = True
        warnings.warn(f"cannot restart the peak-RSS mark ({e}): CPU memory peaks are since the start", stacklevel=2)


def peak_mib(device: torch.device) -> float:
    """The peak since :func:`reset_peak` (where it cannot restart: since the start), in MiB.
    CUDA: memory handed out by the caching allocator; CPU: the resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    hwm = status_mib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
