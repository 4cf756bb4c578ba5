"""``compile=true`` (jepa_zoo/models/compile.py) trains the same model as eager, through the real entry point."""

import pytest

from test_ddp import COMMON, METHOD, params
from test_train_entry import train


@pytest.mark.integration
def test_compiled_blocks_train_like_eager(tmp_path):
    args = [*COMMON, *METHOD["ijepa"], "data.batch_size=16"]
    eager = train(tmp_path / "eager", *args)
    assert eager.returncode == 0, (eager.stdout + eager.stderr)[-3000:]
    compiled = train(tmp_path / "compiled", *args, "compile=true")
    out = compiled.stdout + compiled.stderr
    assert compiled.returncode == 0, out[-3000:]
    # encoder, EMA target and predictor blocks (depth 2, 2, 1)
    assert "compile: 5 modules compiled" in out, out[-3000:]
    (step_a, a), (step_b, b) = params(tmp_path / "eager"), params(tmp_path / "compiled")
    assert step_a == step_b == 3 and a.keys() == b.keys()  # same checkpoint keys: compiled in place
    worst = max(((a[k] - b[k]).abs().max().item(), k) for k in a if a[k].is_floating_point())
    assert worst[0] < 1e-4, f"largest difference {worst[0]:.3g} in {worst[1]}"
