"""One table of transformer block types (jepa_zoo/models/blocks.py): ``compile=true`` compiles, and FSDP
shards, every block of every encoder and predictor, the RoPE video ViT's ``EvaBlock`` included."""

import pytest
import torch
from torch import nn

from jepa_zoo.models.blocks import block_names, block_types, register_block


@pytest.fixture(scope="module")
def vjepa2(tmp_path_factory):
    """A tiny V-JEPA 2 (RoPE: timm EvaBlocks in the encoder, its EMA target and the predictor)."""
    from hydra import compose, initialize_config_dir

    from conftest import CONF_DIR
    from jepa_zoo.config import validate
    from jepa_zoo.methods import build_model
    from jepa_zoo.train import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"run_dir={tmp_path_factory.mktemp('run')}", "method=vjepa2",
                                          "data=moving_shapes", "+backbone.kwargs.depth=2", "method.pred_depth=1"])
    return build_model(validate(cfg))


def evablocks(model: nn.Module) -> list:
    from timm.models.eva import EvaBlock

    return [n for n, m in model.named_modules() if isinstance(m, EvaBlock)]


def test_compile_true_compiles_every_block_of_the_rope_video_vit(vjepa2):
    blocks = evablocks(vjepa2)
    assert len(blocks) == 5  # encoder 2, EMA target 2, predictor 1
    compiled = vjepa2.compile_()
    assert sorted(compiled) == sorted(blocks)
    assert all(vjepa2.get_submodule(n)._compiled_call_impl is not None for n in blocks)


def test_fsdp_makes_each_rope_block_a_unit(vjepa2, monkeypatch):
    """shard_ on the V-JEPA 2 model, with ``fully_shard`` recording its units instead of sharding."""
    import torch.distributed.fsdp as fsdp

    from jepa_zoo.parallel import shard_

    units = []
    monkeypatch.setattr(fsdp, "fully_shard", lambda m, **kw: units.append(m))
    monkeypatch.setattr(fsdp, "register_fsdp_forward_method", lambda m, name: None)
    names = shard_(vjepa2, mesh=None)
    blocks = evablocks(vjepa2)
    assert names[:len(blocks)] == blocks  # every block its own unit, before its parents
    assert {"backbone", "target_encoder", "predictor"} <= set(names[len(blocks):])
    assert units[:len(blocks)] == [vjepa2.get_submodule(n) for n in blocks]


def test_a_registered_block_type_is_a_unit_and_a_block_inside_a_block_is_not(monkeypatch):
    from jepa_zoo.models import blocks

    monkeypatch.setattr(blocks, "_REGISTERED", [])

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

    assert Inner not in block_types()
    register_block(Inner)
    register_block(Outer)
    model = nn.Sequential(Outer(), Inner())
    assert block_names(model) == ["0", "1"]
    with pytest.raises(TypeError, match="not an nn.Module class"):
        register_block(torch.zeros)
