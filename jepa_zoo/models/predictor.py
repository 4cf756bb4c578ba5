"""The I-JEPA predictor: a narrow ViT from timm blocks that fills in target positions.

Given context tokens ``z [B, K_c, D_enc]`` at patch indices ``ctx [B, K_c]``
and ``T`` target blocks ``tgt [B, T, K_t]``::

    u   = Linear(z) + pe[ctx]                              (B, K_c, D_p)
    m_t = mask_token + pe[tgt_t]                           (B, T, K_t, D_p)
    s_t = [u ; m_t]     for every block t, as one batch    (B·T, K_c + K_t, D_p)
    ŷ_t = Linear(norm(blocks(s_t))[K_c:])                  (B, T, K_t, D_enc)

``pe`` are fixed 2-D sin-cos embeddings of the predictor width (in the encoder's channel order,
:mod:`jepa_zoo.models.posembed`); LayerNorm eps is 1e-6, as in the official predictor, whose
weights load into this one (:mod:`jepa_zoo.weights.official_ijepa`).  All target
blocks go through the blocks in one batched pass (the context is repeated
``T`` times), and a block never sees another block's mask tokens.

IWM's world model conditions the prediction on an action ``a [B, A]``:

* ``conditioning="feature"`` (IWM's default): ``m_t ← MLP([m_t ; a])``, the
  action concatenated to every position-embedded mask token and mixed back
  to width ``D_p`` by a 3-layer MLP;
* ``conditioning="sequence"``: ``A`` action tokens ``a_i·w_i + b_i`` (one
  ``Linear(1 → D_p)`` per scalar) appended to each block's sequence and
  dropped at the output;
* ``conditioning="none"``: no action (I-JEPA; IWM's ablation).
"""

from __future__ import annotations

from functools import partial
from typing import Optional, Tuple

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from jepa_zoo.models.posembed import sincos_2d


CONDITIONING = ("none", "feature", "sequence")


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
        conditioning: str = "none",
        action_dim: int = 0,
        sincos_order: str = "ijepa",
    ):
        super().__init__()
        if pred_dim % num_heads:
            raise ValueError(f"predictor width {pred_dim} is not divisible by {num_heads} heads")
        if conditioning not in CONDITIONING:
            raise ValueError(f"conditioning must be one of {', '.join(CONDITIONING)}; got {conditioning!r}")
        if conditioning != "none" and action_dim < 1:
            raise ValueError(f"conditioning={conditioning} needs action_dim >= 1, got {action_dim}")
        self.conditioning = conditioning
        self.action_dim = action_dim if conditioning != "none" else 0
        if conditioning == "feature":
            self.action_mlp = nn.Sequential(
                nn.Linear(pred_dim + action_dim, pred_dim), nn.GELU(),
                nn.Linear(pred_dim, pred_dim), nn.GELU(),
                nn.Linear(pred_dim, pred_dim),
            )
        elif conditioning == "sequence":
            self.action_weight = nn.Parameter(torch.zeros(action_dim, pred_dim))
            self.action_bias = nn.Parameter(torch.zeros(action_dim, pred_dim))
            trunc_normal_(self.action_weight, std=0.02)
            trunc_normal_(self.action_bias, std=0.02)
        self.grid_size = tuple(grid_size)
        self.embed = nn.Linear(embed_dim, pred_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, pred_dim))
        self.register_buffer(
            "pos_embed", sincos_2d(self.grid_size, pred_dim, sincos_order), persistent=False
        )
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        norm = partial(nn.LayerNorm, eps=1e-6)  # the official predictor's (and timm's ViT's)
        self.blocks = nn.Sequential(
            *[Block(pred_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=dpr[i], norm_layer=norm)
              for i in range(depth)]
        )
        self.norm = norm(pred_dim)
        self.proj = nn.Linear(pred_dim, embed_dim)
        trunc_normal_(self.mask_token, std=0.02)

    def forward(self, z: Tensor, ctx: Tensor, tgt: Tensor, action: Optional[Tensor] = None) -> Tensor:
        """``z [B, K_c, D]``, ``ctx [B, K_c]``, ``tgt [B, T, K_t]`` (and ``action [B, A]`` when
        conditioned) -> predictions ``[B, T, K_t, D]``."""
        if z.dim() != 3 or ctx.shape != z.shape[:2]:
            raise ValueError(f"z must be [B, K_c, D] matching ctx [B, K_c]; got {tuple(z.shape)}, {tuple(ctx.shape)}")
        if tgt.dim() != 3 or tgt.shape[0] != z.shape[0]:
            raise ValueError(f"tgt must be [B={z.shape[0]}, T, K_t], got {tuple(tgt.shape)}")
        if self.conditioning != "none" and (action is None or action.shape != (z.shape[0], self.action_dim)):
            got = None if action is None else tuple(action.shape)
            raise ValueError(
                f"conditioning={self.conditioning} needs action [B={z.shape[0]}, {self.action_dim}], got {got}"
            )
        b, kc, _ = z.shape
        _, t, kt = tgt.shape
        pe = self.pos_embed.to(z.dtype)
        u = self.embed(z) + pe[ctx]  # (B, K_c, D_p)
        m = self.mask_token.to(u.dtype) + pe[tgt]  # (B, T, K_t, D_p)
        parts = [u.unsqueeze(1).expand(-1, t, -1, -1), m]
        if self.conditioning == "feature":
            a = action.to(m.dtype)[:, None, None, :].expand(-1, t, kt, -1)
            parts[1] = self.action_mlp(torch.cat([m, a], dim=-1))
        elif self.conditioning == "sequence":
            tokens = action.to(u.dtype)[..., None] * self.action_weight + self.action_bias  # (B, A, D_p)
            parts.append(tokens.unsqueeze(1).expand(-1, t, -1, -1))
        seq = torch.cat(parts, dim=2)  # (B, T, K_c + K_t [+ A], D_p)
        out = self.norm(self.blocks(seq.flatten(0, 1)))[:, kc : kc + kt]
        return self.proj(out).view(b, t, kt, -1)

    def predict_all(self, z: Tensor, action: Optional[Tensor] = None) -> Tensor:
        """The predictor as a world model: every token of ``z [B, N, D]`` visible and a mask token at
        every position, one target -> ``[B, N, D]``.  A conditioned predictor takes ``action [B, A]``
        (None: the null action, zeros); an unconditioned one ignores it."""
        b, n, _ = z.shape
        if self.action_dim and action is None:
            action = z.new_zeros(b, self.action_dim)
        idx = torch.arange(n, device=z.device).expand(b, n)
        return self(z, idx, idx[:, None, :], action if self.action_dim else None)[:, 0]
