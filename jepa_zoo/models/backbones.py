"""Encoder backbones shared by every method.

* :class:`ViTEncoder` — a timm ``VisionTransformer`` (patch embed, blocks,
  norm; LayerNorm eps 1e-6) run with fixed 2-D sin-cos position embeddings
  (:mod:`jepa_zoo.models.posembed`, the official I-JEPA order by default), no CLS token, and an
  optional patch-index mask: ``forward_tokens(x, idx)`` adds the position
  embeddings to all patches, then keeps only ``idx`` (``[B, K]`` LongTensor)
  before the blocks, as I-JEPA's context encoder needs.  Images of other sizes
  than ``img_size`` (LeJEPA's local views) get the sin-cos grid of their own
  patch grid; sizes that the patch does not divide are padded (timm's
  ``dynamic_img_pad``).
* :class:`TimmEncoder` — any timm model by name, pooled features
  (``num_classes=0``); ``cifar_stem`` replaces a ResNet's 7x7/2 stem and
  max-pool with a 3x3/1 conv for 32 px inputs; ``channels_last`` runs it in NHWC.

* :class:`jepa_zoo.models.video.VideoViTEncoder` — ``kind=vit`` with ``num_frames > 1``: V-JEPA's
  video ViT (tubelets, 3-D sin-cos or RoPE), the same ``forward_tokens(x, idx)``.

All expose ``embed_dim`` and ``forward(x) -> [B, embed_dim]``.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import timm
import torch
from torch import Tensor, nn

from jepa_zoo.errors import ConfigError
from jepa_zoo.models.posembed import sincos_2d
from jepa_zoo.models.schema import BackboneConfig
from jepa_zoo.models.video import VideoViTEncoder


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """``x[b, idx[b, k]]``: ``[B, N, D]`` tokens, ``[B, K]`` indices -> ``[B, K, D]``."""
    if idx.dim() != 2 or idx.shape[0] != x.shape[0]:
        raise ValueError(f"idx must be [B={x.shape[0]}, K], got {tuple(idx.shape)}")
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class ViTEncoder(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.model = timm.create_model(
            cfg.name,
            pretrained=False,
            num_classes=0,
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            class_token=False,
            global_pool="avg",
            fc_norm=False,  # final LayerNorm on every token (timm would move it after pooling)
            pos_embed="none",
            dynamic_img_size=True,
            dynamic_img_pad=True,  # e.g. 96 px local views with patch 14: padded to 98
            drop_path_rate=cfg.drop_path_rate,
            **cfg.kwargs,
        )
        self.cfg = cfg  # what built it (export rebuilds the stock timm model from it)
        self.patch_size = cfg.patch_size
        self.img_size = cfg.img_size
        self.sincos_order = cfg.sincos_order
        self.embed_dim: int = self.model.embed_dim
        self.num_heads: int = self.model.blocks[0].attn.num_heads
        self._pos_cache: Dict[Tuple[int, int, str, torch.dtype], Tensor] = {}

    @property
    def grid_size(self) -> Tuple[int, int]:
        g = self.img_size // self.patch_size
        return g, g

    def pos_embed(self, h: int, w: int, like: Tensor) -> Tensor:
        """Fixed sin-cos embeddings ``[h*w, D]`` (raster order, ``backbone.sincos_order``'s channels),
        cached per grid/device/dtype."""
        key = (h, w, str(like.device), like.dtype)
        pe = self._pos_cache.get(key)
        if pe is None:
            pe = sincos_2d((h, w), self.embed_dim, self.sincos_order).to(like.device, like.dtype)
            self._pos_cache[key] = pe
        return pe

    def forward_tokens(self, x: Tensor, idx: Optional[Tensor] = None) -> Tensor:
        """Patch tokens ``[B, N, D]`` (or ``[B, K, D]`` for the patches in ``idx``)."""
        if x.dim() != 4:
            raise ValueError(f"expected images [B, C, H, W], got {tuple(x.shape)}")
        t = self.model.patch_embed(x)  # [B, h, w, D] (dynamic size -> NHWC)
        b, h, w, d = t.shape
        t = t.reshape(b, h * w, d) + self.pos_embed(h, w, t)
        if idx is not None:
            t = gather_tokens(t, idx)
        t = self.model.norm_pre(t)
        t = self.model.blocks(t)
        return self.model.norm(t)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_tokens(x).mean(dim=1)


class TimmEncoder(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        kwargs = dict(cfg.kwargs)
        if cfg.drop_path_rate:
            kwargs["drop_path_rate"] = cfg.drop_path_rate
        try:  # transformers (ViT, DeiT, Swin, ...) must accept every view size
            self.model = timm.create_model(
                cfg.name, pretrained=False, num_classes=0, img_size=cfg.img_size, dynamic_img_size=True, **kwargs
            )
        except TypeError:  # CNNs take no image size
            self.model = timm.create_model(cfg.name, pretrained=False, num_classes=0, **kwargs)
        if cfg.cifar_stem:
            conv1 = getattr(self.model, "conv1", None)
            if not isinstance(conv1, nn.Conv2d):
                raise ValueError(f"backbone.cifar_stem: {cfg.name} has no ResNet-style conv1 stem")
            self.model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, 1, 1, bias=False)
            self.model.maxpool = nn.Identity()
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.embed_dim: int = self.model.num_features

    def forward(self, x: Tensor) -> Tensor:
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def accepts(self, size: int) -> bool:
        """Whether a ``size`` x ``size`` image gets through the model (a CNN's strided layers without
        padding need a minimum size): one forward of a blank image, without gradients, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            p = next(self.parameters())
            with torch.no_grad():
                self.model(torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype))
            return True
        except RuntimeError as e:  # the kernel-larger-than-input family of errors; anything else is raised
            if "size" not in str(e).lower():
                raise
            return False
        finally:
            self.train(was_training)

    def min_size(self, size: int, limit: int = 1024) -> Optional[int]:
        """The smallest of ``size``, 2·size, 4·size, ... (up to ``limit``) that the model accepts."""
        while size <= limit:
            if self.accepts(size):
                return size
            size *= 2
        return None


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """Encoder from its (validated) config: :class:`BackboneConfig` has checked the timm name; a
    ViT with ``num_frames > 1`` is the video ViT (:mod:`jepa_zoo.models.video`)."""
    if cfg.video:
        return VideoViTEncoder(cfg)
    return ViTEncoder(cfg) if cfg.kind == "vit" else TimmEncoder(cfg)


def check_input_sizes(backbone: nn.Module, name: str, sizes: Dict[str, int]) -> None:
    """Refuse, before training, image sizes that a CNN backbone cannot take: a ConfigError naming the
    key, the size and the smallest of size, 2·size, 4·size, ... that the backbone takes."""
    if not isinstance(backbone, TimmEncoder) or not sizes:
        return
    key, size = min(sizes.items(), key=lambda kv: kv[1])
    if not backbone.accepts(size):
        least = backbone.min_size(size)
        tried = f"of {size}, {2 * size}, {4 * size}, ... px it takes {least} px" if least else "up to 1024 px: none"
        follows = {"method.views.global_size": " (it follows data.img_size)",
                   "method.views.local_size": " (it follows data.local_img_size)"}.get(key, "")
        raise ConfigError(f"{key}: backbone {name} cannot take {size}-px images (the smallest {tried}); "
                          f"raise {key}{follows}, or pick another backbone")
