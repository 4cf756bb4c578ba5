"""V-JEPA (Bardes et al., 2024) and V-JEPA 2 (Assran et al., 2025): predict masked tubelets of a
clip in latent space.

Algorithm (one step; masks from :mod:`jepa_zoo.masks.multiblock3d` in the loader)::

    x                     clips (B, 3, T, H, W); for each mask type j: ctx_j (B, K_c), tgt_j (B, K_t)
    h   = LN(f̄(x))        EMA target encoder on the whole clip, non-affine LayerNorm  (B, N, D)
    for each mask type j (one encoder and one predictor pass each):
        y_j = h[tgt_j]                                    (B, K_t, D)
        z_j = f(x, ctx_j)     context encoder on the context tokens only
        ŷ_j = g(z_j, ctx_j, tgt_j, mask_token_j)          narrow predictor
    loss = 1/M Σ_j mean |ŷ_j − y_j|                       (L1; ``loss_exp`` p: |·|^p / p)
    after the optimiser step:  f̄ ← m·f̄ + (1 − m)·f

That is ``collapse=ema``, the papers'.  ``collapse=sigreg`` (or ``vicreg``, ``frozen``) swaps the target
part (:mod:`jepa_zoo.methods.collapse`): with ``sigreg``, ``h = LN(f(x))`` from the online encoder with
gradients, no EMA, and ``loss = (1 − λ)·L1 + λ·SIGReg(mean_n f(x))``.

V-JEPA (``method=vjepa``): 3-D sin-cos positions, EMA 0.998 → 1, LR warm-up 2e-4 → 6.25e-4 then
cosine to 1e-6, weight decay 0.04 → 0.4.  V-JEPA 2 (``method=vjepa2``, the same module): 3-D RoPE
(``backbone.pos=rope``), constant EMA 0.99925, warm-up then constant LR with an optional linear
cooldown (``method.optim.schedule=constant``, ``cooldown``), constant weight decay 0.04.  The online
probe reads the pooled target-encoder features, as the official evaluations use the target encoder.

Kept apart from the official code, on purpose: schedules end at the end of the run (the official
ones span 1.25x the run and stop short); the context and target lists are cut to the batch
minimum by random subsets, not by dropping the last frames' tokens; the encoders keep the depth-scaled
init (V-JEPA's re-initialisation undid it); ``mask_token_per_type`` (default) gives each mask type its
own token in V-JEPA 2 too (its official code uses one for both: ``false`` reproduces that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from jepa_zoo.config import MethodConfig, OptimConfig, TrainConfig
from jepa_zoo.data.video_views import video_train_transform
from jepa_zoo.errors import ConfigError, check, check_range
from jepa_zoo.losses.jepa import vjepa_loss, vjepa_targets
from jepa_zoo.masks.collator import VideoMaskCollator
from jepa_zoo.masks.schema import VIDEO_MASKINGS
from jepa_zoo.methods.base import JEPAModule, StepOutput
from jepa_zoo.models.parts import Parts
from jepa_zoo.models.video import VideoViTEncoder
from jepa_zoo.models.video_predictor import VideoPredictor
from jepa_zoo.panels import Line, Section
from jepa_zoo.registry import COLLAPSES_WITH_TARGETS, MethodSpec


@dataclass
class VideoViewsConfig:
    """One random-resized crop and flip per clip (V-JEPA's recipe: no colour augmentation)."""

    scale: List[float] = field(default_factory=lambda: [0.3, 1.0])
    aspect: List[float] = field(default_factory=lambda: [0.75, 1.35])
    flip_p: float = 0.5

    def __post_init__(self) -> None:
        check_range(self.scale, "method.views.scale", 1e-6, 1.0)
        check_range(self.aspect, "method.views.aspect", 1e-6, 100.0)
        check(0.0 <= self.flip_p <= 1.0, "method.views.flip_p", f"must be in [0, 1], got {self.flip_p}")


@dataclass
class VJEPAConfig(MethodConfig):
    """V-JEPA / V-JEPA 2: predict EMA-target features of masked tubelets from the rest of the clip."""

    name: str = "vjepa"
    pred_depth: int = 12
    pred_dim: int = 384
    pred_heads: Optional[int] = None  # None: the encoder's head count (V-JEPA); V-JEPA 2 uses 12
    ema: List[float] = field(default_factory=lambda: [0.998, 1.0])
    loss_exp: float = 1.0
    mask_token_per_type: bool = True
    num_mask_tokens: Optional[int] = None  # None: one per mask type (imported V-JEPA 2 files hold 10)
    views: VideoViewsConfig = field(default_factory=VideoViewsConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        lr=6.25e-4, final_lr_ratio=1.6e-3, weight_decay=0.04, final_weight_decay=0.4, warmup_epochs=40,
        warmup_start_ratio=0.32))

    def __post_init__(self) -> None:
        check(self.pred_depth >= 1, "method.pred_depth", f"must be >= 1, got {self.pred_depth}")
        check(self.pred_dim >= 1, "method.pred_dim", f"must be >= 1, got {self.pred_dim}")
        check(len(self.ema) == 2 and 0 <= self.ema[0] <= self.ema[1] <= 1, "method.ema",
              f"expected [start, end] with 0 <= start <= end <= 1, got {list(self.ema)}")
        check(self.loss_exp > 0, "method.loss_exp", f"must be > 0, got {self.loss_exp}")
        check(self.num_mask_tokens is None or self.num_mask_tokens >= 1, "method.num_mask_tokens",
              f"must be >= 1 (or null: one per mask type), got {self.num_mask_tokens}")

    def collapse_defaults(self) -> Dict[str, Any]:
        return {"momentum": list(self.ema)}


class VJEPA(JEPAModule):
    def __init__(self, cfg: TrainConfig, num_classes: Optional[int] = None):
        super().__init__(cfg, num_classes)
        if not isinstance(self.backbone, VideoViTEncoder):
            raise TypeError("V-JEPA needs a video ViT (a video data group and backbone=vit_t ... vit_h)")
        m: VJEPAConfig = self.cfg.method
        b = self.backbone
        self.predictor = VideoPredictor(
            b.embed_dim, b.grid_size, pred_dim=m.pred_dim, depth=m.pred_depth, num_heads=m.pred_heads or b.num_heads,
            pos=b.pos, rope_layout=b.rope_layout, num_mask_tokens=m.num_mask_tokens or len(cfg.masking.mask_types))
        if m.mask_token_per_type and len(self.predictor.mask_tokens) < len(cfg.masking.mask_types):
            raise ConfigError(f"method.num_mask_tokens: {m.num_mask_tokens} mask tokens for "
                              f"{len(cfg.masking.mask_types)} mask types (method.mask_token_per_type=true)")
        used = len(cfg.masking.mask_types) if m.mask_token_per_type else 1
        if len(self.predictor.mask_tokens) > used:  # tokens no mask type uses stay as loaded, out of DDP's way
            for token in list(self.predictor.mask_tokens)[used:]:
                token.requires_grad_(False)

    def parts(self) -> Parts:
        return self.declare(inputs="clip", predictor=self.predictor)

    @staticmethod
    def train_transform(cfg: TrainConfig) -> Callable:
        v: VideoViewsConfig = cfg.method.views
        return video_train_transform(cfg.data.img_size, v.scale, v.aspect, v.flip_p, cfg.data.mean, cfg.data.std)

    @staticmethod
    def collate_fn(cfg: TrainConfig) -> Optional[Callable]:
        g = cfg.backbone.img_size // cfg.backbone.patch_size
        return VideoMaskCollator((cfg.backbone.num_frames // cfg.backbone.tubelet_size, g, g), cfg.masking)

    def step(self, batch: Any) -> StepOutput:
        # a jepa_zoo.data.batch.MaskedBatch whose ctx and tgt hold one entry per mask type
        return self.vjepa_step(batch.inputs, batch.ctx, batch.tgt, batch.labels)

    def vjepa_step(self, clips: Tensor, ctx: Sequence[Tensor], tgt: Sequence[Tensor], labels: Tensor) -> StepOutput:
        """The algorithm box above: targets once, then a context and a predictor pass per mask type."""
        m: VJEPAConfig = self.cfg.method
        with self.collapse.target_context():  # no_grad for an EMA / frozen target
            h = self.target_tokens_of(clips)
            targets = vjepa_targets(h, tgt)
            pooled = h.mean(dim=1)
        preds = []
        for j, (c, t) in enumerate(zip(ctx, tgt)):
            z = self.backbone.forward_tokens(clips, c)
            preds.append(self.predictor(z, c, t, mask_index=j if m.mask_token_per_type else 0))
        logs: Dict[str, Tensor] = {}
        loss = self.collapse_loss(vjepa_loss(preds, targets, m.loss_exp, self.collapse.stop_grad), pooled, logs)
        logs.update({
            "loss": loss.detach(),
            "context_size": float(sum(c.shape[1] for c in ctx)) / len(ctx),
            "target_size": float(sum(t.shape[1] for t in tgt)) / len(tgt),
            "target_std": pooled.detach().float().std(dim=0).mean(),  # collapse monitor
            "pred_cos": torch.stack([F.cosine_similarity(p.detach().float(), y.detach().float(), dim=-1).mean()
                                     for p, y in zip(preds, targets)]).mean(),
        })
        return StepOutput(loss=loss, logs=logs, features=pooled.detach(), labels=labels)


# The dashboard panels of what V-JEPA logs (jepa_zoo/panels.py).
PANELS = (
    Section("Masks", (
        Line(("train/context_size", "train/target_size"), "context and target tokens (mean over mask types)"),
    )),
)

METHOD = MethodSpec("vjepa", VJEPA, VJEPAConfig, maskings=VIDEO_MASKINGS, panels=PANELS, video=True, inputs="clip",
                    collapses=COLLAPSES_WITH_TARGETS)
