import math

import pytest
import torch

from jepa_zoo.config import BackboneConfig
from jepa_zoo.models.backbones import ViTEncoder
from jepa_zoo.optim import param_groups, warmup_cosine


def test_warmup_cosine_values():
    f = lambda s: warmup_cosine(s, total_steps=110, warmup_steps=10, final_ratio=0.01)  # noqa: E731
    assert f(0) == 0.0 and f(5) == pytest.approx(0.5) and f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.01 + 0.99 * 0.5)
    assert f(110) == pytest.approx(0.01) and f(500) == pytest.approx(0.01)
    assert warmup_cosine(0, 100, 10, 0.0, start_ratio=0.2) == pytest.approx(0.2)
    assert warmup_cosine(3, 100, 0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.03)))


def test_no_decay_on_biases_norms_and_pos_embed():
    m = ViTEncoder(BackboneConfig(img_size=32, patch_size=8, kwargs={"depth": 1}))
    m.pos_embed_param = torch.nn.Parameter(torch.zeros(1, 4, 8))  # 3-D, excluded by name
    groups = param_groups(m, 0.05)
    decay = {id(p) for p in groups[0]["params"]}
    names = {n for n, p in m.named_parameters() if id(p) in decay}
    assert names and all(n.endswith("weight") for n in names)
    assert not any("norm" in n for n in names) and "pos_embed_param" not in names
    assert groups[1]["weight_decay"] == 0.0


def test_time_horizon_spends_the_budget():
    from jepa_zoo.optim import time_horizon

    inf = float("inf")
    assert time_horizon(10, 10.0, 20.0, inf) == 20  # 1 step/s, 10 s left
    assert time_horizon(10, 10.0, 20.0, 15.0) == 15  # max_steps comes first
    assert time_horizon(10, 10.0, 20.0, inf, since=(0, 5.0)) == 30  # start-up (5 s) left out: 2 steps/s
    assert time_horizon(10, 20.0, 20.0, inf) == 11  # time is up: the schedules are at their end
    assert time_horizon(0, 0.0, 20.0, 400.0) == 400 and time_horizon(0, 0.0, 20.0, inf) == 1  # nothing timed yet
    # the schedule's progress step/T is the budget spent since the launch, whatever the pace
    for step, elapsed in ((5, 2.0), (7, 9.0), (30, 15.0)):
        t = time_horizon(step, elapsed, 20.0, inf)
        assert step / t == pytest.approx(elapsed / 20.0)


@pytest.mark.integration
def test_a_time_budgeted_run_ends_annealed(tmp_path):
    """trainer.max_time with no step or epoch limit: the LR cosine runs to the end of the budget."""
    from test_train_entry import FAST, read_metrics, train

    r = train(tmp_path, *[o for o in FAST if not o.startswith("trainer.max_steps")], "trainer.max_steps=-1",
              "trainer.max_epochs=-1", "trainer.max_time=00:00:00:20", "method.optim.warmup_steps=3")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    rows = [x for x in read_metrics(tmp_path) if x.get("train/lr")]
    lrs = [float(x["train/lr"]) for x in rows]
    peak = lrs.index(max(lrs))
    assert len(lrs) >= 5 and max(lrs) == pytest.approx(5e-4, rel=1e-3), lrs  # warmed up to the peak
    assert all(b <= a for a, b in zip(lrs[peak:], lrs[peak + 1:])), lrs  # then down, never up
    # the schedule was near its end when the time ran out: the last step's progress step / horizon is
    # the budget spent when it started (a step, and a validation after it, may still take a while)
    last = rows[-1]
    assert float(last["step"]) / float(last["train/horizon"]) > 0.6, [(x["step"], x["train/horizon"]) for x in rows]
    assert lrs[-1] < 0.75 * max(lrs), lrs
