"""3-D rotary position embeddings (V-JEPA 2) for timm's ``AttentionRope``.

A token at frame (tubelet) ``i``, row ``r`` and column ``c`` of a ``(t, h, w)`` grid rotates, in every
head of width ``d``, three chunks of ``m = 2·⌊⌊d/3⌋/2⌋`` channels each by its three coordinates; the
last ``d − 3m`` channels are not rotated.  Within a chunk for coordinate ``p``, with
``ω_k = 10000^(−k/(m/2))``, ``k = 0 .. m/2 − 1``, the channel pairs ``(2j, 2j+1)`` turn as::

    q'_{2j}   = q_{2j}   cos θ_{2j}   − q_{2j+1} sin θ_{2j}
    q'_{2j+1} = q_{2j+1} cos θ_{2j+1} + q_{2j}   sin θ_{2j+1}

    layout "vjepa2":      θ_n = p · ω_{n mod m/2}       (the official code and its released weights)
    layout "interleaved": θ_n = p · ω_{⌊n/2⌋}           (a true rotation of each pair)

The official code builds its angles with ``repeat`` where ``repeat_interleave`` was meant, so the two
channels of a pair get different angles (``"vjepa2"``); it keeps that for its checkpoints, and so must
anyone who loads them.  ``"interleaved"`` is the rotation the paper describes, for new models.
Coordinates are integers in patch units (no rescaling).  :func:`rope_3d` returns the
``[sin | cos]`` table timm's ``apply_rot_embed_cat`` takes (its interleaved pairs are the official
ones: ``rot(q) = [−q_1, q_0, −q_3, q_2, …]``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

LAYOUTS = ("vjepa2", "interleaved")


def rope_chunk(head_dim: int) -> int:
    """``m``: the channels per coordinate in a head of width ``head_dim``."""
    return 2 * ((head_dim // 3) // 2)


def token_coords(idx: Tensor, grid: Sequence[int]) -> Tensor:
    """``(i, r, c)`` of token indices ``idx [...]`` in a ``(t, h, w)`` grid ordered time, row,
    column: ``[..., 3]`` (long)."""
    _, h, w = (int(g) for g in grid)
    return torch.stack([idx // (h * w), (idx // w) % h, idx % w], dim=-1)


def rope_3d(coords: Tensor, head_dim: int, layout: str = "vjepa2") -> Tensor:
    """The ``[sin | cos]`` table ``[..., N, 2·head_dim]`` (float32) of tokens at ``coords [..., N, 3]``."""
    if layout not in LAYOUTS:
        raise ValueError(f"RoPE layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    m = rope_chunk(head_dim)
    if m < 2:
        raise ValueError(f"a head of width {head_dim} is too narrow for 3-D RoPE (needs >= 6)")
    omega = 1.0 / 10000 ** (torch.arange(m // 2, dtype=torch.float32, device=coords.device) / (m / 2))
    freq = omega.repeat(2) if layout == "vjepa2" else omega.repeat_interleave(2)  # [m]
    angles = coords.float().unsqueeze(-1) * freq  # [..., N, 3, m]
    angles = angles.flatten(-2)  # [..., N, 3m]: time chunk, row chunk, column chunk
    rest = head_dim - 3 * m
    sin, cos = angles.sin(), angles.cos()
    if rest:
        pad = angles.new_zeros(*angles.shape[:-1], rest)
        sin, cos = torch.cat([sin, pad], dim=-1), torch.cat([cos, pad + 1], dim=-1)
    return torch.cat([sin, cos], dim=-1)
