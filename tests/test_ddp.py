"""Data-parallel training through the real entry point: 2 CPU processes (gloo) with batch B/2 each
end with the parameters of 1 process with batch B (same global batch, same images, views and masks).

Both strategies: DDP (replicated weights, all-reduced gradients) and FSDP (``trainer.strategy=fsdp``,
jepa_zoo/parallel.py: sharded weights, gradients and AdamW state, a sharded EMA target).  I-JEPA runs
with EMA momentum 0.5 so that the target encoder moves as much as the online one in 3 steps and
its agreement is checked too, with ``fsdp.reshard_after_forward=false``.  Gradient clipping is on under FSDP so that its path over sharded
gradients runs (AdamW's invariance to the gradient's scale hides a wrong norm in 3 steps)."""

import pytest
import torch

from test_train_entry import train

COMMON = ["data=fake", "+backbone.kwargs.depth=2", "trainer.max_steps=3", "trainer.enable_progress_bar=false",
          "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1", "trainer.num_sanity_val_steps=0"]
METHOD = {
    "lejepa": ["method=lejepa", "backbone.patch_size=8", "method.proj_hidden_dim=64", "method.num_slices=32",
               "method.views.num_local=2", "method.proj_layers=1"],
    # one Linear: the deeper projector's BatchNorm sees each rank's half batch (SyncBatchNorm, which
    # hardware=multinode sets, needs GPUs)
    "ijepa": ["method=ijepa", "method.pred_depth=1", "method.ema=[0.5,0.5]"],
}


def params(run_dir):
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["global_step"], ckpt["state_dict"]


STRATEGY = {"ddp": [], "fsdp": ["trainer.gradient_clip_val=0.05"]}
# I-JEPA under FSDP keeps gathered weights from forward to backward; the frozen EMA target must
# still reshard (it has no backward) for its shards to meet the online encoder's in the EMA update
FSDP_METHOD = {"ijepa": ["fsdp.reshard_after_forward=false"], "lejepa": []}


@pytest.mark.integration
@pytest.mark.parametrize("strategy", sorted(STRATEGY))
@pytest.mark.parametrize("method", sorted(METHOD))
def test_two_processes_with_half_batches_match_one_process(tmp_path, compose_cfg, method, strategy):
    one = train(tmp_path / "one", *COMMON, *METHOD[method], *STRATEGY[strategy], "data.batch_size=16")
    assert one.returncode == 0, (one.stdout + one.stderr)[-3000:]
    extra = FSDP_METHOD[method] if strategy == "fsdp" else []
    two = train(tmp_path / "two", *COMMON, *METHOD[method], *STRATEGY[strategy], "data.batch_size=8",
                "trainer.devices=2", f"trainer.strategy={strategy}", *extra)
    out = two.stdout + two.stderr
    assert two.returncode == 0, out[-3000:]
    assert "world_size: 2" in out or "MEMBER: 2/2" in out  # really two processes
    if strategy == "fsdp":  # really sharded: every parameter of the method is in a sharded module
        assert "modules sharded over 2 processes" in out, out[-3000:]
    (step_a, a), (step_b, b) = params(tmp_path / "one"), params(tmp_path / "two")
    assert step_a == step_b == 3
    worst = max(((a[k] - b[k]).abs().max().item(), k) for k in a if a[k].is_floating_point())
    assert worst[0] < 1e-4, f"largest difference {worst[0]:.3g} in {worst[1]}"
    init = initial(compose_cfg, method)
    for part in {k.split(".")[0] for k in init} & {"backbone", "target_encoder"}:
        moved = max((a[k] - v).abs().max().item() for k, v in init.items() if v.is_floating_point()
                    and k.startswith(part + "."))
        assert moved > 100 * worst[0], part  # the agreement is not that of two runs that barely moved


def initial(compose_cfg, method):
    """The weights both runs started from (the entry point seeds before building the model)."""
    from jepa_zoo.config import validate
    from jepa_zoo.methods import build_model

    tc = validate(compose_cfg(*COMMON, *METHOD[method]))
    return build_model(tc, num_classes=tc.data.num_classes).state_dict()


@pytest.mark.integration
def test_fsdp_killed_and_resumed_run_is_bit_identical(tmp_path):
    """I-JEPA under FSDP on 2 processes, killed (both processes) after the mid-epoch checkpoint at
    step 3, resumed with ``resume=auto`` to step 8: weights, EMA target and optimiser state equal
    an uninterrupted run's.  FSDP restores checkpoints after the loader is built, so this also
    checks that the loader position still applies (the epoch goes on at its 4th batch)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO
    from test_reliability import assert_same_training_state

    common = [*COMMON[:2], "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
              "trainer.deterministic=true", "trainer.max_steps=8", "checkpoint.every_n_train_steps=3",
              "trainer.log_every_n_steps=1", *METHOD["ijepa"], "data.batch_size=8", "trainer.devices=2",
              "trainer.strategy=fsdp"]
    r = train(tmp_path / "straight", *common)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    run = tmp_path / "resumed"
    p = subprocess.Popen([sys.executable, "-m", "jepa_zoo.train", f"hydra.run.dir={run}", *common], cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "last.ckpt").exists():
        assert p.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # rank 0 and the rank-1 process it launched
    p.wait()
    step = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert step in (3, 6)  # mid-epoch (4 steps per epoch); 6 when the kill came late
    r = train(run, *common, "resume=auto")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "resume is not exact" not in out
    assert_same_training_state(tmp_path / "straight", run, step=8)


@pytest.mark.integration
def test_fsdp_with_gradient_accumulation_matches_ddp(tmp_path):
    """2 processes x batch 4 x 2 accumulated micro-batches: FSDP (sharded gradients summed over the
    micro-batches) ends where DDP does, whether each micro-batch is reduce-scattered or only their
    sum (``fsdp.reduce_every_micro_batch=false``).  Not against one process: the masks are drawn
    per loader batch, so accumulation changes them."""
    common = [*COMMON, *METHOD["ijepa"], "data.batch_size=4", "trainer.devices=2", "trainer.max_steps=2",
              "trainer.accumulate_grad_batches=2"]
    runs = {"ddp": ["trainer.strategy=ddp"], "fsdp": ["trainer.strategy=fsdp"],
            "fsdp_sum": ["trainer.strategy=fsdp", "fsdp.reduce_every_micro_batch=false"]}
    for name, args in runs.items():
        r = train(tmp_path / name, *common, *args)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    step_a, a = params(tmp_path / "ddp")
    for name in ("fsdp", "fsdp_sum"):
        step_b, b = params(tmp_path / name)
        assert step_a == step_b == 2
        worst = max(((a[k] - b[k]).abs().max().item(), k) for k in a if a[k].is_floating_point())
        assert worst[0] < 1e-5, f"{name}: largest difference {worst[0]:.3g} in {worst[1]}"


@pytest.mark.integration
def test_photometric_on_device_with_loader_workers_under_ddp(tmp_path):
    """views.photometric=device with a loader worker process (the crops and their parameters cross
    its queue) and 2 DDP processes ends with the parameters of 1 process with the whole batch:
    the draws follow the samples, not the ranks."""
    args = [*COMMON, *METHOD["lejepa"], "method.views.photometric=device", "data.num_workers=1"]
    one = train(tmp_path / "one", *args, "data.batch_size=16")
    assert one.returncode == 0, (one.stdout + one.stderr)[-3000:]
    two = train(tmp_path / "two", *args, "data.batch_size=8", "trainer.devices=2", "trainer.strategy=ddp")
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    (step_a, a), (step_b, b) = params(tmp_path / "one"), params(tmp_path / "two")
    assert step_a == step_b == 3
    worst = max(((a[k] - b[k]).abs().max().item(), k) for k in a if a[k].is_floating_point())
    assert worst[0] < 1e-4, f"largest difference {worst[0]:.3g} in {worst[1]}"
