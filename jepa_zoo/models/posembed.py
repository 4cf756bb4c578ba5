"""Fixed 2-D sin-cos position embeddings, in the two channel orders in use.

For a grid of ``h`` rows and ``w`` columns, tokens in raster order (row by row), ``D`` channels
(``D`` divisible by 4) and frequencies ``ω_k = 10000^(−k / (D/4))``, ``k = 0 .. D/4 − 1``, token
``(r, c)`` gets::

    "ijepa":  [ sin(c·ω) | cos(c·ω) | sin(r·ω) | cos(r·ω) ]     column first, float64
    "timm":   [ sin(r·ω) | sin(c·ω) | cos(r·ω) | cos(c·ω) ]     timm's build_sincos2d_pos_embed

``"ijepa"`` is the official I-JEPA code's (``get_2d_sincos_pos_embed``, from MAE), which its
released weights were trained with, computed in float64 as it does; jepa_zoo's default.
``"timm"`` is what jepa_zoo used before (checkpoints that do not record the order were trained
with it).  Loading official weights with the other order gives token errors of about 3.

Video (V-JEPA): a grid of ``t`` time steps (tubelets), ``h`` rows and ``w`` columns, tokens ordered
time, then row, then column; each axis gets ``a`` channels of its own 1-D ``[sin | cos]``::

    [ sincos_a(i) | sincos_a(r) | sincos_a(c) ][:D]      a = 2·ceil(D/6)   ("uniform power")
    [ sincos_{D/2}(i) | sincos_{D/4}(r) | sincos_{D/4}(c) ]                 (uniform_power=False)

(:func:`sincos_3d`; V-JEPA's released models use uniform power, cut to ``D`` channels.)
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from timm.layers import build_sincos2d_pos_embed
from torch import Tensor

ORDERS = ("ijepa", "timm")


def _sincos_1d(pos: Tensor, dim: int) -> Tensor:
    """``[sin(p·ω) | cos(p·ω)]`` for positions ``pos [N]`` (float64): ``[N, dim]``."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos[:, None] * omega[None, :]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(grid: Sequence[int], dim: int, order: str = "ijepa") -> Tensor:
    """The ``[h·w, dim]`` float32 embeddings of an ``(h, w)`` grid in ``order`` (module docstring)."""
    h, w = (int(g) for g in grid)
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
    if order == "timm":
        return build_sincos2d_pos_embed([h, w], dim=dim)
    if order != "ijepa":
        raise ValueError(f"position-embedding order must be one of {', '.join(ORDERS)}, got {order!r}")
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
    emb = torch.cat([_sincos_1d(cols.flatten(), dim // 2), _sincos_1d(rows.flatten(), dim // 2)], dim=1)
    return emb.float()


def sincos_3d(grid: Sequence[int], dim: int, uniform_power: bool = True) -> Tensor:
    """The ``[t·h·w, dim]`` float32 embeddings of a ``(t, h, w)`` video grid (module docstring)."""
    t, h, w = (int(g) for g in grid)
    if uniform_power:
        widths = (2 * math.ceil(dim / 6),) * 3
    else:
        if dim % 8:
            raise ValueError(f"a 3-D sin-cos embedding without uniform power needs a width divisible by 8, got {dim}")
        widths = (dim // 2, dim // 4, dim // 4)
    axes = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in (t, h, w)), indexing="ij")
    emb = torch.cat([_sincos_1d(a.flatten(), width) for a, width in zip(axes, widths)], dim=1)
    return emb[:, :dim].float()


def sincos_order_of(pe: Tensor, tol: float = 1e-4) -> Optional[str]:
    """The order (``"ijepa"`` or ``"timm"``) whose sin-cos embeddings of a square grid a stored
    ``pos_embed [1, N, D]`` (or ``[N, D]``) is, within ``tol``; None for anything else (learned
    embeddings, a class token, a grid that is not square)."""
    n, dim = pe.shape[-2], pe.shape[-1]
    grid = math.isqrt(n)
    if grid * grid != n or dim % 4:
        return None
    flat = pe.reshape(n, dim).float()
    return next((o for o in ORDERS if flat.sub(sincos_2d((grid, grid), dim, o)).abs().max() <= tol), None)
