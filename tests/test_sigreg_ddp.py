"""SIGReg under DDP (2 gloo processes) equals single-process SIGReg on the concatenated batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from jepa_zoo.losses.sigreg import SIGReg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(6, 5)


def _data() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(64, 6, generator=g) * 3 - 1  # non-Gaussian so the gradient is large


def _worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = DDP(_model())
        x = _data().chunk(world)[rank]
        loss = SIGReg(num_slices=32)(model(x), step=3)
        loss.backward()
        out[rank] = (loss.detach().clone(), model.module.weight.grad.clone(), model.module.bias.grad.clone())
    finally:
        dist.destroy_process_group()


@pytest.mark.integration
def test_ddp_loss_and_gradient_match_single_process():
    model = _model()
    loss = SIGReg(num_slices=32)(model(_data()), step=3)
    loss.backward()

    world = 2
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(world, _free_port(), out), nprocs=world, join=True)

    for rank in range(world):
        r_loss, r_w, r_b = out[rank]
        assert torch.allclose(r_loss, loss.detach(), rtol=1e-5), (rank, r_loss, loss)
        # DDP has averaged the per-rank gradients: each rank holds the single-process gradient
        assert torch.allclose(r_w, model.weight.grad, rtol=1e-4, atol=1e-6)
        assert torch.allclose(r_b, model.bias.grad, rtol=1e-4, atol=1e-6)
    assert model.weight.grad.abs().max() > 1e-3  # the comparison is not trivially 0 == 0
