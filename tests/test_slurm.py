"""SLURM through hydra-submitit-launcher: the preset composes to an allocation that matches the
trainer, and submitit's local executor runs a real (tiny) sweep through the entry point."""

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF_DIR, REPO

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


def test_slurm_preset_sizes_the_allocation_from_the_trainer():
    from jepa_zoo.train import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hardware=multinode", "trainer.num_nodes=4",
                                          "data.num_workers=10", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    get = lambda k: OmegaConf.select(cfg, f"hydra.launcher.{k}")  # noqa: E731
    assert get("_target_").endswith("SlurmLauncher")
    assert (get("nodes"), get("tasks_per_node"), get("gpus_per_node")) == (4, 8, 8)  # one task per GPU
    assert get("cpus_per_task") == 11 and get("partition") == "gpu"
    assert get("signal_delay_s") > 0 and get("max_num_timeout") == 0  # Lightning requeues on the signal


@pytest.mark.integration
def test_submitit_local_executor_runs_a_sweep(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "jepa_zoo.train", "--multirun", "hydra/launcher=submitit_local",
         f"hydra.sweep.dir={tmp_path}", "data=fake", "trainer.max_steps=1", "+backbone.kwargs.depth=1",
         "backbone.patch_size=8", "method.num_slices=8", "method.views.num_local=0",
         "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "seed=0,1"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name.split("_")[0] for p in runs] == ["0", "1"] and all("seed=" in p.name for p in runs)
    assert all((p / "checkpoints" / "last.ckpt").is_file() for p in runs)
    assert list((tmp_path / ".submitit").glob("*/*_result.pkl"))  # really went through submitit


def test_submitit_time_limit_signal_goes_to_lightnings_requeue(monkeypatch):
    import signal

    from jepa_zoo.checkpointing import slurm_requeue_plugins

    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert slurm_requeue_plugins() == []
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    previous = signal.signal(signal.SIGUSR2, lambda *a: None)  # stands for submitit's handler
    try:
        (env,) = slurm_requeue_plugins()
        assert env.requeue_signal == signal.SIGUSR2 and env.auto_requeue
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL  # Lightning installs its own at fit
    finally:
        signal.signal(signal.SIGUSR2, previous)
