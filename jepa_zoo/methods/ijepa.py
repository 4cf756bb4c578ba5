"""I-JEPA (Assran et al., 2023): predict masked blocks in latent space.

Algorithm (one step; masks from :mod:`jepa_zoo.masks.multiblock` in the loader)::

    x                   images (B, 3, H, W); ctx (B, K_c), tgt (B, T, K_t) patch indices
    h   = LN(f̄(x))      EMA target encoder on the full image, non-affine LayerNorm
    y_t = h[tgt_t]      target features of each block            (B, T, K_t, D)
    z   = f(x, ctx)     context encoder sees only context patches  (B, K_c, D)
    ŷ_t = g(z, tgt_t)   narrow predictor, mask tokens at tgt_t     (B, T, K_t, D)
    loss = smooth_l1(ŷ, y)      (β = 1, the official code; MSE selectable)
    after the optimiser step:  f̄ ← m·f̄ + (1 − m)·f,  m: 0.996 → 1.0 linearly

That is ``collapse=ema``, the paper's.  ``collapse=sigreg`` (or ``vicreg``, ``frozen``) swaps the target
part (:mod:`jepa_zoo.methods.collapse`): with ``sigreg``, ``h = LN(f(x))`` comes from the online
encoder with gradients, no EMA, and ``loss = (1 − λ)·smooth_l1(ŷ, y) + λ·SIGReg(mean_n f(x))``.

AdamW with LR warm-up 2e-4 → 1e-3 then cosine to 1e-6 and weight decay rising
0.04 → 0.4 on a cosine, all functions of the optimiser step.  The online probe
reads the pooled target-encoder features (already computed, detached).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from jepa_zoo.config import MethodConfig, OptimConfig, TrainConfig
from jepa_zoo.data.views import view_transform
from jepa_zoo.errors import check, check_range
from jepa_zoo.losses.jepa import latent_prediction_loss
from jepa_zoo.masks.collator import MaskCollator
from jepa_zoo.masks.schema import PATCH_MASKINGS
from jepa_zoo.methods.base import JEPAModule, StepOutput
from jepa_zoo.models.backbones import gather_tokens, ViTEncoder
from jepa_zoo.models.parts import Parts
from jepa_zoo.models.predictor import Predictor
from jepa_zoo.panels import Bar, Line, Media, Section
from jepa_zoo.registry import COLLAPSES_WITH_TARGETS, MethodSpec


@dataclass
class IJEPAConfig(MethodConfig):
    """I-JEPA: predict EMA-target features of masked blocks from a context block."""

    name: str = "ijepa"
    pred_depth: int = 12
    pred_dim: Optional[int] = 384  # None: half the encoder width (384 at ViT-B, 512 at ViT-L)
    pred_heads: Optional[int] = None  # None: the encoder's head count
    ema: List[float] = field(default_factory=lambda: [0.996, 1.0])
    loss: str = "smooth_l1"
    crop_scale: List[float] = field(default_factory=lambda: [0.3, 1.0])
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        lr=1e-3, final_lr_ratio=1e-3, weight_decay=0.04, final_weight_decay=0.4, warmup_epochs=40,
        warmup_start_ratio=0.2))

    def __post_init__(self) -> None:
        check(self.pred_depth >= 1, "method.pred_depth", f"must be >= 1, got {self.pred_depth}")
        check(self.pred_dim is None or self.pred_dim >= 1, "method.pred_dim", f"must be >= 1, got {self.pred_dim}")
        check(len(self.ema) == 2 and 0 <= self.ema[0] <= self.ema[1] <= 1, "method.ema",
               f"expected [start, end] with 0 <= start <= end <= 1, got {list(self.ema)}")
        check(self.loss in ("smooth_l1", "mse"), "method.loss", f"must be 'smooth_l1' or 'mse', got {self.loss!r}")
        check_range(self.crop_scale, "method.crop_scale", 1e-6, 1.0)

    def collapse_defaults(self) -> Dict[str, Any]:
        return {"momentum": list(self.ema)}


class IJEPA(JEPAModule):
    def __init__(self, cfg: TrainConfig, num_classes: Optional[int] = None):
        super().__init__(cfg, num_classes)
        if not isinstance(self.backbone, ViTEncoder):
            raise TypeError("I-JEPA needs a ViT backbone (backbone=vit_t ... vit_h)")
        self.predictor = self._build_predictor()

    def parts(self) -> Parts:
        return self.declare(inputs="images", predictor=self.predictor)

    def _build_predictor(self, **conditioning: Any) -> Predictor:
        m: IJEPAConfig = self.cfg.method
        return Predictor(
            self.backbone.embed_dim, self.backbone.grid_size, pred_dim=m.pred_dim or self.backbone.embed_dim // 2,
            depth=m.pred_depth, num_heads=m.pred_heads or self.backbone.num_heads, drop_path_rate=0.0,
            sincos_order=self.backbone.sincos_order, **conditioning,
        )

    def image_panels(self, images: Tensor, shown: Tensor, scale: int, step: Optional[int]) -> Dict[str, Tensor]:
        """``masks``: this method's own collator on validation ``images`` (see :meth:`JEPAModule.image_panels`)."""
        from jepa_zoo.evaluation.visual import mask_panel

        collator = self.collate_fn(self.cfg)
        _, ctx, tgt, _ = collator([(img, 0) for img in images])
        return {"masks": mask_panel(shown, ctx, tgt, collator.grid, self.cfg.backbone.patch_size * scale, step)}

    def target_tokens(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """The target tokens ``h [B, N, D]`` of ``images`` (the EMA encoder's, or the online one's under
        ``collapse=sigreg``) -> (what the predictor regresses: ``h`` through a non-affine LayerNorm;
        the pooled features ``mean_n h [B, D]``)."""
        h = self.target_tokens_of(images)
        return F.layer_norm(h, h.shape[-1:]), h.mean(dim=1)

    def target_features(self, images: Tensor) -> Tensor:
        """What the predictor regresses, ``[B, N, D]`` (:meth:`target_tokens`)."""
        return self.target_tokens(images)[0]

    @staticmethod
    def train_transform(cfg: TrainConfig) -> Callable:
        """RandomResizedCrop only: no flip, no colour augmentation (the paper's recipe)."""
        return view_transform(
            cfg.data.img_size, cfg.method.crop_scale, flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0,
            solarize_p=0.0, mean=cfg.data.mean, std=cfg.data.std,
        )

    @staticmethod
    def collate_fn(cfg: TrainConfig) -> Optional[Callable]:
        g = cfg.backbone.img_size // cfg.backbone.patch_size
        return MaskCollator((g, g), cfg.masking)

    def step(self, batch: Any) -> StepOutput:
        # a jepa_zoo.data.batch.MaskedBatch: images, masks, labels
        return self.jepa_step(batch.inputs, batch.inputs, batch.ctx, batch.tgt, batch.labels)

    def jepa_step(self, source: Tensor, target: Tensor, ctx: Tensor, tgt: Tensor, labels: Tensor,
                  action: Optional[Tensor] = None) -> StepOutput:
        """I-JEPA's algorithm box (IWM's too, with ``target`` another view of ``source`` and its
        ``action``): target features of the target blocks, context encoding of ``source``'s
        context patches, prediction, loss (with the collapse regulariser on the pooled target
        features, under ``collapse=sigreg|vicreg``).  ``ctx [B, K_c]``, ``tgt [B, T, K_t]`` patch indices."""
        m: IJEPAConfig = self.cfg.method
        b, t, kt = tgt.shape
        with self.collapse.target_context():  # no_grad for an EMA / frozen target
            h, pooled = self.target_tokens(target)  # (B, N, D) LayerNorm'd, (B, D)
            y = gather_tokens(h, tgt.flatten(1)).view(b, t, kt, -1)
        z = self.backbone.forward_tokens(source, ctx)
        pred = self.predictor(z, ctx, tgt, action)
        logs: Dict[str, Tensor] = {}
        loss = self.collapse_loss(latent_prediction_loss(pred, y, m.loss, self.collapse.stop_grad), pooled, logs)
        logs.update({
            "loss": loss.detach(),
            "context_size": float(ctx.shape[1]),
            "target_size": float(kt),
            # collapse monitor: spread of the pooled target features across the batch
            "target_std": pooled.detach().float().std(dim=0).mean(),
            # how close the predictions are to their targets, per token (1: exact direction)
            "pred_cos": F.cosine_similarity(pred.detach().float(), y.detach().float(), dim=-1).mean(),
        })
        return StepOutput(loss=loss, logs=logs, features=pooled.detach(), labels=labels)


# The dashboard panels of what I-JEPA logs (jepa_zoo/panels.py).
PANELS = (
    Section("Masks", (
        Line(("train/context_size", "train/target_size"), "context and target patches"),
        Media(("images/masks",), "context (kept) and target blocks (tinted)"),
    )),
    Section("Masking sweep", (
        Bar("probe/val_acc", "masking.name", "probe accuracy by masking"),
        Bar("probe/val_acc", "masking.num_targets", "probe accuracy by number of target blocks"),
    ), sweep=True),
)

METHOD = MethodSpec("ijepa", IJEPA, IJEPAConfig, maskings=PATCH_MASKINGS, retired=("mrr",), panels=PANELS,
                    collapses=COLLAPSES_WITH_TARGETS)
