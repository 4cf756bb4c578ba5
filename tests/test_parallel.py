"""``trainer.strategy=fsdp`` (jepa_zoo/parallel.py): what is refused before any process group exists.
Sharded training itself is checked against one process in test_ddp.py (2 CPU processes, gloo)."""

import pytest
import torch
from torch import nn

from jepa_zoo.parallel import FSDPStrategy, is_sharded, shard_


class OwnParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.head = nn.Linear(2, 2)


def test_parameters_outside_children_are_refused_by_name():
    with pytest.raises(ValueError, match=r"outside its child modules: \['scale'\]"):
        shard_(OwnParam(), mesh=None)


@pytest.mark.parametrize("make", [lambda: shard_(nn.Sequential(nn.Linear(2, 2)), None, param_dtype="int8"),
                                  lambda: FSDPStrategy(param_dtype="int8")])
def test_unknown_param_dtype_is_refused(make):
    with pytest.raises(ValueError, match="fsdp.param_dtype"):
        make()


def test_a_plain_module_is_not_sharded():
    assert not is_sharded(nn.Sequential(nn.Linear(2, 2)))


def test_resume_under_fsdp_refuses_a_checkpoint_written_without_it(tmp_path, compose_cfg):
    import dataclasses

    from jepa_zoo.checkpointing import check_compatible
    from jepa_zoo.config import ConfigError, validate

    plain = validate(compose_cfg("data=fake"))
    fsdp = validate(compose_cfg("data=fake", "trainer.strategy=fsdp"))
    for tc, name in ((plain, "plain.ckpt"), (fsdp, "fsdp.ckpt")):
        torch.save({"hyper_parameters": {"cfg": dataclasses.asdict(tc)}}, tmp_path / name)
    check_compatible(str(tmp_path / "fsdp.ckpt"), fsdp)
    check_compatible(str(tmp_path / "fsdp.ckpt"), plain)  # fsdp -> DDP or one process: its order maps back
    with pytest.raises(ConfigError, match="not written under trainer.strategy=fsdp"):
        check_compatible(str(tmp_path / "plain.ckpt"), fsdp)
