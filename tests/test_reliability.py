"""Resume, preemption, atomic checkpoints and non-finite losses, through the real entry point."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO
from test_train_entry import FAST, read_metrics, train

LONG = [*FAST[:6], *FAST[7:], "trainer.max_steps=400", "checkpoint.every_n_train_steps=2"]


def _sigint_default() -> None:
    """In the child before exec: Ctrl-C's default disposition (a test run launched in the background
    by a non-interactive shell ignores SIGINT, and children inherit that), so Python's handler is set."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen([sys.executable, "-m", "jepa_zoo.train", f"hydra.run.dir={tmp_path}", *overrides],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_sigint_default)


def wait_for_step(ckpt_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until a checkpoint of step ``step`` or later exists (with ``save_top_k=1`` a step file lives only
    until the next one replaces it, a fraction of a second on a fast machine)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(p.stem[4:].isdigit() and int(p.stem[4:]) >= step for p in ckpt_dir.glob("step*.ckpt")):
            return
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    raise TimeoutError(f"no checkpoint for step {step}")


def saved_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


@pytest.mark.integration
def test_kill_9_then_resume_auto_finishes_the_run(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    p = start(tmp_path, *LONG)
    wait_for_step(ckpt_dir, 6, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed_at = saved_step(ckpt_dir / "last.ckpt")
    assert killed_at >= 4  # step 6's file exists; the kill may land before last.ckpt is rewritten for it
    r = train(tmp_path, *LONG[:-2], "trainer.max_steps=12", "resume=auto")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "resume=auto: continuing from" in r.stdout + r.stderr
    assert saved_step(ckpt_dir / "last.ckpt") == 12
    steps = sorted({int(row["step"]) for row in read_metrics(tmp_path) if row.get("train/loss")})
    assert steps[-1] == 12 and killed_at + 1 in steps  # continued (rows count completed steps), not restarted


@pytest.mark.integration
def test_sigterm_saves_and_exits_then_resumes(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    p = start(tmp_path, *LONG)
    wait_for_step(ckpt_dir, 4, p)
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 143, out[-3000:]
    assert "resume=auto" in out and "Traceback" not in out
    at = saved_step(ckpt_dir / "last.ckpt")
    assert at >= 4
    r = train(tmp_path, *LONG[:-2], f"trainer.max_steps={at + 2}", "resume=auto")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert saved_step(ckpt_dir / "last.ckpt") == at + 2


@pytest.mark.integration
def test_resume_refuses_another_method_or_a_missing_file(tmp_path):
    r = train(tmp_path, *FAST, "trainer.max_steps=1")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    config = (tmp_path / "checkpoints" / "config.yaml").read_text()
    r = train(tmp_path, "data=fake", "method=ijepa", "method.pred_depth=1", "+backbone.kwargs.depth=1",
              "trainer.max_steps=2", "resume=auto")
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "written by method=lejepa" in out and "Traceback" not in out
    assert (tmp_path / "checkpoints" / "config.yaml").read_text() == config  # the refused run wrote nothing
    r = train(tmp_path / "other", *FAST, f"resume={tmp_path}/missing.ckpt")
    assert r.returncode == 2 and "no such checkpoint file" in r.stdout + r.stderr


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_nonfinite_loss_stops_or_skips(tmp_path, mode):
    # an absurd learning rate makes the loss overflow after the first update
    r = train(tmp_path, *FAST, "method.optim.lr=1e30", "method.optim.warmup_steps=0", f"nonfinite_loss={mode}")
    out = r.stdout + r.stderr
    assert "non-finite loss or gradients" in out and "the first at step 1" in out
    if mode == "stop":
        assert r.returncode == 3 and "nonfinite_loss=skip" in out and "Traceback" not in out
    else:
        assert r.returncode == 0, out[-3000:]
        rows = read_metrics(tmp_path)
        skipped = max(float(x["train/skipped_steps"]) for x in rows if x.get("train/skipped_steps"))
        assert skipped >= 1
        # the skip happens on the device (fused AdamW's found_inf): weights stay finite, and the
        # optimiser counted only the applied updates
        ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
        steps = {float(st["step"]) for st in ckpt["optimizer_states"][0]["state"].values()}
        assert steps == {ckpt["global_step"] - skipped}, (steps, ckpt["global_step"], skipped)


def test_atomic_save_leaves_the_old_checkpoint_on_failure(tmp_path):
    from jepa_zoo.checkpointing import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("killed mid-save")

    with pytest.raises(RuntimeError, match="mid-save"):
        io.save_checkpoint({"step": 2, "x": Boom()}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind


def test_ctrl_c_during_a_save_finishes_the_file_then_stops(tmp_path, monkeypatch):
    """A Ctrl-C inside torch.save is held until the checkpoint is complete and in place, then
    raised as KeyboardInterrupt (the CLI's exit 130); left alone, torch's zip writer turned it
    into a RuntimeError (exit 1) and left no new checkpoint."""
    import signal as sig

    from jepa_zoo.checkpointing import AtomicCheckpointIO

    real_save = torch.save

    def save_interrupted(obj, f):
        os.kill(os.getpid(), sig.SIGINT)  # delivered to this (main) thread between bytecodes
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", save_interrupted)
    path = tmp_path / "last.ckpt"
    inherited = sig.signal(sig.SIGINT, sig.default_int_handler)  # Python's own, whatever the test run inherited
    try:
        with pytest.raises(KeyboardInterrupt):
            AtomicCheckpointIO().save_checkpoint({"step": 2, "w": torch.ones(1000)}, path)
        assert sig.getsignal(sig.SIGINT) is sig.default_int_handler  # the handler is restored
    finally:
        sig.signal(sig.SIGINT, inherited)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def assert_same_training_state(run_a: Path, run_b: Path, step: int) -> None:
    """Both runs' ``last.ckpt`` are at ``step`` with equal weights (EMA target included) and AdamW moments."""
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True) for r in (run_a, run_b))
    assert a["global_step"] == b["global_step"] == step
    differ = [k for k, v in a["state_dict"].items() if not torch.equal(v, b["state_dict"][k])]
    assert not differ, differ[:5]
    opt_a, opt_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert opt_a.keys() == opt_b.keys() and all(torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"]) for i in opt_a)


METHOD_FAST = {
    "lejepa": ["method=lejepa", "backbone.patch_size=8", "method.proj_hidden_dim=64", "method.num_slices=32",
               "method.views.num_local=2"],
    "ijepa": ["method=ijepa", "method.pred_depth=1"],
    "iwm": ["method=iwm", "method.pred_depth=1", "method.mrr.enabled=false"],
}
# the views made on the device: the loader draws each view's box, flip and photometric parameters
METHOD_FAST["lejepa-views-on-device"] = [*METHOD_FAST["lejepa"], "method.views.photometric=device",
                                         "method.views.crops=device"]
# video: 64 synthetic clips of 16 a batch, so an epoch is 4 steps as with data=fake; 4 frames (2 tubelets)
for _name in ("vjepa", "vjepa2"):
    METHOD_FAST[_name] = [f"method={_name}", "data=moving_shapes", "data.fake_size=64", "data.num_frames=4",
                          "method.pred_depth=1"]


@pytest.mark.integration
@pytest.mark.parametrize("method", sorted(METHOD_FAST))
def test_killed_and_resumed_run_is_bit_identical(tmp_path, method):
    """Killed after the mid-epoch checkpoint at step 3 (an epoch is 4 steps), resumed to step 8:
    weights, EMA target, optimiser state equal an uninterrupted 8-step run's (deterministic CPU).
    The resumed run finishes epoch 0 with its last batch, then crosses into epoch 1."""
    data = [] if any(o.startswith("data=") for o in METHOD_FAST[method]) else ["data=fake"]
    common = [*data, "+backbone.kwargs.depth=2", "trainer.enable_progress_bar=false",
              "trainer.enable_model_summary=false", "trainer.deterministic=true", "trainer.max_steps=8",
              "checkpoint.every_n_train_steps=3", "trainer.log_every_n_steps=1", *METHOD_FAST[method]]
    r = train(tmp_path / "straight", *common)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    run = tmp_path / "resumed"
    p = start(run, *common)
    while not (run / "checkpoints" / "last.ckpt").exists():
        assert p.poll() is None, p.stdout.read()[-3000:]
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    step = ckpt["global_step"]  # 3, or 6 when the kill came late (a loaded machine): both mid-epoch
    assert step in (3, 6)
    position = ckpt["JEPADataModule"]  # e.g. at step 3 the next batch is epoch 0's 4th (48 images seen)
    assert (position["epoch"], position["batches_done"], position["samples_done"]) == (step // 4, step % 4, 16 * (step % 4))
    r = train(run, *common, "resume=auto")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "not resumable" not in out
    assert_same_training_state(tmp_path / "straight", run, step=8)
    # the losses logged after the resume are the uninterrupted run's, step for step.  (Lightning
    # logs a step's metrics after its checkpoint is written, so the kill, which follows the
    # checkpoint, may come before the last step's row before the resume point is on disk.)
    losses = [{int(x["step"]): x["train/loss"] for x in read_metrics(d) if x.get("train/loss")}
              for d in (tmp_path / "straight", run)]
    # (a row's step is the optimiser steps done: 1..8; the resumed launch writes step + 1 onwards)
    assert sorted(losses[0]) == list(range(1, 9)) and set(range(1, step)) | set(range(step + 1, 9)) <= set(losses[1])
    assert all(losses[1][s] == losses[0][s] for s in losses[1])


def test_resume_auto_takes_the_newest_of_last_and_hpc_checkpoints(tmp_path):
    from jepa_zoo.checkpointing import resolve_resume

    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    assert resolve_resume("auto", ckpt_dir) is None
    last, hpc = ckpt_dir / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt"  # Lightning's SLURM requeue save
    last.write_bytes(b"x")
    hpc.write_bytes(b"x")
    os.utime(last, (1000, 1000))
    os.utime(hpc, (2000, 2000))
    assert resolve_resume("auto", ckpt_dir) == str(hpc)
    os.utime(last, (3000, 3000))
    assert resolve_resume("auto", ckpt_dir) == str(last)


@pytest.mark.integration
def test_the_final_step_is_checkpointed_when_n_does_not_divide_it(tmp_path):
    r = train(tmp_path, *FAST[:6], *FAST[7:], "trainer.max_steps=5", "checkpoint.every_n_train_steps=3")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert saved_step(tmp_path / "checkpoints" / "last.ckpt") == 5


@pytest.mark.integration
def test_keep_the_k_most_recent_step_checkpoints(tmp_path):
    r = train(tmp_path, *FAST[:6], *FAST[7:], "trainer.max_steps=4", "checkpoint.every_n_train_steps=1",
              "checkpoint.save_top_k=2")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step*.ckpt"))
    assert kept == ["step00000003.ckpt", "step00000004.ckpt"]
    assert saved_step(tmp_path / "checkpoints" / "last.ckpt") == 4


@pytest.mark.integration
def test_ctrl_c_is_recorded_as_stopped_with_exit_130(tmp_path):
    import json

    p = start(tmp_path, *LONG)
    wait_for_step(tmp_path / "checkpoints", 2, p)
    p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 130, out[-3000:]
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert summary["status"] == "stopped" and summary["exit_code"] == 130
    assert "interrupted (Ctrl-C)" in (tmp_path / "train.log").read_text()


@pytest.mark.integration
def test_a_refused_relaunch_keeps_the_earlier_runs_status_and_a_fresh_one_leaves_nothing(tmp_path):
    import json

    r = train(tmp_path, *FAST, "trainer.max_steps=1")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    r = train(tmp_path, *FAST, "data=folder", f"data.root={tmp_path}/nowhere", "resume=auto")  # refused in fit
    assert r.returncode == 2
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert summary["status"] == "finished" and summary["last_launch"]["status"] == "refused"
    assert "nowhere" in summary["last_launch"]["error"]
    fresh = tmp_path / "outputs" / "lejepa" / "new"
    r = train(fresh, *FAST, "data=folder", f"data.root={tmp_path}/nowhere")
    assert r.returncode == 2 and not fresh.exists()
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "notes.log").write_text("my notes\n")
    r = train(user_dir, *FAST, "data.batch_size=0")
    assert r.returncode == 2 and (user_dir / "notes.log").read_text() == "my notes\n"  # never someone else's files


@pytest.mark.integration
def test_a_method_that_overrides_hooks_without_super_still_skips_nonfinite_steps(monkeypatch, compose_cfg):
    """Skipping lives in a callback (jepa_zoo.callbacks.nonfinite), not in hooks a method may override."""
    import lightning as L

    import jepa_zoo.train as train
    from jepa_zoo.methods.lejepa import LeJEPA

    step = LeJEPA.step

    def nan_at_step_1(self, batch):
        out = step(self, batch)
        if self.global_step == 1:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(LeJEPA, "step", nan_at_step_1)
    monkeypatch.setattr(LeJEPA, "on_train_batch_end", lambda self, *args: None, raising=False)  # no super()
    monkeypatch.setattr(LeJEPA, "optimizer_step", L.LightningModule.optimizer_step, raising=False)  # no super()
    from jepa_zoo.callbacks.nonfinite import NonFiniteLossError

    common = ["data=fake", "+backbone.kwargs.depth=1", "method.views.num_local=0", "method.proj_hidden_dim=32",
              "method.num_slices=16", "trainer.max_steps=6", "trainer.log_every_n_steps=1",
              "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    with pytest.raises(NonFiniteLossError, match="skipped up to step 2, 1 in all, the first at step 1"):
        train.run(compose_cfg(*common))  # stop: at the next logging step, not only when training ends
    metrics = train.run(compose_cfg(*common, "nonfinite_loss=skip"))
    assert metrics["train/skipped_steps"] == 1
