"""EMA target encoders: momentum schedule, a fused in-place update, and :class:`EMATeacher`, the
component a method holds to keep one (I-JEPA and IWM; any method with an EMA target)."""

from __future__ import annotations

import copy
from typing import List, Optional

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


class EMATeacher:
    """The EMA schedule and update of a target network.  ``collapse=ema`` holds one for every method
    (:mod:`jepa_zoo.methods.collapse`); a method keeping a target of its own (under ``collapse=none``)
    holds it so::

        self.target_encoder = make_target(self.backbone)            # in __init__
        self.ema = EMATeacher(start, end)
        self.ema.update_(self.target_encoder, self.backbone, step, total)   # once per optimiser step

    The momentum is a pure function of the optimiser step (:func:`ema_momentum`), so a resumed run
    continues with the exact value; the update is one foreach lerp over the parameters, which works
    on FSDP-sharded parameters shard by shard (target and online are sharded alike).  The target
    itself stays a plain submodule of the method (its checkpoint keys are the method's to name)."""

    def __init__(self, start: float = 0.996, end: float = 1.0):
        if not 0 <= start <= end <= 1:
            raise ValueError(f"EMA momentum: expected 0 <= start <= end <= 1, got {start}, {end}")
        self.start, self.end = start, end
        self.last_momentum: Optional[float] = None  # the latest update's, for logging

    def momentum(self, step: int, total_steps: int) -> float:
        return ema_momentum(step, total_steps, self.start, self.end)

    def update_(self, target: nn.Module, online: nn.Module, step: int, total_steps: int) -> float:
        """``target ← m·target + (1 − m)·online`` with the momentum of ``step``; returns ``m``."""
        self.last_momentum = self.momentum(step, total_steps)
        ema_update_(target, online, self.last_momentum)
        return self.last_momentum
