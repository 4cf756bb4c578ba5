"""The real entry point, run as users run it (subprocess)."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO

FAST = [
    "data=fake",
    "backbone.patch_size=8",
    "+backbone.kwargs.depth=2",
    "method.proj_hidden_dim=64",
    "method.num_slices=32",
    "method.views.num_local=2",
    "trainer.max_steps=4",  # one full epoch of fake data (64 images / batch 16): validation runs
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
]


def train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "jepa_zoo.train", f"hydra.run.dir={tmp_path}", *overrides],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )


def read_metrics(run_dir: Path) -> list[dict]:
    """Rows of every launch's ``csv/version_<n>/metrics.csv`` (resumed runs add a version), in order."""
    files = sorted((run_dir / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    assert files, f"no metrics.csv under {run_dir / 'csv'}"
    rows: list[dict] = []
    for path in files:
        with open(path) as f:
            rows += list(csv.DictReader(f))
    return rows


@pytest.mark.integration
def test_lejepa_trains_through_the_entry_point(tmp_path):
    r = train(tmp_path, *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert "lejepa" in (tmp_path / "checkpoints" / "config.yaml").read_text()
    rows = read_metrics(tmp_path)
    keys = set().union(*rows)
    for k in ("train/loss", "train/pred_loss", "train/sigreg_loss", "train/lr", "probe/train_loss",
              "probe/train_acc", "probe/val_acc", "perf/images_per_sec", "perf/step_time_s",
              "perf/tflops_per_device", "perf/peak_mem_gib"):
        assert k in keys, (k, keys)
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps == [1, 2, 3, 4]  # the optimiser steps done when each row is written, as checkpoints count
    perf = [r for r in rows if r.get("perf/images_per_sec")]
    assert perf and all(float(r["perf/images_per_sec"]) > 0 and float(r["perf/tflops_per_device"]) > 0 for r in perf)
    assert "perf/mfu" not in keys  # no peak FLOP/s is known for a CPU

    import torch

    from jepa_zoo.methods.lejepa import LeJEPA

    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    model = LeJEPA.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert model.cfg.method.num_slices == 32 and model.probe is not None
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in saved.items())


@pytest.mark.integration
@pytest.mark.parametrize("method", ["ijepa", "iwm", "iwm_inv"])
def test_masked_methods_train_and_log_world_model_mrr(tmp_path, method):
    mrr_args = [] if method == "ijepa" else ["method.mrr.num_images=2", "method.mrr.bank_size=16"]
    r = train(tmp_path, f"method={method}", FAST[0], FAST[2], *FAST[6:], *mrr_args)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    rows = read_metrics(tmp_path)
    mrr = [float(r["val/mrr"]) for r in rows if r.get("val/mrr")]
    assert len(mrr) == (0 if method == "ijepa" else 1) and all(0 < v <= 1 for v in mrr)  # IWM's metric, on by default
    keys = set().union(*rows)
    assert {"train/loss", "train/ema_momentum", "train/target_std", "probe/val_acc"} <= keys
    depth = {"ijepa": 12, "iwm": 18, "iwm_inv": 12}[method]
    assert f"pred_depth: {depth}" in (tmp_path / "checkpoints" / "config.yaml").read_text()


@pytest.mark.integration
def test_resnet_and_tensorboard(tmp_path):
    r = train(tmp_path, *FAST[:1], *FAST[3:], "backbone=resnet18", "backbone.cifar_stem=true", "logger=tensorboard")
    assert r.returncode == 0, r.stderr[-3000:]
    assert list((tmp_path / "tb").glob("events.out.tfevents*"))


@pytest.mark.integration
def test_wandb_offline_without_account_and_resume_continues_the_run(tmp_path):
    env_home = tmp_path / "home"
    env_home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")} | {"HOME": str(env_home)}
    run_dir = tmp_path / "run"
    for extra in (["trainer.max_steps=4"], ["trainer.max_steps=6", "resume=auto"]):
        r = subprocess.run(
            [sys.executable, "-m", "jepa_zoo.train", f"hydra.run.dir={run_dir}", *FAST, "logger=wandb", *extra],
            cwd=REPO, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, env=env,
        )
        assert r.returncode == 0, r.stderr[-3000:]
    run_id = (run_dir / "wandb" / "run_id").read_text().strip()
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(p.name.endswith(f"-{run_id}") for p in runs)  # one W&B run, resumed
    for p in runs:
        data = (p / f"run-{run_id}.wandb").read_bytes()
        assert b"num_slices" in data and b"train/loss" in data  # the resolved config and the metrics


@pytest.mark.integration
def test_wandb_multirun_jobs_get_their_own_runs_in_one_group(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")} | {"HOME": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-m", "jepa_zoo.train", "--multirun", f"hydra.sweep.dir={tmp_path}/sweep/lejepa/now",
         *FAST[:6], "trainer.max_steps=1", *FAST[7:], "logger=wandb", "seed=0,1"],
        cwd=REPO, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted(p for p in (tmp_path / "sweep" / "lejepa" / "now").iterdir() if p.is_dir())
    ids = [(p / "wandb" / "run_id").read_text().strip() for p in jobs]
    assert len(jobs) == 2 and ids[0] != ids[1]
    for p, run_id in zip(jobs, ids):
        (run,) = (p / "wandb").glob(f"offline-run-*-{run_id}")  # each job logged into its own run
        assert b"lejepa/now" in (run / f"run-{run_id}.wandb").read_bytes()  # the sweep's group


@pytest.mark.parametrize(
    "override,needle",
    [
        ("method.lambd=7", "method.lambd"),
        ("+trainer.bogus=1", "trainer.bogus"),
        ("data=cifar10 data.root=/does/not/exist", "CIFAR-10 not found"),
    ],
)
@pytest.mark.integration
def test_bad_input_fails_cleanly(tmp_path, override, needle):
    r = train(tmp_path, "data=fake", *override.split(), "trainer.max_steps=1")
    assert r.returncode == 2
    out = r.stdout + r.stderr
    assert needle in out and "Traceback" not in out


@pytest.mark.integration
def test_unknown_group_option_lists_the_allowed_ones(tmp_path):
    """Hydra's compose errors (before our code runs) exit 1 with its message, not a traceback."""
    r = train(tmp_path, "method=nope")
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in out
    assert "Could not find 'method/nope'" in out and all(m in out for m in ("ijepa", "iwm", "lejepa"))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.integration
def test_multirun_sweep_dirs_carry_the_swept_values(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    r = subprocess.run(
        [sys.executable, "-m", "jepa_zoo.train", "--multirun", f"hydra.sweep.dir={tmp_path}",
         "data.root=/ignored/in/names", *FAST, "trainer.max_steps=1", "method.lambd=0.01,0.1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert len(runs) == 2 and "method.lambd=0.01" in runs[0] and "method.lambd=0.1" in runs[1]
    assert not any("ignored" in name for name in runs)
    for run in tmp_path.iterdir():
        if run.is_dir():
            assert (run / "checkpoints" / "last.ckpt").exists()


def test_sweep_dir_names_stay_short_and_unique():
    from jepa_zoo.runs import short_dirname

    assert short_dirname("method.lambd=0.1") == "method.lambd=0.1"
    a, b = short_dirname("x" * 300 + "a"), short_dirname("x" * 300 + "b")
    assert len(a) == 180 and a != b


@pytest.mark.integration
def test_lr_scales_with_the_global_batch(tmp_path):
    r = train(tmp_path, *FAST[:6], "trainer.max_steps=1", *FAST[7:], "data.batch_size=16",
              "method.optim.ref_batch_size=8", "method.optim.warmup_steps=0")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    lr = OmegaConf.load(tmp_path / "checkpoints" / "config.yaml").method.optim.lr
    logged = [float(x["train/lr"]) for x in read_metrics(tmp_path) if x.get("train/lr")]
    assert logged and logged[0] == pytest.approx(lr * 16 / 8)
