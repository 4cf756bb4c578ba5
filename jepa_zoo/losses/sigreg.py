"""SIGReg: Sketched Isotropic Gaussian Regularisation (LeJEPA, Balestriero & LeCun 2025).

SIGReg pushes the embedding distribution towards an isotropic Gaussian by
testing random 1-D projections of it with the Epps–Pulley characteristic
function statistic.

For projected samples ``x_1..x_N`` of one slice and quadrature nodes
``t_k = k · t_max / (P − 1)``, ``k = 0..P−1``::

    C(t)   = 1/N Σ_n cos(t x_n)          S(t) = 1/N Σ_n sin(t x_n)
    err(t) = (C(t) − exp(−t²/2))² + S(t)²
    w_k    = c_k · Δ · exp(−t_k²/2),     Δ = t_max / (P − 1),
             c_0 = c_{P−1} = 1, otherwise 2
    T      = N · Σ_k w_k · err(t_k)

``err`` is even in ``t``, so the trapezoid rule on ``[−t_max, t_max]`` folds
onto ``[0, t_max]`` with the interior weights doubled (``c_k``).  ``N`` is the
*global* sample count: under DDP, ``C`` and ``S`` are averaged over every
rank's samples with a gradient-carrying all-reduce, so the statistic equals
the one computed on the concatenated batch.

Reference values: ``E[T] ≈ 1.05`` for Gaussian data (finite-``t_max``
bias), and total collapse at zero gives ``T / N ≈ 0.402``.

The nodes are evenly spaced, so ``cos(t_k x) + i·sin(t_k x) = (cos(Δx) + i·sin(Δx))^k``:
one cosine and one sine per sample and slice, then ``P − 2`` complex multiplications
(:class:`CharacteristicSums`), instead of ``2P`` transcendental calls on an ``(N, K, P)``
tensor; the backward, ``∂C_k/∂x_n = −t_k sin(t_k x_n)/N`` and ``∂S_k/∂x_n = t_k cos(t_k x_n)/N``,
runs the same recurrence.  In fp32 it agrees with the direct evaluation to about 1e-6 relative
(``tests/test_sigreg.py``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["epps_pulley", "SIGReg", "slice_directions"]


def _world_size() -> int:
    """World size read at call time (never cached at construction)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _global_sum(x: Tensor) -> Tensor:
    """Sum over ranks with an autograd-aware all-reduce; identity without DDP.

    The backward of a sum-all-reduce is a sum-all-reduce of the incoming
    gradients, so after DDP averages parameter gradients over ``W`` ranks the
    result is exactly the single-process gradient on the concatenated batch.
    """
    if _world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x, op=dist.ReduceOp.SUM)


class CharacteristicSums(torch.autograd.Function):
    """``(Σ_n cos(k·Δ·x_n), Σ_n sin(k·Δ·x_n))`` for ``k = 0..P−1``, ``(..., K, P)`` each, from fp32
    samples ``x (..., N, K)``, by the complex recurrence of the module docstring, forward and
    backward; only ``x`` is saved (the powers are recomputed in the backward)."""

    @staticmethod
    def _powers(x: Tensor, dt: float, num_points: int):
        c1, s1 = torch.cos(x * dt), torch.sin(x * dt)
        c, s = torch.ones_like(x), torch.zeros_like(x)
        yield c, s
        c, s = c1, s1
        for _ in range(1, num_points):
            yield c, s
            c, s = torch.addcmul(c * c1, s, s1, value=-1.0), torch.addcmul(s * c1, c, s1)

    @staticmethod
    def forward(ctx, x: Tensor, dt: float, num_points: int):
        ctx.save_for_backward(x)
        ctx.dt, ctx.num_points = dt, num_points
        sums = [(c.sum(dim=-2), s.sum(dim=-2)) for c, s in CharacteristicSums._powers(x, dt, num_points)]
        return torch.stack([c for c, _ in sums], dim=-1), torch.stack([s for _, s in sums], dim=-1)

    @staticmethod
    def backward(ctx, grad_cos: Tensor, grad_sin: Tensor):
        (x,) = ctx.saved_tensors
        grad = torch.zeros_like(x)
        for k, (c, s) in enumerate(CharacteristicSums._powers(x, ctx.dt, ctx.num_points)):
            if k == 0:
                continue  # t_0 = 0: constant in x
            t = k * ctx.dt
            # d cos(t x)/dx = -t sin(t x), d sin(t x)/dx = t cos(t x); the sums broadcast over N
            grad.addcmul_(s, grad_cos[..., None, :, k], value=-t).addcmul_(c, grad_sin[..., None, :, k], value=t)
        return grad, None, None


def epps_pulley(x: Tensor, t_max: float = 3.0, num_points: int = 17, distributed: bool = True) -> Tensor:
    """Per-slice Epps–Pulley statistic of projected samples (see module docstring).

    Args:
        x: projected samples ``(..., N, K)``: ``N`` samples of ``K`` slices.
        t_max: upper end of the integration interval ``[0, t_max]``.
        num_points: quadrature nodes ``P`` (odd, ≥ 3).
        distributed: average over all ranks of an initialised process group
            (every rank must call it); ``False`` keeps it local.

    Returns:
        ``(..., K)`` statistics, computed in fp32 whatever the input dtype or
        autocast state.  Under an initialised process group the characteristic
        function is averaged over all ranks and ``N`` is the global count.
    """
    if x.dim() < 2:
        raise ValueError(f"epps_pulley expects (..., N, K) samples, got shape {tuple(x.shape)}")
    if num_points < 3:
        raise ValueError(f"num_points must be >= 3, got {num_points}")
    if not t_max > 0:
        raise ValueError(f"t_max must be > 0, got {t_max}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        t = torch.linspace(0.0, t_max, num_points, device=x.device, dtype=torch.float32)
        window = torch.exp(-0.5 * t.square())
        weights = torch.full_like(t, 2.0 * t_max / (num_points - 1))
        weights[0] = weights[-1] = t_max / (num_points - 1)
        weights = weights * window

        reduce = _global_sum if distributed else (lambda v: v)
        cos_local, sin_local = CharacteristicSums.apply(x, t_max / (num_points - 1), num_points)  # (..., K, P)
        cos_sum, sin_sum = reduce(cos_local), reduce(sin_local)
        n = reduce(torch.full((), float(x.shape[-2]), device=x.device, dtype=torch.float32))  # a fill: no host sync
        err = (cos_sum / n - window).square() + (sin_sum / n).square()
        return (err * weights).sum(dim=-1) * n


def slice_directions(
    dim: int, num_slices: int, seed: int, step: int, device: torch.device | str = "cpu"
) -> Tensor:
    """Unit-norm Gaussian directions ``(dim, num_slices)``, a pure function of (seed, step).

    Drawn on a CPU generator so every rank and every resumed run gets exactly
    the same directions for the same step, whatever the device.
    """
    gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) % (2**63 - 1))
    a = torch.randn(dim, num_slices, generator=gen, dtype=torch.float32)  # not the default dtype (bf16-true)
    a = a / a.norm(dim=0, keepdim=True)
    if torch.device(device).type == "cuda":  # pinned + non_blocking: the copy does not stall the host
        return a.pin_memory().to(device, non_blocking=True)
    return a.to(device)


class SIGReg(nn.Module):
    """Sliced Epps–Pulley test towards an isotropic Gaussian.

    ``forward(z, step=None)`` takes embeddings ``(..., N, D)`` (leading dims
    are, e.g., views, each tested separately) and returns the scalar mean
    statistic over slices and leading dims.  Directions are resampled every
    step as a deterministic function of ``(seed, step)``; without ``step`` an
    internal call counter (saved in the state dict) is used.
    """

    def __init__(self, num_slices: int = 1024, t_max: float = 3.0, num_points: int = 17, seed: int = 0):
        super().__init__()
        if num_slices < 1:
            raise ValueError(f"num_slices must be >= 1, got {num_slices}")
        self.num_slices = num_slices
        self.t_max = t_max
        self.num_points = num_points
        self.seed = seed
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, z: Tensor, step: Optional[int] = None) -> Tensor:
        if z.dim() < 2:
            raise ValueError(f"SIGReg expects (..., N, D) embeddings, got shape {tuple(z.shape)}")
        if step is None:
            step = int(self.calls)  # host read: pass ``step`` in training loops
            self.calls += 1
        with torch.autocast(device_type=z.device.type, enabled=False):
            a = slice_directions(z.shape[-1], self.num_slices, self.seed, step, z.device)
            proj = z.float() @ a  # (..., N, num_slices)
            return epps_pulley(proj, self.t_max, self.num_points).mean()

    def extra_repr(self) -> str:
        return f"num_slices={self.num_slices}, t_max={self.t_max}, num_points={self.num_points}"


def collapse_value(t_max: float = 3.0, num_points: int = 17) -> float:
    """``T / N`` for samples all at zero: ``Σ_k w_k (1 − exp(−t_k²/2))²``."""
    dt = t_max / (num_points - 1)
    total = 0.0
    for k in range(num_points):
        t = k * dt
        c = 1.0 if k in (0, num_points - 1) else 2.0
        g = math.exp(-0.5 * t * t)
        total += c * dt * g * (1.0 - g) ** 2
    return total
