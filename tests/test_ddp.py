"""Data-parallel training through the real entry point: 2 CPU processes (gloo) with batch B/2 each
end with the parameters of 1 process with batch B (same global batch, same images, views and masks)."""

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
    "ijepa": ["method=ijepa", "method.pred_depth=1"],
}


def params(run_dir):
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["global_step"], ckpt["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHOD))
def test_two_processes_with_half_batches_match_one_process(tmp_path, compose_cfg, method):
    one = train(tmp_path / "one", *COMMON, *METHOD[method], "data.batch_size=16")
    assert one.returncode == 0, (one.stdout + one.stderr)[-3000:]
    two = train(tmp_path / "two", *COMMON, *METHOD[method], "data.batch_size=8", "trainer.devices=2",
                "trainer.strategy=ddp")
    out = two.stdout + two.stderr
    assert two.returncode == 0, out[-3000:]
    assert "world_size: 2" in out or "MEMBER: 2/2" in out  # really two processes
    (step_a, a), (step_b, b) = params(tmp_path / "one"), params(tmp_path / "two")
    assert step_a == step_b == 3
    worst = max(((a[k] - b[k]).abs().max().item(), k) for k in a if a[k].is_floating_point())
    assert worst[0] < 1e-4, f"largest difference {worst[0]:.3g} in {worst[1]}"
    init = initial(compose_cfg, method)
    moved = max((a[k] - v).abs().max().item() for k, v in init.items() if v.is_floating_point())
    assert moved > 100 * worst[0]  # the agreement is not that of two runs that barely moved


def initial(compose_cfg, method):
    """The weights both runs started from (the entry point seeds before building the model)."""
    from jepa_zoo.config import validate
    from jepa_zoo.methods import build_model

    tc = validate(compose_cfg(*COMMON, *METHOD[method]))
    return build_model(tc, num_classes=tc.data.num_classes).state_dict()
