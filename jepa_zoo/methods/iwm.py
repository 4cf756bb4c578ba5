"""IWM (Garrido et al., 2024): an image world model in latent space.

Algorithm (one step; views, actions and masks made in the loader, or with
``views.photometric=device`` the views made on the device from the shared crop and both draws,
before the step)::

    x, y, a             source and target views of one crop (B, 3, H, W) and the
                        action a_{x→y} (B, 7): jitter deltas + the source's
                        grayscale / blur / solarize flags (jepa_zoo.data.actions)
    ctx, tgt            I-JEPA multi-block masks on the source (B, K_c), (B, T, K_t)
    h   = LN(f̄(y))      EMA target encoder on the *target* view, non-affine LayerNorm
    z   = f(x, ctx)     context encoder on the visible source patches
    ŷ_t = g(z, tgt_t, a)   predictor conditioned on the action (feature / sequence / none)
    loss = mean ‖ŷ − h[tgt]‖²   (squared L2, averaged over elements)
    after the optimiser step:  f̄ ← m·f̄ + (1 − m)·f,  m: 0.996 → 1.0

Everything else is I-JEPA's (optimiser, schedules, EMA); capacity decides
what the representation becomes: ``method=iwm`` is IWM^Equi_{18,384}
(predictor depth 18), ``method=iwm_inv`` IWM^Inv_{12,384}; the predictor
width defaults to half the encoder's (384 at ViT-B).  ``val/mrr`` measures
how equivariant the world model is (:mod:`jepa_zoo.evaluation.mrr`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import Tensor

from jepa_zoo.config import TrainConfig
from jepa_zoo.data.actions import ACTION_DIM, IWMViews
from jepa_zoo.data.schema import IWMViewsConfig
from jepa_zoo.errors import check
from jepa_zoo.masks.schema import PATCH_MASKINGS
from jepa_zoo.methods.base import StepOutput
from jepa_zoo.methods.ijepa import IJEPA, IJEPAConfig
from jepa_zoo.models.parts import Parts
from jepa_zoo.models.predictor import Predictor
from jepa_zoo.panels import Line, Media, Parallel, Scatter, Section
from jepa_zoo.registry import COLLAPSES_WITH_TARGETS, MethodSpec


@dataclass
class MRRConfig:
    """The world model's mean reciprocal rank (:mod:`jepa_zoo.evaluation.mrr`), ``val/mrr`` at validation."""

    enabled: bool = True
    every_n_epochs: int = 1
    num_images: int = 16  # first images of the validation split
    bank_size: int = 256  # target augmentations per image

    def __post_init__(self) -> None:
        check(self.every_n_epochs >= 1, "method.mrr.every_n_epochs", "must be >= 1")
        check(self.num_images >= 1, "method.mrr.num_images", "must be >= 1")
        check(self.bank_size >= 2, "method.mrr.bank_size", "must be >= 2")


@dataclass
class IWMConfig(IJEPAConfig):
    """IWM: an action-conditioned predictor (world model) on I-JEPA's masks, EMA and schedules."""

    name: str = "iwm"
    pred_depth: int = 18  # IWM^Equi_{18,384}; the invariant preset (method=iwm_inv) uses 12
    pred_dim: Optional[int] = None
    loss: str = "mse"
    conditioning: str = "feature"
    views: IWMViewsConfig = field(default_factory=IWMViewsConfig)
    mrr: MRRConfig = field(default_factory=MRRConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.conditioning in ("feature", "sequence", "none"), "method.conditioning",
               f"must be one of feature, sequence, none; got {self.conditioning!r}")


class IWM(IJEPA):
    def parts(self) -> Parts:
        return self.declare(inputs="pair", predictor=self.predictor)

    def _build_predictor(self, **_: Any) -> Predictor:
        m: IWMConfig = self.cfg.method
        return super()._build_predictor(conditioning=m.conditioning, action_dim=ACTION_DIM)

    @staticmethod
    def train_transform(cfg: TrainConfig) -> Callable:
        v = cfg.method.views
        return IWMViews(
            cfg.data.img_size, cfg.method.crop_scale, flip_p=v.flip_p, jitter=v.jitter, jitter_p=v.jitter_p,
            grayscale_p=v.grayscale_p, blur_p=v.blur_p, solarize_p=v.solarize_p, mean=cfg.data.mean, std=cfg.data.std,
            photometric=v.photometric,
        )

    # -- the world model: what the MRR and the panels read ---------------------------------------
    @property
    def action_strength(self) -> tuple:
        """The jitter strengths that normalise the action's deltas (and draw the MRR's bank)."""
        return tuple(self.cfg.method.views.jitter)

    def predict_all(self, images: Tensor, action: Optional[Tensor] = None) -> Tensor:
        """Every patch of ``images`` visible, a mask token at every position, conditioned on ``action
        [B, A]`` (None: the null action) -> the predicted target features ``[B, N, D]``."""
        return self.predictor.predict_all(self.backbone.forward_tokens(images), action)

    def callbacks(self) -> List[Any]:
        """``val/mrr`` at validation when ``method.mrr.enabled``."""
        from jepa_zoo.callbacks.mrr import MRRCallback

        m = self.cfg.method.mrr
        return [MRRCallback(m.every_n_epochs, m.num_images, m.bank_size)] if m.enabled else []

    def image_panels(self, images: Tensor, shown: Tensor, scale: int, step: Optional[int]) -> Dict[str, Tensor]:
        """I-JEPA's ``masks``, and ``pairs``: this method's training transform on ``images`` (source
        view, target view, action)."""
        from jepa_zoo.evaluation.visual import pairs_panel, to_uint8

        out = super().image_panels(images, shown, scale, step)
        transform = self.train_transform(self.cfg)
        src, tgt, action = (torch.stack(t) for t in zip(*(transform.views(img) for img in to_uint8(images))))
        mean = torch.tensor(self.cfg.data.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.cfg.data.std).view(1, 3, 1, 1)
        out["pairs"] = pairs_panel((src * std + mean).clamp(0, 1), (tgt * std + mean).clamp(0, 1), action, step)
        return out

    def step(self, batch: Any) -> StepOutput:
        source, target, action = batch.inputs  # views.photometric=device: made after the transfer
        return self.jepa_step(source, target, batch.ctx, batch.tgt, batch.labels, action)  # I-JEPA's step, from source to target

PANELS = (
    Section("World model", (
        Line(("val/mrr", "val/mrr_cos"), "MRR of the world model (above chance: it uses the action)"),
    )),
    Section("Images", (Media(("images/pairs",), "source | target | action"), Media(("images/masks",), "masks"))),
    Section("Capacity sweep", (
        Scatter("val/mrr", "probe/val_acc", color="method.pred_depth", title="equivariance against accuracy"),
        Parallel(("method.pred_depth", "method.pred_dim", "method.conditioning"), ("val/mrr", "probe/val_acc"),
                 "predictor capacity → equivariance and accuracy"),
    ), sweep=True),
)

METHOD = MethodSpec("iwm", IWM, IWMConfig, maskings=PATCH_MASKINGS, panels=PANELS, inputs="pair",
                    collapses=COLLAPSES_WITH_TARGETS)
