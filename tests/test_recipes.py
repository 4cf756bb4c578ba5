"""The small-compute recipes (docs/recipes.md): each preset composes and trains 2 steps through the
entry point on the shared CIFAR-10, and benchmarks/recipe.py runs a preset end to end (one JSON line)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

RECIPES = ["lejepa_cifar10_quick", "lejepa_cifar10_10min", "ijepa_cifar10_30min", "iwm_cifar10_30min"]


def env() -> dict:
    return {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}


@pytest.mark.integration
@pytest.mark.data
@pytest.mark.parametrize("preset", RECIPES)
def test_each_recipe_preset_trains_two_steps(preset, shared_data, tmp_path):
    r = subprocess.run([sys.executable, "-m", "jepa_zoo.train", f"experiment={preset}", f"data.root={shared_data}",
                        "trainer.max_steps=2", "trainer.max_time=null", "trainer.limit_val_batches=2",
                        "monitors.final_knn=0", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}"],
                       cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == 2
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_the_20_minute_recipe_is_the_10_minute_one_with_twice_the_budget(compose_cfg):
    """lejepa_cifar10_20min differs from lejepa_cifar10_10min (which trains 2 steps above) only in its
    budget, so the figures of both in docs/recipes.md measure one recipe at two budgets."""
    from omegaconf import OmegaConf

    ten, twenty = (OmegaConf.to_container(compose_cfg(f"experiment=lejepa_cifar10_{m}min"), resolve=False)
                   for m in (10, 20))
    assert (ten["trainer"].pop("max_time"), twenty["trainer"].pop("max_time")) == ("00:00:10:00", "00:00:20:00")
    assert ten == twenty


@pytest.mark.integration
def test_the_recipe_benchmark_prints_one_json_line(tmp_path):
    """benchmarks/recipe.py on fake data for 2 steps: trains, evaluates trained and random init."""
    r = subprocess.run([sys.executable, "benchmarks/recipe.py", "experiment=lejepa_cifar10_quick", f"out={tmp_path}",
                        "train_limit=200", "--", "data=fake", "data.fake_size=256", "data.img_size=32", "data.local_img_size=16",
                        "trainer.max_steps=2", "trainer.max_time=null", "monitors.final_knn=0",
                        "trainer.limit_val_batches=1"], cwd=REPO, env=env(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (line,) = r.stdout.strip().splitlines()
    rec = json.loads(line)
    assert rec["preset"] == "lejepa_cifar10_quick" and rec["steps"] == 2 and rec["status"] == "finished"
    assert rec["bank"] == 200 and 0 <= rec["knn20_trained"] <= 100 and 0 <= rec["knn20_random"] <= 100
    assert rec["knn20_gain"] == pytest.approx(rec["knn20_trained"] - rec["knn20_random"], abs=0.02)
    assert rec["train_wall_s"] > 0 and "cores" in rec["machine"]


@pytest.mark.integration
def test_the_recipe_benchmark_refuses_bad_arguments(tmp_path):
    r = subprocess.run([sys.executable, "benchmarks/recipe.py", "experimnt=x"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "unknown or empty argument 'experimnt=x'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "train").mkdir()
    r = subprocess.run([sys.executable, "benchmarks/recipe.py", "experiment=lejepa_cifar10_quick", f"out={tmp_path}"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "holds a run already" in r.stderr  # an earlier run's figures are never mixed in


@pytest.mark.integration
def test_the_collapse_benchmark_reads_a_runs_tokens(tmp_path):
    """benchmarks/collapse.py on a 2-step I-JEPA run: one JSON line for the encoder at init, one trained."""
    from test_train_entry import train

    r = train(tmp_path, "data=fake", "+backbone.kwargs.depth=2", "method=ijepa", "method.pred_depth=1",
              "trainer.max_steps=2", "trainer.enable_progress_bar=false")
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    r = subprocess.run([sys.executable, "benchmarks/collapse.py", str(ckpt), "samples=16"], cwd=REPO, env=env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    init, trained = (json.loads(line) for line in r.stdout.strip().splitlines())
    assert (init["encoder"], trained["encoder"], trained["step"], trained["samples"]) == ("init", "trained", 2, 16)
    for rec in (init, trained):
        assert rec["shared"] + rec["position"] + rec["content"] == pytest.approx(1.0, abs=0.003)
        assert 1 <= rec["rankme"] <= 16 and rec["content_rank"] >= 1
    r = subprocess.run([sys.executable, "benchmarks/collapse.py", str(ckpt), "sample=16"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown or empty argument 'sample=16'" in r.stderr
    r = subprocess.run([sys.executable, "benchmarks/collapse.py", str(ckpt), "samples=1"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == "collapse: samples must be a whole number >= 2, got '1'"
