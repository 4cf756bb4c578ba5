"""Optimiser parameter groups and step schedules (pure functions of the step)."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from torch import nn

NO_DECAY_NAMES = ("pos_embed", "mask_token", "cls_token", "reg_token")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, final_ratio: float, start_ratio: float = 0.0) -> float:
    """LR multiplier at ``step``.

    Linear from ``start_ratio`` to 1 over ``warmup_steps``, then cosine from 1
    to ``final_ratio`` at ``total_steps``:
    ``m(s) = r + (1 − r)·½(1 + cos(π·(s − w)/(T − w)))`` for ``s ≥ w``; held at
    ``final_ratio`` past ``total_steps``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return start_ratio + (1.0 - start_ratio) * step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_constant(step: int, total_steps: float, warmup_steps: int, final_ratio: float, start_ratio: float = 0.0,
                    cooldown: float = 0.0) -> float:
    """LR multiplier of V-JEPA 2's schedule at ``step``: linear from ``start_ratio`` to 1 over
    ``warmup_steps``, then 1, then over the last ``cooldown`` fraction of ``total_steps`` linearly
    to ``final_ratio`` (held after): with ``c = (1 − cooldown)·T``,
    ``m(s) = 1 − (1 − r)·min((s − c)/(T − c), 1)`` for ``s ≥ c``.  ``cooldown = 1`` with no warm-up is
    a cooldown run of its own (the official one starts from the constant phase's checkpoint)."""
    if warmup_steps > 0 and step < warmup_steps:
        return start_ratio + (1.0 - start_ratio) * step / warmup_steps
    begin = (1.0 - cooldown) * total_steps
    if cooldown <= 0 or step < begin:
        return 1.0
    return 1.0 - (1.0 - final_ratio) * min((step - begin) / max(total_steps - begin, 1e-9), 1.0)


def cosine_ramp(step: int, total_steps: int, start: float, end: float) -> float:
    """Cosine from ``start`` at step 0 to ``end`` at ``total_steps`` (held after):
    ``v(s) = end + (start − end)·½(1 + cos(π·min(s/T, 1)))``.  I-JEPA's weight decay rises 0.04 → 0.4."""
    progress = min(max(step, 0) / max(total_steps, 1), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def time_horizon(step: int, elapsed: float, budget: float, planned: float,
                 since: Tuple[int, float] = (0, 0.0)) -> float:
    """The optimiser steps a time-budgeted run's schedules anneal over (``trainer.max_time``).

    At the pace measured since ``since = (step₀, elapsed₀)`` (this launch's first step: its start-up
    is left out), ``p = (step − step₀) / (elapsed − elapsed₀)`` steps a second, the budget holds
    ``T = step + p · (budget − elapsed)`` steps. With ``step₀ = 0`` a schedule's progress ``step / T``
    is exactly the budget spent, ``(elapsed − elapsed₀) / (budget − elapsed₀)``: it only grows, and
    ``T`` reaches ``step`` when the time runs out, so a cosine to ``T`` ends annealed whatever the
    machine's speed. Capped by ``planned`` (the steps ``max_steps`` / ``max_epochs`` allow, possibly
    infinite) and at least ``step + 1``; ``planned`` (or ``step + 1``) before a step has been timed."""
    s0, e0 = since
    if step <= s0 or elapsed <= e0:
        return float(max(planned, step + 1)) if math.isfinite(planned) else float(step + 1)
    estimate = step + (step - s0) / (elapsed - e0) * max(budget - elapsed, 0.0)
    return max(min(estimate, planned), step + 1.0)


def decay_split(named_params: Iterable[Tuple[str, nn.Parameter]]) -> Tuple[List[nn.Parameter], List[nn.Parameter]]:
    """(decay, no_decay): biases, norm weights (ndim ≤ 1) and position/mask/class tokens get no decay."""
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or any(k in name for k in NO_DECAY_NAMES):
            no_decay.append(p)
        else:
            decay.append(p)
    return decay, no_decay


def param_groups(module: nn.Module, weight_decay: float, exclude: Tuple[str, ...] = ()) -> List[Dict]:
    """AdamW groups for ``module`` (names starting with ``exclude`` are left out)."""
    named = ((n, p) for n, p in module.named_parameters() if not n.startswith(exclude))
    decay, no_decay = decay_split(named)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    return groups


def lr_schedule(o: Any, total: Callable[[], float], warmup: int) -> Callable[[int], float]:
    """The LR multiplier of optimiser step ``s`` under ``method.optim`` ``o``: warm-up then cosine, or then
    constant with its cooldown (``o.schedule``); ``total()`` is read at every step (under
    ``trainer.max_time`` the horizon the time budget allows moves)."""
    if o.schedule == "constant":
        return lambda s: warmup_constant(s, total(), warmup, o.final_lr_ratio, o.warmup_start_ratio, o.cooldown)
    return lambda s: warmup_cosine(s, total(), warmup, o.final_lr_ratio, o.warmup_start_ratio)


def warmup_length(trainer: Any, total: float, o: Any) -> int:
    """Warm-up optimiser steps: ``o.warmup_steps``, else ``o.warmup_epochs`` epochs of ``trainer``'s
    training batches (0 when an epoch has no known length), at most ``total``."""
    if o.warmup_steps is not None:
        return min(o.warmup_steps, total)
    batches = trainer.num_training_batches
    if not math.isfinite(batches) or batches <= 0:
        return 0
    per_epoch = max(int(batches) // trainer.accumulate_grad_batches, 1)
    return min(round(o.warmup_epochs * per_epoch), total)


def time_budget(trainer: Any) -> Optional[Tuple[float, float]]:
    """(training seconds spent, the budget) under ``trainer.max_time`` (Lightning's Timer, whose elapsed
    time a checkpoint keeps), rank 0's clock on every process; None without a budget."""
    from lightning.pytorch.callbacks import Timer

    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining("train") if timer is not None else None
    if remaining is None:
        return None
    elapsed = timer.time_elapsed("train")
    budget = elapsed + remaining
    if trainer.world_size > 1:  # one LR on every process
        elapsed, budget = trainer.strategy.broadcast((elapsed, budget), 0)
    return elapsed, budget
