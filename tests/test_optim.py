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
