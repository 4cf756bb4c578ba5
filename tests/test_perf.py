"""The perf/ speed monitor: intervals of optimiser steps, FLOPs of one optimiser step, accumulation."""

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from jepa_zoo.callbacks.perf import PerfMonitor, compute_dtype


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(32, 16, bias=False)

    def training_step(self, batch, batch_idx):
        x, _ = batch
        return self.net(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(tmp_path, accumulate: int, steps: int = 5, skip_intervals: int = 0):
    data = DataLoader(TensorDataset(torch.randn(256, 32), torch.zeros(256, dtype=torch.long)), batch_size=4)
    monitor = PerfMonitor(lambda b: int(b[-1].shape[0]), skip_intervals=skip_intervals)
    logger = CSVLogger(tmp_path)
    trainer = L.Trainer(max_steps=steps, accumulate_grad_batches=accumulate, log_every_n_steps=1, logger=logger,
                        callbacks=[monitor], enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, accelerator="cpu", devices=1)
    trainer.fit(Tiny(), data)
    import csv

    with open(f"{logger.log_dir}/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("perf/images_per_sec")]
    return monitor, rows


@pytest.mark.integration
@pytest.mark.parametrize("accumulate", [1, 2])
def test_flops_are_one_optimiser_step_and_intervals_are_whole_steps(tmp_path, accumulate):
    monitor, rows = fit(tmp_path, accumulate)
    # forward: 2·B·32·16 FLOPs; backward: the weight gradient only (the input needs none), as much again
    per_micro = 2 * 4 * 32 * 16 * 2
    assert monitor.flops_per_step == per_micro * accumulate
    # the first (counting) step is left out; one row per later optimiser step
    assert [int(r["step"]) for r in rows] == list(range(1, 5))
    for r in rows:
        assert float(r["perf/images_per_sec"]) > 0 and float(r["perf/step_time_s"]) > 0
        assert float(r["perf/tflops_per_device"]) > 0 and float(r["perf/peak_mem_gib"]) > 0
    assert "perf/mfu" not in rows[0]  # no known peak for a CPU


@pytest.mark.integration
def test_the_compile_interval_can_be_left_out(tmp_path):
    _, rows = fit(tmp_path, 1, skip_intervals=1)
    assert [int(r["step"]) for r in rows] == list(range(2, 5))  # step 1's interval (compilation) is not logged


def test_compute_dtype():
    assert compute_dtype("bf16-mixed") == torch.bfloat16 and compute_dtype("16-mixed") == torch.float16
    assert compute_dtype("32-true") == torch.float32


class Spike(L.Callback):
    """Holds ~600 MiB (pages touched) during one batch of the fit, then frees it."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            big = torch.ones(150 * 2**20)  # 600 MiB
            del big


@pytest.mark.integration
def test_each_interval_reports_its_own_peak_memory(tmp_path):
    data = DataLoader(TensorDataset(torch.randn(256, 32), torch.zeros(256, dtype=torch.long)), batch_size=4)
    logger = CSVLogger(tmp_path)
    trainer = L.Trainer(max_steps=9, log_every_n_steps=2, logger=logger, enable_progress_bar=False,
                        callbacks=[Spike(4), PerfMonitor(lambda b: int(b[-1].shape[0]))],
                        enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", devices=1)
    trainer.fit(Tiny(), data)
    import csv

    with open(f"{logger.log_dir}/metrics.csv") as f:
        peaks = {int(r["step"]): float(r["perf/peak_mem_gib"]) for r in csv.DictReader(f) if r.get("perf/peak_mem_gib")}
    assert sorted(peaks) == [1, 3, 5, 7], peaks  # every 2 optimiser steps after the counted first one
    assert peaks[3] - peaks[7] > 0.4, peaks  # the spike (0.59 GiB, at global step 4) is in one interval only
    assert abs(peaks[1] - peaks[7]) < 0.1 and abs(peaks[5] - peaks[7]) < 0.1, peaks


def test_a_read_only_proc_warns_once_and_keeps_training(monkeypatch):
    from pathlib import Path

    import jepa_zoo.memory as memory

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("no /proc/self/clear_refs: nothing to restart")
    calls = []

    def refuse(self, text):
        calls.append(str(self))
        raise PermissionError("read-only file system")

    monkeypatch.setattr(memory, "_cannot_reset", False)
    monkeypatch.setattr(Path, "write_text", refuse)
    with pytest.warns(UserWarning, match="cannot restart the peak-RSS mark"):
        memory.reset_peak(torch.device("cpu"))
    memory.reset_peak(torch.device("cpu"))  # not tried again
    assert len(calls) == 1
    assert memory.peak_mib(torch.device("cpu")) > 0
