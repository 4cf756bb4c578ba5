"""EMA target encoders: momentum schedule and a fused in-place update."""

from __future__ import annotations

import copy
from typing import List

import torch
from torch import nn


def ema_momentum(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """Linear ``start -> end`` over ``total_steps`` (I-JEPA): ``m(s) = start + (end − start)·min(s/T, 1)``.

    A pure function of the optimiser step, so a resumed run gets the exact value.
    """
    if total_steps <= 0:
        return end
    return start + (end - start) * min(step / total_steps, 1.0)


def make_target(online: nn.Module) -> nn.Module:
    """A frozen copy of ``online`` (no gradients, eval-mode independent of training)."""
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``θ_t ← m·θ_t + (1 − m)·θ_o`` for every parameter, with one fused foreach op.

    Buffers (e.g. BatchNorm statistics) are copied from the online network.
    """
    t_params: List[torch.Tensor] = list(target.parameters())
    o_params: List[torch.Tensor] = list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError("target and online networks have different parameter lists")
    torch._foreach_lerp_(t_params, o_params, 1.0 - momentum)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)
