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
