"""The video ViT of V-JEPA and V-JEPA 2, on timm's ViT.

A clip ``x [B, C, T, H, W]`` is cut into tubelets of ``tubelet_size`` frames by ``patch`` x ``patch``
pixels by one ``Conv3d`` (kernel = stride = tubelet), giving a ``(T/τ, H/p, W/p)`` token grid ordered
time, then row, then column (``N = T/τ · H/p · W/p`` tokens of width ``D``).  Positions come in one of
two ways (``pos``):

* ``"sincos"`` (V-JEPA): fixed 3-D sin-cos embeddings (:func:`jepa_zoo.models.posembed.sincos_3d`)
  added to every token before masking; timm ``Block``s.
* ``"rope"`` (V-JEPA 2): no added embedding; every block rotates queries and keys by the tokens'
  ``(frame, row, column)`` (:mod:`jepa_zoo.models.rope`), through timm's ``EvaBlock`` with
  ``AttentionRope``.  Masked tokens keep their original coordinates.

The rest is the ViT every method shares: pre-norm blocks, LayerNorm eps 1e-6, GELU, qkv bias, no
CLS token, a final norm on every token; ``forward_tokens(x, idx)`` keeps only the tokens ``idx
[B, K]`` before the blocks, as the context encoder needs.  Images ``[B, C, H, W]`` go through as a
clip of the image repeated ``num_frames`` times (the official image evaluations do this), so image
datasets and protocols work with a video encoder; several clips of each video ``[B, k, C, T, H, W]``
give their tokens one after the other (pooled: the mean over every clip's tokens).  Parameter names are the official ones
(``patch_embed.proj``, ``blocks.i``, ``norm``), so official weights load without renaming.  Weights
start as timm's (truncated normal, std 0.02; the tubelet conv too, bias 0), with the official depth
scaling (:func:`rescale_blocks`).
"""

from __future__ import annotations

from functools import partial
from typing import Dict, Optional, Tuple

import timm
import torch
from timm.layers import trunc_normal_
from timm.models.eva import EvaBlock
from torch import Tensor, nn

from jepa_zoo.models.posembed import sincos_3d
from jepa_zoo.models.rope import rope_3d, token_coords

POS = ("sincos", "rope")


class TubeletEmbed(nn.Module):
    """``[B, C, T, H, W]`` -> ``[B, t, h, w, D]`` tubelet tokens (one Conv3d)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, tubelet_size: int):
        super().__init__()
        self.proj = nn.Conv3d(in_chans, embed_dim, (tubelet_size, patch_size, patch_size),
                              stride=(tubelet_size, patch_size, patch_size))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 4, 1)


def run_blocks(blocks: nn.Module, x: Tensor, rope: Optional[Tensor]) -> Tensor:
    """Apply ``blocks`` in turn, with the RoPE table when there is one."""
    for blk in blocks:
        x = blk(x) if rope is None else blk(x, rope=rope)
    return x


def video_block_fn(pos: str):
    """timm's ``block_fn`` for ``pos``: the stock ``Block`` (sin-cos) or ``EvaBlock`` with
    ``AttentionRope`` and no prefix tokens (RoPE)."""
    if pos not in POS:
        raise ValueError(f"video position encoding must be one of {', '.join(POS)}, got {pos!r}")
    if pos == "sincos":
        return None
    return partial(EvaBlock, attn_type="rope", qkv_fused=True, num_prefix_tokens=0)


def rescale_blocks(blocks: nn.Module) -> None:
    """The official V-JEPA init's depth scaling: block ``i`` (from 1) divides its residual output
    projections (``attn.proj``, ``mlp.fc2``) by ``sqrt(2·i)``."""
    with torch.no_grad():
        for i, blk in enumerate(blocks, start=1):
            blk.attn.proj.weight.div_((2.0 * i) ** 0.5)
            blk.mlp.fc2.weight.div_((2.0 * i) ** 0.5)


class VideoViTEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        block_fn = video_block_fn(cfg.pos)
        extra = {"block_fn": block_fn} if block_fn is not None else {}
        self.model = timm.create_model(
            cfg.name, pretrained=False, num_classes=0, img_size=cfg.img_size, patch_size=cfg.patch_size,
            class_token=False, global_pool="avg", fc_norm=False, pos_embed="none", dynamic_img_size=True,
            drop_path_rate=cfg.drop_path_rate, **extra, **cfg.kwargs,
        )
        self.model.patch_embed = TubeletEmbed(3, self.model.embed_dim, cfg.patch_size, cfg.tubelet_size)
        trunc_normal_(self.model.patch_embed.proj.weight, std=0.02)  # the official init of the tubelet conv
        nn.init.zeros_(self.model.patch_embed.proj.bias)
        rescale_blocks(self.model.blocks)
        self.cfg = cfg
        self.pos = cfg.pos
        self.rope_layout = cfg.rope_layout
        self.patch_size = cfg.patch_size
        self.tubelet_size = cfg.tubelet_size
        self.img_size = cfg.img_size
        self.num_frames = cfg.num_frames
        self.embed_dim: int = self.model.embed_dim
        self.num_heads: int = self.model.blocks[0].attn.num_heads
        self._pos_cache: Dict[Tuple, Tensor] = {}

    @property
    def grid_size(self) -> Tuple[int, int, int]:
        g = self.img_size // self.patch_size
        return self.num_frames // self.tubelet_size, g, g

    def clip(self, x: Tensor) -> Tensor:
        """A clip ``[B, C, T, H, W]``; an image ``[B, C, H, W]`` becomes ``num_frames`` copies of itself."""
        if x.dim() == 4:
            return x.unsqueeze(2).expand(-1, -1, self.num_frames, -1, -1)
        if x.dim() != 5:
            raise ValueError(f"expected clips [B, C, T, H, W] or images [B, C, H, W], got {tuple(x.shape)}")
        if x.shape[2] % self.tubelet_size:
            raise ValueError(f"{x.shape[2]} frames are not a whole number of {self.tubelet_size}-frame tubelets")
        return x

    def sincos(self, grid: Tuple[int, int, int], like: Tensor) -> Tensor:
        key = (grid, str(like.device), like.dtype)
        pe = self._pos_cache.get(key)
        if pe is None:
            pe = self._pos_cache[key] = sincos_3d(grid, self.embed_dim).to(like.device, like.dtype)
        return pe

    def rope(self, grid: Tuple[int, int, int], idx: Optional[Tensor], device: torch.device) -> Tensor:
        """The RoPE table of all ``grid`` tokens ``[1, 1, N, 2d]``, or of ``idx`` ``[B, 1, K, 2d]``."""
        if idx is None:
            idx = torch.arange(grid[0] * grid[1] * grid[2], device=device)[None]
        return rope_3d(token_coords(idx, grid), self.embed_dim // self.num_heads, self.rope_layout)[:, None]

    def forward_tokens(self, x: Tensor, idx: Optional[Tensor] = None) -> Tensor:
        """Tokens after the final norm: ``[B, N, D]`` (or ``[B, K, D]`` for the tokens in ``idx``).
        Several clips of each video, ``[B, k, C, T, H, W]``, give their tokens one after the other,
        ``[B, k·N, D]``, as the official multi-clip evaluation concatenates its segments' tokens."""
        if x.dim() == 6:
            if idx is not None:
                raise ValueError("token indices select within one clip; got several clips per video")
            return self.forward_tokens(x.flatten(0, 1)).view(x.shape[0], -1, self.embed_dim)
        t = self.model.patch_embed(self.clip(x))  # [B, t, h, w, D]
        b, gt, gh, gw, d = t.shape
        grid = (gt, gh, gw)
        t = t.reshape(b, gt * gh * gw, d)
        if self.pos == "sincos":
            t = t + self.sincos(grid, t)
        if idx is not None:
            t = torch.gather(t, 1, idx.unsqueeze(-1).expand(-1, -1, d))
        rope = self.rope(grid, idx, t.device) if self.pos == "rope" else None
        t = run_blocks(self.model.blocks, self.model.norm_pre(t), rope)
        return self.model.norm(t)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_tokens(x).mean(dim=1)
