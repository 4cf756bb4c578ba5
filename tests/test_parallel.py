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


REDUCE_COUNT = r"""
import os, socket, sys
import torch, torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
import torch.distributed.fsdp._fully_shard._fsdp_param_group as group
from jepa_zoo.parallel import FSDPStrategy, shard_

s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
dist.init_process_group("gloo", rank=0, world_size=1)
model = nn.Module()
model.backbone = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
shard_(model, init_device_mesh("cpu", (1,)))
calls = []
real = group.foreach_reduce
group.foreach_reduce = lambda *a, **k: calls.append(1) or real(*a, **k)
for every in (True, False):
    strategy = FSDPStrategy(reduce_every_micro_batch=every)
    strategy._lightning_module = model
    with strategy.block_backward_sync():  # a micro-batch before an accumulation's last
        model.backbone(torch.randn(2, 4)).sum().backward()
    blocked = len(calls)
    model.backbone(torch.randn(2, 4)).sum().backward()  # the last micro-batch
    print(every, blocked, len(calls) - blocked)
    calls.clear()
dist.destroy_process_group()
"""


@pytest.mark.integration
def test_reduce_every_micro_batch_false_defers_the_reduce_scatter():
    """fsdp.reduce_every_micro_batch=false: no gradient reduction in the blocked backward (Lightning
    blocks all micro-batches of an accumulation but the last), and sync is restored for the last.
    That the accumulated result is DDP's is checked end to end in test_ddp.py."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", REDUCE_COUNT], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line.split() for line in r.stdout.strip().splitlines()]
    (every, blocked, last), (every2, blocked2, last2) = rows
    assert every == "True" and int(blocked) > 0 and int(last) > 0  # default: each micro-batch reduces
    assert every2 == "False" and int(blocked2) == 0 and int(last2) > 0
