"""What broke for a new user, through the real entry points, with the defaults a user has (issue 20)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from test_train_entry import FAST, read_metrics, train

ENV = {**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One short LeJEPA run (fake 32-px data) for the eval, export and report checks."""
    run_dir = tmp_path_factory.mktemp("outputs") / "lejepa" / "run"
    r = train(run_dir, *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir


@pytest.mark.integration
def test_default_multirun_from_a_clean_directory_names_jobs_by_the_swept_values(tmp_path):
    """No ``hydra.sweep.dir``: the default one, resolved before any job (it crashed)."""
    r = run("jepa_zoo.train", "--multirun", *FAST, "trainer.max_steps=1", "method.lambd=0.01,0.1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun" / "lejepa").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_method.lambd=0.01", "1_method.lambd=0.1"]  # only what the sweep varies
    for job in jobs:
        summary = json.loads((sweep / job / "run_summary.json").read_text())
        assert summary["status"] == "finished" and (sweep / job / "checkpoints" / "last.ckpt").is_file()
    # a sweep over the method itself: one sweep dir for all its jobs
    (tmp_path / "g").mkdir()
    r = run("jepa_zoo.train", "--multirun", "data=fake", "+backbone.kwargs.depth=1",
            "trainer.max_steps=1", "trainer.enable_progress_bar=false", "method=ijepa,iwm", cwd=tmp_path / "g")
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "g" / "multirun" / "ijepa").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0_method=ijepa", "1_method=iwm"]


def test_swept_keys_and_job_names():
    from jepa_zoo.runs import job_dirname, swept_keys

    keys = swept_keys(["a.b=1,2", "c=3", "+d=range(2)", "e=[1,2]"], {"f": "x,y"})
    assert keys == ["a.b", "d", "f"]
    assert job_dirname(4, ["a.b=2", "c=3", "+d=1", "f=y", "data.root=/x"], keys) == "4_a.b=2,d=1,f=y"
    assert job_dirname(0, ["c=3"], []) == "0"


@pytest.mark.integration
def test_a_cnn_that_cannot_take_the_small_views_is_refused_by_name(tmp_path):
    r = train(tmp_path, "backbone=timm", "backbone.name=convnext_atto", "data=fake", "trainer.max_steps=1")  # 32/16 px
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in out, out[-3000:]
    assert ("method.views.local_size: backbone convnext_atto cannot take 16-px images (the smallest of 16, 32, 64, "
            "... px it takes 32 px); raise method.views.local_size (it follows data.local_img_size)") in out
    assert not tmp_path.exists()  # a refused launch leaves no empty run dir behind


@pytest.mark.integration
def test_the_same_cnn_trains_at_sizes_it_takes(tmp_path):
    r = train(tmp_path, "backbone=timm", "backbone.name=convnext_atto", "data=fake", "data.local_img_size=32",
              "method.proj_hidden_dim=64", "method.num_slices=32", "method.views.num_local=2", "trainer.max_steps=1",
              "trainer.enable_progress_bar=false")
    assert r.returncode == 0, r.stderr[-3000:]


def train_with_a_broken_step(when: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m jepa_zoo.train *args`` with LeJEPA's step raising ``RuntimeError('boom at step')``
    whenever the Python expression ``when`` (of ``self``) holds."""
    code = ("import runpy, sys; import jepa_zoo.methods.lejepa as m\n"
            "step = m.LeJEPA.step\n"
            "def boom(self, batch):\n"
            f"    if {when}: raise RuntimeError('boom at step')\n"
            "    return step(self, batch)\n"
            "m.LeJEPA.step = boom\n"
            f"sys.argv = ['train.py', *{list(args)!r}]\n"
            "runpy.run_module('jepa_zoo.train', run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.mark.integration
def test_an_uncaught_error_reaches_the_log_and_the_summary_as_failed(tmp_path):
    r = train_with_a_broken_step("True", f"hydra.run.dir={tmp_path}", *FAST)
    assert r.returncode == 1
    log = (tmp_path / "train.log").read_text()
    assert "[ERROR] - uncaught RuntimeError: boom at step" in log and "Traceback" in log
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert summary["status"] == "failed" and "boom at step" in summary["error"]
    rep = run("jepa_zoo.report", str(tmp_path), "--out", str(tmp_path / "report"))
    assert rep.returncode == 0 and "| failed |" in rep.stdout


@pytest.mark.integration
@pytest.mark.parametrize("cmd", [["jepa_zoo.eval", "ckpt={}"], ["jepa_zoo.export", "{}"]], ids=["eval", "export"])
def test_eval_and_export_of_a_text_file_say_so_in_one_line(tmp_path, cmd):
    notes = tmp_path / "notes.txt"
    notes.write_text("some notes, not a checkpoint\n")
    r = run(*[c.format(notes) for c in cmd], cwd=tmp_path)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 2 and "Traceback" not in out and len(out.splitlines()) == 1, out
    assert f"{notes} is not a PyTorch checkpoint" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no run dir left behind


@pytest.mark.integration
def test_eval_with_fewer_training_images_than_a_batch_trains_on_them(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    r = run("jepa_zoo.eval", f"ckpt={ckpt}", "protocol=linear", "train_limit=20", "probe.epochs=2",
            f"hydra.run.dir={tmp_path}/ev")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(res["file"]).name.startswith("eval_linear_train20_s")  # train_limit and probe.epochs in the name
    assert res["train_images"] == 18 and res["select_images"] == 2 and res["unit"] == "percent"
    assert 0 <= res["top1"] <= 100 and res["heads"][res["best_head"]]["top1"] == res["top1"]
    r = run("jepa_zoo.eval", f"ckpt={ckpt}", "protocol=linear", "train_limit=1", f"hydra.run.dir={tmp_path}/ev1")
    assert r.returncode == 2 and "leaves none to train on" in r.stdout + r.stderr


@pytest.mark.integration
def test_report_on_an_outputs_tree_skips_eval_folders_and_plots_only_swept_keys(trained, tmp_path):
    outputs = trained.parent.parent
    r = run("jepa_zoo.eval", f"ckpt={trained / 'checkpoints' / 'last.ckpt'}", "knn.k=[5]",
            f"hydra.run.dir={outputs / 'eval' / 'today'}")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    bench = outputs / "bench" / "lejepa" / "today" / ".hydra"  # what python -m jepa_zoo.bench leaves
    bench.mkdir(parents=True)
    (bench / "hydra.yaml").write_text("hydra:\n  job:\n    name: bench\n")
    (bench / "config.yaml").write_text("method:\n  name: lejepa\n")
    (bench / "overrides.yaml").write_text("- bench.steps=3\n")
    rep = run("jepa_zoo.report", str(outputs), "--out", str(tmp_path / "rep"), "--format", "csv")
    assert rep.returncode == 0, rep.stderr
    rows = rep.stdout.strip().splitlines()
    assert len(rows) == 2 and rows[1].startswith("lejepa/run,finished,yes,") and ",knn.k," not in rows[0]  # eval overrides are no columns
    assert sorted(p.name for p in (tmp_path / "rep" / "plots").iterdir()) == ["loss_curves.png"]


@pytest.mark.integration
def test_exported_weights_carry_their_preprocessing_for_timm(trained, tmp_path):
    import timm
    import torch
    from safetensors import safe_open

    from jepa_zoo.export import load_timm

    out = tmp_path / "enc.safetensors"
    r = run("jepa_zoo.export", str(trained / "checkpoints" / "last.ckpt"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    expected = {"input_size": (3, 32, 32), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                "crop_pct": 1.0, "interpolation": "bilinear"}
    cfg = timm.data.resolve_data_config({}, model=load_timm(out))
    assert {k: cfg[k] for k in expected} == expected
    with safe_open(str(out), "pt") as f:  # a plain timm user, from the file's metadata alone
        meta = f.metadata()
    model = timm.create_model(meta["timm_model"], pretrained_cfg_overlay=json.loads(meta["pretrained_cfg"]),
                              **json.loads(meta["create_kwargs"]))
    assert list(timm.data.resolve_data_config({}, model=model)["input_size"]) == [3, 32, 32]
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape[-1] == load_timm(out)(torch.zeros(1, 3, 32, 32)).shape[-1]


@pytest.mark.integration
def test_a_short_run_logs_and_validates_its_last_step(trained):
    rows = read_metrics(trained)
    assert [int(r["step"]) for r in rows if r.get("train/loss")] == [1, 2, 3, 4]
    val = [r for r in rows if r.get("probe/val_acc")]
    # one step number: the validation row, the checkpoint and the image panel all say step 4
    assert [int(r["step"]) for r in val] == [4] and (trained / "checkpoints" / "step00000004.ckpt").is_file()
    assert (trained / "images" / "retrievals_step4.png").is_file()


@pytest.mark.integration
def test_a_run_shorter_than_the_log_interval_still_logs_and_validates(tmp_path):
    r = train(tmp_path, *FAST[:-1], "trainer.max_steps=2", "trainer.log_every_n_steps=50")  # 2 of 4 batches
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_metrics(tmp_path)
    assert [int(r["step"]) for r in rows if r.get("train/loss")] == [2]  # the last step
    val = [r for r in rows if r.get("probe/val_acc")]
    assert val and 0 <= float(val[0]["probe/val_acc"]) <= 100 and val[0].get("val/knn_top1")


@pytest.mark.parametrize("cmd,needle", [
    (["jepa_zoo.train", "data=fake", "method.lamda=0.1"], "method.lamda: no such key in the config; did you mean method.lambd"),
    (["jepa_zoo.train", "method=iwm", "data=fake", "method.pred_dept=3"], "did you mean method.pred_depth"),
    (["jepa_zoo.eval", "ckpt=x.ckpt", "probe.epoch=3"], "did you mean probe.epochs"),
    (["jepa_zoo.train", "data=fake", "method.lambd=abc"], "method.lambd: Value 'abc' of type 'str' could not be converted"),
    (["jepa_zoo.train", "method=ijepa", "data=fake", "method.mrr.enabled=true"],
     "method.mrr.enabled: no such key for method.name=ijepa; the world-model MRR (val/mrr) is IWM's, method=iwm"),
    (["jepa_zoo.eval", "ckpt=multirun/lejepa/d/0_method.lambd=0.05/checkpoints/last.ckpt"],
     "quote it: \"ckpt='multirun/lejepa/d/0_method.lambd=0.05/checkpoints/last.ckpt'\""),
], ids=["train-typo", "iwm-typo", "eval-typo", "wrong-type", "ijepa-mrr", "eval-unquoted-path"])
@pytest.mark.integration
def test_a_typo_or_an_unquoted_sweep_path_gets_a_hint(tmp_path, cmd, needle):
    r = run(*cmd, cwd=tmp_path)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 2 and needle in out and len(out.splitlines()) == 1, out
    assert list(tmp_path.iterdir()) == []  # refused before Hydra made a run dir


@pytest.mark.integration
def test_a_resnet_at_32_px_without_the_cifar_stem_is_warned_about(tmp_path):
    common = ["data=fake", "backbone=resnet18", "method.views.num_local=0", "method.proj_hidden_dim=32",
              "method.num_slices=16", "trainer.max_steps=1", "trainer.enable_progress_bar=false"]
    r = train(tmp_path / "plain", *common)
    assert r.returncode == 0 and "backbone.cifar_stem=true keeps small images whole" in r.stdout + r.stderr
    r = train(tmp_path / "stem", *common, "backbone.cifar_stem=true")
    assert r.returncode == 0 and "keeps small images whole" not in r.stdout + r.stderr


def test_the_progress_bar_counts_this_runs_steps():
    from types import SimpleNamespace

    from jepa_zoo.callbacks.progress import StepProgressBar

    bar = StepProgressBar()
    bar._trainer = SimpleNamespace(num_training_batches=6250, max_steps=3, global_step=0, accumulate_grad_batches=1)
    assert bar.total_train_batches == 3  # not 6250 (Lightning's total unless max_epochs=-1)
    bar._trainer = SimpleNamespace(num_training_batches=6250, max_steps=-1, global_step=0, accumulate_grad_batches=1)
    assert bar.total_train_batches == 6250
    bar._trainer = SimpleNamespace(num_training_batches=10, max_steps=7, global_step=5, accumulate_grad_batches=2)
    assert bar.total_train_batches == 4  # 2 optimiser steps left, 2 batches each


@pytest.mark.integration
def test_a_failing_job_does_not_stop_the_rest_of_a_sweep(tmp_path):
    r = train_with_a_broken_step("self.cfg.method.lambd < 0.05", "--multirun", f"hydra.sweep.dir={tmp_path}", *FAST,
                                 "method.lambd=0.01,0.1")
    assert r.returncode == 1
    status = {p.name: json.loads((p / "run_summary.json").read_text())["status"] for p in tmp_path.iterdir() if p.is_dir()}
    assert status == {"0_method.lambd=0.01": "failed", "1_method.lambd=0.1": "finished"}


@pytest.mark.integration
def test_a_normal_run_prints_each_line_once_and_no_warning_a_user_cannot_act_on(tmp_path):
    import re

    env = {k: v for k, v in ENV.items() if k != "WANDB_MODE"} | {"HOME": str(tmp_path)}  # W&B: no key, offline
    r = subprocess.run([sys.executable, "-m", "jepa_zoo.train", f"hydra.run.dir={tmp_path / 'run'}", *FAST[:-1],
                        "trainer.max_steps=2", "trainer.enable_model_summary=true", "logger=wandb"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    warnings = [line for line in out.splitlines() if re.search(r"\.py:\d+: |Warning|WARNING", line)]
    assert warnings == [], warnings  # Lightning's, torch's and W&B's (the "anonymous setting") are gone
    for gone in ("💡", "Total Flops", "FLOPs", "exists and is not empty", "Skipping"):
        assert gone not in out, gone
    assert out.count("Seed set to 0") == 1  # Lightning's records once, through Hydra's handler...
    log = (tmp_path / "run" / "train.log").read_text()
    assert "Seed set to 0" in log and "Total params" in log  # ... which also writes them to train.log
    assert (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").is_file()  # kept beside W&B
    # bf16 and a resume: no model-summary precision warning, no "weights_only was not set"
    r = subprocess.run([sys.executable, "-m", "jepa_zoo.train", f"hydra.run.dir={tmp_path / 'run'}", *FAST[:-1],
                        "trainer.max_steps=3", "trainer.enable_model_summary=true", "trainer.precision=bf16-mixed",
                        "resume=auto"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "resume=auto: continuing from" in out, out[-3000:]
    assert [line for line in out.splitlines() if re.search(r"\.py:\d+: |Warning|WARNING|weights_only", line)] == []
