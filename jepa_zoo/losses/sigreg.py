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

The nodes are evenly spaced, so with ``k = a + m·b`` (``m = ⌈√P⌉``, ``0 ≤ a < m``,
``0 ≤ b < ⌈P/m⌉``) ``e^{i t_k x} = e^{i aΔx} · e^{i bmΔx}``; writing ``α = aΔx_n``, ``β = bmΔx_n``::

    Σ_n cos(t_k x_n) = Σ_n (cos β cos α − sin β sin α)
    Σ_n sin(t_k x_n) = Σ_n (cos β sin α + sin β cos α)

so every sum over ``n`` is an entry of one matrix product per slice, ``G = L Rᵀ``, with the rows
``L = [cos β; sin β]`` and ``R = [cos α; sin α]`` (``N`` columns; the smaller group padded to the
larger with unused rows) (:class:`CharacteristicSums`).  For ``P = 17`` (``m = 5``, 4 values of
``b``) that is 16 sines and cosines per sample and slice instead of 34 (the rows at ``α = 0`` and
``β = 0`` are the constants 1 and 0), and no ``(N, K, P)`` tensor.  The backward::

    ∂/∂x_n Σ_k (g^C_k C_k + g^S_k S_k) = Σ_k t_k (g^S_k cos(t_k x_n) − g^C_k sin(t_k x_n)) = L_nᵀ M R_n,
    M = [[H^S, −H^C], [−H^C, −H^S]],   H^•_{b,a} = t_{a+mb} g^•_{a+mb}  (0 where a + mb ≥ P),

recomputes the rows and takes one more batched product.  Both run over chunks of slices, four
large ops per chunk forward (arguments, cosines, sines, product) and six backward, with a bounded
working set: on CPU about 2.5 MiB, which stays in cache.  On CPU they run on one intra-op thread
by default (``cpu_threads``), as do the directions and the projection in :class:`SIGReg`: each
parallel op ends in a thread synchronisation, which beside loader workers or any other busy
process on the cores costs milliseconds (``docs/performance.md``, "Threads under load").  In fp32 the sums and
the gradient agree with float64 evaluation to better than 1e-6 relative (``tests/test_sigreg.py``).
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["epps_pulley", "SIGReg", "slice_directions", "intra_op_threads"]


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


#: samples × slices per chunk, at about 150 bytes each (rows, arguments, the backward's ``M R``):
#: on CPU a working set of about 2.5 MiB that stays in cache (1 << 13 … 1 << 15 measured best on
#: the 2-core Xeon of docs/performance.md); elsewhere large chunks, few kernel launches.
CHUNK_SAMPLES = {"cpu": 1 << 14}
CHUNK_SAMPLES_OTHER = 1 << 21


@contextlib.contextmanager
def intra_op_threads(n: Optional[int]):
    """Run torch CPU ops with ``n`` intra-op threads, then restore the previous count (``None``: unchanged)."""
    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class CharacteristicSums(torch.autograd.Function):
    """``(Σ_n cos(k·Δ·x_n), Σ_n sin(k·Δ·x_n))`` for ``k = 0..P−1``, ``(..., K, P)`` each, from
    samples ``x (..., N, K)``, by the factorisation of the module docstring, forward and backward;
    only ``x`` is saved (the rows are recomputed in the backward).  ``cpu_threads``: intra-op
    threads on CPU (``None``: torch's setting)."""

    @staticmethod
    def _plan(dt: float, num_points: int, x: Tensor):
        m = math.ceil(math.sqrt(num_points))
        nb = math.ceil(num_points / m)
        r = max(m, nb)  # rows per group: the smaller group gets finite, unused rows
        k = torch.arange(1, r, device=x.device, dtype=x.dtype)  # made on the device: no host copy
        freq = torch.stack([k * (m * dt), k * dt])[..., None]  # β rows: multiples of m·Δ; α rows: of Δ
        rows = max(1, CHUNK_SAMPLES.get(x.device.type, CHUNK_SAMPLES_OTHER) // max(1, x.shape[-2]))
        return m, nb, r, freq, rows

    @staticmethod
    def _slices(x: Tensor) -> Tensor:
        """``(..., N, K)`` → ``(S, N)``, one contiguous row per (leading index, slice)."""
        return x.reshape(-1, *x.shape[-2:]).transpose(1, 2).reshape(-1, x.shape[-2]).contiguous()

    @staticmethod
    def _rows(xs: Tensor, freq: Tensor, buf: Tensor) -> Tensor:
        """Fill ``buf (s, 2, 2, r, N)`` (group β/α, cos/sin, frequency) for the samples ``xs (s, N)``."""
        arg = xs[:, None, None, :] * freq  # (s, 2, r − 1, N)
        torch.cos(arg, out=buf[:, :, 0, 1:])
        torch.sin(arg, out=buf[:, :, 1, 1:])
        return buf

    @staticmethod
    def _buffer(xs: Tensor, rows: int, r: int) -> Tensor:
        buf = xs.new_empty(min(rows, xs.shape[0]), 2, 2, r, xs.shape[1])
        buf[:, :, 0, 0].fill_(1.0)  # cos 0
        buf[:, :, 1, 0].zero_()  # sin 0
        return buf

    @staticmethod
    def forward(ctx, x: Tensor, dt: float, num_points: int, cpu_threads: Optional[int] = 1):
        ctx.save_for_backward(x)
        ctx.dt, ctx.num_points, ctx.cpu_threads = dt, num_points, cpu_threads
        with intra_op_threads(cpu_threads if x.device.type == "cpu" else None):
            return CharacteristicSums._forward(x, dt, num_points)

    @staticmethod
    def _forward(x: Tensor, dt: float, num_points: int):
        m, nb, r, freq, rows = CharacteristicSums._plan(dt, num_points, x)
        xs = CharacteristicSums._slices(x)
        buf = CharacteristicSums._buffer(xs, rows, r)
        g = xs.new_empty(xs.shape[0], 2 * r, 2 * r)
        for s in range(0, xs.shape[0], rows):
            u = CharacteristicSums._rows(xs[s:s + rows], freq, buf[: min(rows, xs.shape[0] - s)])
            torch.bmm(u[:, 0].flatten(1, 2), u[:, 1].flatten(1, 2).mT, out=g[s:s + rows])  # L Rᵀ
        cc, cs = g[:, :nb, :m], g[:, :nb, r:r + m]  # [β row, α column]
        sc, ss = g[:, r:r + nb, :m], g[:, r:r + nb, r:r + m]
        out_shape = x.shape[:-2] + (x.shape[-1], num_points)
        cos_sums = (cc - ss).flatten(1)[:, :num_points].reshape(out_shape)  # k = a + m·b
        sin_sums = (cs + sc).flatten(1)[:, :num_points].reshape(out_shape)
        return cos_sums, sin_sums

    @staticmethod
    def backward(ctx, grad_cos: Tensor, grad_sin: Tensor):
        (x,) = ctx.saved_tensors
        with intra_op_threads(ctx.cpu_threads if x.device.type == "cpu" else None):
            return CharacteristicSums._backward(x, ctx.dt, ctx.num_points, grad_cos, grad_sin), None, None, None

    @staticmethod
    def _backward(x: Tensor, dt: float, p: int, grad_cos: Tensor, grad_sin: Tensor) -> Tensor:
        m, nb, r, freq, rows = CharacteristicSums._plan(dt, p, x)
        t = torch.arange(m * nb, device=x.device, dtype=x.dtype) * dt
        h_sin = (nn.functional.pad(grad_sin.reshape(-1, p), (0, m * nb - p)) * t).unflatten(1, (nb, m))
        h_cos = (nn.functional.pad(grad_cos.reshape(-1, p), (0, m * nb - p)) * t).unflatten(1, (nb, m))
        mat = h_sin.new_zeros(h_sin.shape[0], 2 * r, 2 * r)  # M, rows [cos β; sin β], columns [cos α; sin α]
        mat[:, :nb, :m], mat[:, :nb, r:r + m] = h_sin, -h_cos
        mat[:, r:r + nb, :m], mat[:, r:r + nb, r:r + m] = -h_cos, -h_sin
        xs = CharacteristicSums._slices(x)
        buf = CharacteristicSums._buffer(xs, rows, r)
        grad = torch.empty_like(xs)
        for s in range(0, xs.shape[0], rows):
            u = CharacteristicSums._rows(xs[s:s + rows], freq, buf[: min(rows, xs.shape[0] - s)])
            y = torch.bmm(mat[s:s + rows], u[:, 1].flatten(1, 2))  # M R: (s, 2r, N)
            torch.sum(y.mul_(u[:, 0].flatten(1, 2)), dim=1, out=grad[s:s + rows])  # L_nᵀ (M R_n)
        lead_nk = x.shape[:-2] + (x.shape[-1], x.shape[-2])
        return grad.reshape(lead_nk).transpose(-1, -2)


def epps_pulley(
    x: Tensor, t_max: float = 3.0, num_points: int = 17, distributed: bool = True, cpu_threads: Optional[int] = 1
) -> Tensor:
    """Per-slice Epps–Pulley statistic of projected samples (see module docstring).

    Args:
        x: projected samples ``(..., N, K)``: ``N`` samples of ``K`` slices.
        t_max: upper end of the integration interval ``[0, t_max]``.
        num_points: quadrature nodes ``P`` (odd, ≥ 3).
        distributed: average over all ranks of an initialised process group
            (every rank must call it); ``False`` keeps it local.
        cpu_threads: intra-op threads for the characteristic sums on CPU (``None``: torch's
            setting); 1 keeps them free of thread synchronisation (see module docstring).

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
        cos_local, sin_local = CharacteristicSums.apply(x, t_max / (num_points - 1), num_points, cpu_threads)
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
    internal call counter (saved in the state dict) is used.  ``cpu_threads``: see
    :func:`epps_pulley`.
    """

    def __init__(
        self, num_slices: int = 1024, t_max: float = 3.0, num_points: int = 17, seed: int = 0,
        cpu_threads: Optional[int] = 1,
    ):
        super().__init__()
        if num_slices < 1:
            raise ValueError(f"num_slices must be >= 1, got {num_slices}")
        self.num_slices = num_slices
        self.t_max = t_max
        self.num_points = num_points
        self.seed = seed
        self.cpu_threads = cpu_threads
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, z: Tensor, step: Optional[int] = None) -> Tensor:
        if z.dim() < 2:
            raise ValueError(f"SIGReg expects (..., N, D) embeddings, got shape {tuple(z.shape)}")
        if step is None:
            step = int(self.calls)  # host read: pass ``step`` in training loops
            self.calls += 1
        threads = self.cpu_threads if z.device.type == "cpu" else None
        with torch.autocast(device_type=z.device.type, enabled=False), intra_op_threads(threads):
            a = slice_directions(z.shape[-1], self.num_slices, self.seed, step, z.device)
            proj = (a.mT @ z.float().mT).mT  # (..., N, num_slices), stored slice-major as the sums read it
            return epps_pulley(proj, self.t_max, self.num_points, cpu_threads=self.cpu_threads).mean()

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
