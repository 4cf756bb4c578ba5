"""The benchmark entry point (``python -m jepa_zoo.bench``), run as users run it, on tiny configs."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

TINY = ["data=fake", "data.batch_size=4", "bench.steps=2", "bench.warmup=1", "bench.batches=2",
        "+backbone.kwargs.depth=2"]
LEJEPA = ["method=lejepa", "backbone.patch_size=8", "method.proj_hidden_dim=64", "method.num_slices=32",
          "method.views.num_local=2", *TINY]
IJEPA = ["method=ijepa", "method.pred_depth=1", "method.pred_dim=48", *TINY]


def bench(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "jepa_zoo.bench", f"hydra.run.dir={tmp_path}", *overrides],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


def result(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout  # exactly one JSON line; logs go to stderr
    return json.loads(lines[0])


def check_step(out: dict, method: str) -> None:
    assert out["what"] == "step" and out["method"] == method and out["batch_size"] == 4
    assert out["images_per_s"] > 0 and out["step_ms_median"] > 0
    assert out["images_per_s"] == pytest.approx(4e3 / out["step_ms_mean"], rel=0.01)
    assert out["mem_kind"] == "cpu_peak_rss" and out["peak_mem_mb"] > 100
    assert out["flops_per_step"] > 0 and out["flops_per_image"] * 4 == pytest.approx(out["flops_per_step"], abs=4)
    assert out["mfu"] is None  # CPU: no peak table


@pytest.mark.integration
def test_lejepa_step(tmp_path):
    out = result(bench(tmp_path, *LEJEPA))
    check_step(out, "lejepa")
    assert out["patch_size"] == 8 and out["img_size"] == 32


@pytest.mark.integration
def test_ijepa_step_carries_masks(tmp_path):
    out = result(bench(tmp_path, *IJEPA))
    check_step(out, "ijepa")
    assert 10 <= out["context_patches"] < 64 and 1 <= out["target_block_patches"] < 64  # 8x8 grid


@pytest.mark.integration
def test_flops_scale_with_the_batch(tmp_path):
    """The counter sees the real model: twice the batch, twice the FLOPs (LeJEPA has no masks: exact)."""
    a = result(bench(tmp_path / "a", *LEJEPA, "bench.steps=1", "bench.warmup=0"))
    b = result(bench(tmp_path / "b", *LEJEPA, "bench.steps=1", "bench.warmup=0", "data.batch_size=8"))
    assert b["flops_per_step"] == pytest.approx(2 * a["flops_per_step"], rel=0.02)


@pytest.mark.integration
def test_data_pipeline_on_fake_data(tmp_path):
    out = result(bench(tmp_path, "method=ijepa", "bench.what=data", "data=fake", "data.batch_size=8",
                       "bench.steps=3", "bench.warmup=1"))
    assert out["what"] == "data" and out["dataset"] == "fake" and out["num_workers"] == 0
    assert out["images_per_s"] > 0 and out["images_per_s_per_worker"] == out["images_per_s"]
    assert out["decode_views_ms_per_image"] > 0 and out["mask_ms_per_batch"] is not None


@pytest.mark.integration
def test_data_pipeline_with_photometric_on_device(tmp_path):
    """LeJEPA with views.photometric=device: the workers crop, the batched ops are timed apart."""
    out = result(bench(tmp_path, "method=lejepa", "method.views.num_local=2", "bench.what=data", "data=fake",
                       "data.batch_size=8", "bench.steps=2", "bench.warmup=1", "method.views.photometric=device"))
    assert out["photometric"] == "device" and out["device_photometric_ms_per_batch"] > 0
    assert out["images_per_s"] > 0 and out["mask_ms_per_batch"] is None


@pytest.mark.parametrize(
    "override,needle",
    [
        ("method=nope", "unknown option 'nope'"),
        ("method.name=nope", "unknown method 'nope'"),
        ("bench.what=nope", "bench.what"),
        ("+bench.nope=1", "bench.nope"),
        ("method.lambd=7", "method.lambd"),
    ],
)
@pytest.mark.integration
def test_bad_input_exits_2(tmp_path, override, needle):
    r = bench(tmp_path, "data=fake", override)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stdout == ""
    err = r.stderr
    assert needle in err and "Traceback" not in err


def test_bench_node_is_split_off_before_validation():
    from hydra import compose, initialize_config_dir

    from jepa_zoo.bench import BenchConfig, split_config
    from jepa_zoo.config import validate
    from jepa_zoo.train import register_resolvers
    from conftest import CONF_DIR

    register_resolvers()  # the schemas the yamls extend, as python -m jepa_zoo.bench registers them
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("bench", overrides=["run_dir=.", "method=ijepa", "bench.steps=7"])
    train_cfg, b = split_config(cfg)
    assert "bench" not in train_cfg and "bench" in cfg
    assert b == BenchConfig(steps=7)
    tc = validate(train_cfg)  # the training schema accepts it: nothing bench-only is left
    assert tc.data.name == "fake" and tc.data.img_size == 224 and tc.backbone.patch_size == 16
