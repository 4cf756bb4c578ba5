"""The V-JEPA / V-JEPA 2 predictor: a narrow ViT that fills in the masked tubelets of a clip.

Given context tokens ``z [B, K_c, D]`` at token indices ``ctx [B, K_c]`` of a ``(t, h, w)`` grid and
target indices ``tgt [B, K_t]``, for mask type ``j``::

    u = Linear(z) (+ pe[ctx])                        (B, K_c, D_p)
    m = mask_token[j] (+ pe[tgt])                    (B, K_t, D_p)
    ŷ = Linear(norm(blocks([u ; m]))[K_c:])          (B, K_t, D)

With ``pos="sincos"`` (V-JEPA) ``pe`` are fixed 3-D sin-cos embeddings of the predictor width; with
``pos="rope"`` (V-JEPA 2) nothing is added and every block rotates queries and keys by the tokens'
grid coordinates (:mod:`jepa_zoo.models.rope`).  V-JEPA keeps one mask token per mask type; the
official V-JEPA 2 code indexes its mask tokens by clip length instead, so at one clip length every
mask type uses ``mask_token[0]`` (the method's ``mask_token_per_type`` chooses).  The official V-JEPA 2
predictor sorts its tokens by position before the blocks and unsorts them after: attention without a
mask is permutation-equivariant, so that changes nothing and is not done here.

LayerNorm eps 1e-6, GELU, qkv bias, zero-initialised mask tokens, timm's truncated-normal init with
the official depth scaling; official weights load with the key map in
:mod:`jepa_zoo.weights.official_vjepa`.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
from timm.layers import trunc_normal_
from timm.models.eva import EvaBlock
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from jepa_zoo.models.posembed import sincos_3d
from jepa_zoo.models.rope import rope_3d, token_coords
from jepa_zoo.models.video import POS, rescale_blocks, run_blocks


class VideoPredictor(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        grid_size: Sequence[int],
        pred_dim: int = 384,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        pos: str = "sincos",
        rope_layout: str = "vjepa2",
        num_mask_tokens: int = 2,
    ):
        super().__init__()
        if pos not in POS:
            raise ValueError(f"pos must be one of {', '.join(POS)}, got {pos!r}")
        if pred_dim % num_heads:
            raise ValueError(f"predictor width {pred_dim} is not divisible by {num_heads} heads")
        if num_mask_tokens < 1:
            raise ValueError(f"num_mask_tokens must be >= 1, got {num_mask_tokens}")
        self.grid_size = tuple(int(g) for g in grid_size)
        self.pos = pos
        self.rope_layout = rope_layout
        self.head_dim = pred_dim // num_heads
        self.embed = nn.Linear(embed_dim, pred_dim)
        self.mask_tokens = nn.ParameterList([nn.Parameter(torch.zeros(1, 1, pred_dim)) for _ in range(num_mask_tokens)])
        if pos == "sincos":
            self.register_buffer("pos_embed", sincos_3d(self.grid_size, pred_dim), persistent=False)
        norm = partial(nn.LayerNorm, eps=1e-6)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        if pos == "sincos":
            blocks = [Block(pred_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=dpr[i], norm_layer=norm)
                      for i in range(depth)]
        else:
            blocks = [EvaBlock(pred_dim, num_heads, qkv_bias=True, qkv_fused=True, mlp_ratio=mlp_ratio,
                               num_prefix_tokens=0, attn_type="rope", drop_path=dpr[i], norm_layer=norm)
                      for i in range(depth)]
        self.blocks = nn.Sequential(*blocks)
        self.norm = norm(pred_dim)
        self.proj = nn.Linear(pred_dim, embed_dim)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        rescale_blocks(self.blocks)

    def forward(self, z: Tensor, ctx: Tensor, tgt: Tensor, mask_index: int = 0) -> Tensor:
        """``z [B, K_c, D]`` at ``ctx [B, K_c]``, targets ``tgt [B, K_t]`` -> ``[B, K_t, D]``."""
        if z.dim() != 3 or ctx.shape != z.shape[:2]:
            raise ValueError(f"z must be [B, K_c, D] matching ctx [B, K_c]; got {tuple(z.shape)}, {tuple(ctx.shape)}")
        if tgt.dim() != 2 or tgt.shape[0] != z.shape[0]:
            raise ValueError(f"tgt must be [B={z.shape[0]}, K_t], got {tuple(tgt.shape)}")
        kc = z.shape[1]
        u = self.embed(z)
        token = self.mask_tokens[mask_index % len(self.mask_tokens)].to(u.dtype)
        m = token.expand(tgt.shape[0], tgt.shape[1], -1)
        rope = None
        if self.pos == "sincos":
            pe = self.pos_embed.to(u.dtype)
            u, m = u + pe[ctx], m + pe[tgt]
        else:
            coords = token_coords(torch.cat([ctx, tgt], dim=1), self.grid_size)
            rope = rope_3d(coords, self.head_dim, self.rope_layout)[:, None]
        out = self.norm(run_blocks(self.blocks, torch.cat([u, m], dim=1), rope))[:, kc:]
        return self.proj(out)
