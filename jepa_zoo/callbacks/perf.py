"""Training speed under ``perf/``: images/s, step time, achieved FLOP/s, MFU and peak memory.

Measured over each logging interval (``trainer.log_every_n_steps`` optimiser steps), with one
host–device synchronisation per interval, at the step where Lightning writes the logs anyway.
Lightning's ``ThroughputMonitor`` synchronises CUDA after every batch (a host sync inside every
step) and names its metrics after the stage; this callback does neither.  FLOPs are counted with
``torch.utils.flop_counter`` (as Lightning's ``measure_flops`` does) and the device's peak comes
from Lightning's ``get_available_flops``.

Logged on the steps Lightning writes logs (per process; rank 0's values reach the loggers)::

    perf/images_per_sec             global: images of the interval × world size / seconds
    perf/images_per_sec_per_device  images of the interval / seconds
    perf/step_time_s                seconds / optimiser steps of the interval
    perf/tflops_per_device          model FLOPs per step × steps / seconds / 1e12
    perf/mfu                        achieved FLOP/s / the device's peak (CUDA devices Lightning knows)
    perf/peak_mem_gib               the interval's peak: CUDA max allocated, else the process's peak RSS

"Images" are source images (a LeJEPA sample of 8 views counts once). Validation time is left out of
the interval's time; checkpoint writes are in it. The peak memory is the interval's own (the
high-water mark restarts with each interval; on CPU where /proc allows it, else since the start).
The model FLOPs are counted once, on the first optimiser step of the fit (all its micro-batches),
forward + backward (optimiser and EMA are not matmuls); I-JEPA's mask sizes vary per batch, so for
it this is the first batch's count, an estimate. The counted step runs the kernels every step runs,
so a resumed run stays bit-identical; on CPU that leaves out the attention's own matmuls, as the
counter has no formula for the CPU flash kernel (``python -m jepa_zoo.bench`` counts them, with the
math kernel).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any, Callable, Dict, Optional

import lightning as L
import torch
from lightning.fabric.utilities.throughput import get_available_flops

from jepa_zoo.memory import peak_mib, reset_peak
from jepa_zoo.panels import Line, Section

PANELS = (Section("Speed", (
    Line(("perf/images_per_sec",), "images / s (all processes)"),
    Line(("perf/step_time_s",), "seconds per optimiser step"),
    Line(("perf/peak_mem_gib",), "peak memory (GiB)"),
    Line(("perf/tflops_per_device",), "achieved TFLOP/s per device"),
    Line(("perf/mfu",), "model FLOPs utilisation", when="a GPU whose peak FLOP/s Lightning knows"),
)),)


def compute_dtype(precision: str) -> torch.dtype:
    """The matmul dtype of a Lightning precision string (what the device's peak is quoted for)."""
    p = str(precision)
    if p.startswith("bf16"):
        return torch.bfloat16
    if p.startswith("16"):
        return torch.float16
    if p.startswith("64"):
        return torch.float64
    return torch.float32


class PerfMonitor(L.Callback):
    def __init__(self, batch_size_fn: Callable[[Any], int], count_flops: bool = True, skip_intervals: int = 0):
        """``skip_intervals``: logging intervals left out at the start of a fit (``compile=true``: 1, the
        interval in which torch.compile compiles; the counted first step runs eagerly)."""
        self.batch_size_fn = batch_size_fn
        self.count_flops = count_flops
        self.skip_intervals = skip_intervals
        self._to_skip = skip_intervals
        self.flops_per_step: Optional[int] = None
        self.available_flops: Optional[float] = None
        self._counter: Optional[ExitStack] = None
        self._flop_mode: Any = None
        self._counted = False  # FLOPs counted (or found to be 0) once per fit
        self._last_step = -1
        self._reset(None, 0)

    def _reset(self, t0: Optional[float], step: int) -> None:
        self._t0, self._step0, self._images, self._paused = t0, step, 0, 0.0

    def setup(self, trainer: "L.Trainer", pl_module: "L.LightningModule", stage: str) -> None:
        self.available_flops = get_available_flops(trainer.strategy.root_device, compute_dtype(trainer.precision))

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_step = trainer.global_step  # (a resumed fit starts past 0)
        self._to_skip = self.skip_intervals  # a resumed process compiles again

    # -- FLOPs of the first optimiser step ---------------------------------------------------------
    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        if self.count_flops and not self._counted and self._counter is None:
            from torch.utils.flop_counter import FlopCounterMode

            self._counter = ExitStack()
            self._flop_mode = self._counter.enter_context(FlopCounterMode(display=False))

    def _stop_counting(self) -> None:
        if self._counter is not None:
            self._counter.close()
            self.flops_per_step = int(self._flop_mode.get_total_flops()) or None
            self._counter = self._flop_mode = None
            self._counted = True

    # -- intervals --------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        # an optimiser step happened in this batch (not an accumulating micro-batch) iff the step advanced
        stepped, self._last_step = trainer.global_step != self._last_step, trainer.global_step
        device = trainer.strategy.root_device
        if self._t0 is None or self._counter is not None:  # the first (counting) optimiser step stays out
            if not stepped:
                return  # the counter stays open over every micro-batch of that step
            self._stop_counting()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self._reset(time.perf_counter(), trainer.global_step)
            reset_peak(device)
            return
        self._images += self.batch_size_fn(batch)
        # the test Lightning's logger connector (and ThroughputMonitor) uses to write logs
        if not stepped or not trainer._logger_connector.should_update_logs or trainer.global_step == self._step0:
            return
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # once per logging interval
        now = time.perf_counter()
        seconds = now - self._t0 - self._paused
        steps = trainer.global_step - self._step0
        if self._to_skip > 0:
            self._to_skip -= 1
        elif seconds > 0 and steps > 0:
            pl_module.log_dict(self.metrics(seconds, steps, self._images, trainer.world_size, device),
                               on_step=True, on_epoch=False)
        self._reset(now, trainer.global_step)
        reset_peak(device)  # each interval reports its own peak

    def metrics(self, seconds: float, steps: int, images: int, world_size: int,
                device: torch.device) -> Dict[str, float]:
        out = {
            "perf/images_per_sec": images * world_size / seconds,
            "perf/images_per_sec_per_device": images / seconds,
            "perf/step_time_s": seconds / steps,
            "perf/peak_mem_gib": peak_mib(device) / 1024,
        }
        if self.flops_per_step:
            achieved = self.flops_per_step * steps / seconds
            out["perf/tflops_per_device"] = achieved / 1e12
            if self.available_flops:
                out["perf/mfu"] = achieved / self.available_flops
        return out

    # -- validation is not training time ----------------------------------------------------------
    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)  # queued training work is training time
        self._val_t0 = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        if self._t0 is not None and getattr(self, "_val_t0", None) is not None:
            self._paused += time.perf_counter() - self._val_t0
        self._val_t0 = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop_counting()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._stop_counting()  # never leave the FLOP counter's dispatch mode switched on
