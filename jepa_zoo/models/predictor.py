"""The I-JEPA predictor: a narrow ViT from timm blocks that fills in target positions.

Given context tokens ``z [B, K_c, D_enc]`` at patch indices ``ctx [B, K_c]``
and ``T`` target blocks ``tgt [B, T, K_t]``::

    u   = Linear(z) + pe[ctx]                              (B, K_c, D_p)
    m_t = mask_token + pe[tgt_t]                           (B, T, K_t, D_p)
    s_t = [u ; m_t]     for every block t, as one batch    (B·T, K_c + K_t, D_p)
    ŷ_t = Linear(norm(blocks(s_t))[K_c:])                  (B, T, K_t, D_enc)

``pe`` are fixed 2-D sin-cos embeddings of the predictor width.  All target
blocks go through the blocks in one batched pass (the context is repeated
``T`` times), and a block never sees another block's mask tokens.
"""

from __future__ import annotations

from typing import Tuple

import torch
from timm.layers import build_sincos2d_pos_embed, trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn


class Predictor(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        grid_size: Tuple[int, int],
        pred_dim: int = 384,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if pred_dim % num_heads:
            raise ValueError(f"predictor width {pred_dim} is not divisible by {num_heads} heads")
        self.grid_size = tuple(grid_size)
        self.embed = nn.Linear(embed_dim, pred_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, pred_dim))
        self.register_buffer(
            "pos_embed", build_sincos2d_pos_embed(list(self.grid_size), dim=pred_dim), persistent=False
        )
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.Sequential(
            *[Block(pred_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=dpr[i]) for i in range(depth)]
        )
        self.norm = nn.LayerNorm(pred_dim)
        self.proj = nn.Linear(pred_dim, embed_dim)
        trunc_normal_(self.mask_token, std=0.02)

    def forward(self, z: Tensor, ctx: Tensor, tgt: Tensor) -> Tensor:
        """``z [B, K_c, D]``, ``ctx [B, K_c]``, ``tgt [B, T, K_t]`` -> predictions ``[B, T, K_t, D]``."""
        if z.dim() != 3 or ctx.shape != z.shape[:2]:
            raise ValueError(f"z must be [B, K_c, D] matching ctx [B, K_c]; got {tuple(z.shape)}, {tuple(ctx.shape)}")
        if tgt.dim() != 3 or tgt.shape[0] != z.shape[0]:
            raise ValueError(f"tgt must be [B={z.shape[0]}, T, K_t], got {tuple(tgt.shape)}")
        b, kc, _ = z.shape
        _, t, kt = tgt.shape
        pe = self.pos_embed.to(z.dtype)
        u = self.embed(z) + pe[ctx]  # (B, K_c, D_p)
        m = self.mask_token.to(u.dtype) + pe[tgt]  # (B, T, K_t, D_p)
        seq = torch.cat([u.unsqueeze(1).expand(-1, t, -1, -1), m], dim=2)  # (B, T, K_c + K_t, D_p)
        out = self.norm(self.blocks(seq.flatten(0, 1)))[:, kc:]
        return self.proj(out).view(b, t, kt, -1)
