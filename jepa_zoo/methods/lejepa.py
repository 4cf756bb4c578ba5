"""LeJEPA (Balestriero & LeCun, 2025): multi-view prediction + SIGReg.

Algorithm (one step, ``V = V_g + V_l`` views of each of ``N`` images)::

    x_v                               views: the loader's, or with views.photometric=device made on
                                      the device before the step (JEPADataModule.on_after_batch_transfer)
    e_v = f(x_v)                      backbone, pooled      (V, N, D)
    z_v = g(e_v)                      MLP projector         (V, N, K)
    c   = mean_{v < V_g} z_v          centre of the global views
    pred   = mean_v ‖c − z_v‖² / K    every view predicts the centre
    sigreg = mean_v SIGReg(z_v)       Epps–Pulley on random slices
    loss   = (1 − λ)·pred + λ·sigreg  one hyperparameter, λ = 0.05

No EMA teacher, no predictor, no stop-gradient.  The SIGReg part is ``collapse=sigreg`` (the default:
λ is ``method.lambd`` unless ``collapse.weight`` says otherwise); ``collapse=vicreg`` puts VICReg's
variance and covariance terms on the projections instead.  Global and local views go
through the backbone in two calls (their sizes differ); the projector sees
all views at once.  The online probe reads the detached global-view
embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor

from jepa_zoo.config import MethodConfig, TrainConfig
from jepa_zoo.data.schema import ViewsConfig
from jepa_zoo.data.views import MultiView
from jepa_zoo.errors import check
from jepa_zoo.losses.jepa import multiview_prediction_loss
from jepa_zoo.methods.base import JEPAModule, StepOutput
from jepa_zoo.models.heads import mlp_projector
from jepa_zoo.models.parts import Parts
from jepa_zoo.panels import Line, Parallel, Scatter, Section
from jepa_zoo.registry import MethodSpec


@dataclass
class LeJEPAConfig(MethodConfig):
    """LeJEPA: total = (1 − λ)·pred + λ·SIGReg."""

    name: str = "lejepa"
    lambd: float = 0.05  # the paper: 0.01 at V = 2 views, 0.02 at V = 4, 0.05 at V = 8
    proj_hidden_dim: int = 2048
    proj_dim: int = 64
    proj_layers: int = 3
    num_slices: int = 1024
    t_max: float = 3.0
    num_points: int = 17
    views: ViewsConfig = field(default_factory=ViewsConfig)

    def __post_init__(self) -> None:
        check(0.0 <= self.lambd <= 1.0, "method.lambd", f"must be in [0, 1], got {self.lambd}")
        check(self.proj_layers >= 1, "method.proj_layers", "must be >= 1")
        check(self.proj_dim >= 1, "method.proj_dim", "must be >= 1")
        check(self.num_slices >= 1, "method.num_slices", "must be >= 1")
        check(self.num_points >= 3 and self.num_points % 2 == 1, "method.num_points", "must be odd and >= 3")
        check(self.t_max > 0, "method.t_max", "must be > 0")

    def collapse_defaults(self) -> Dict[str, Any]:
        return {"weight": self.lambd, "num_slices": self.num_slices, "t_max": self.t_max, "num_points": self.num_points}


class LeJEPA(JEPAModule):
    def __init__(self, cfg: TrainConfig, num_classes: Optional[int] = None):
        super().__init__(cfg, num_classes)
        m: LeJEPAConfig = self.cfg.method  # cfg may be a checkpoint's plain dict
        self.projector = mlp_projector(self.backbone.embed_dim, m.proj_hidden_dim, m.proj_dim, m.proj_layers)

    def parts(self) -> Parts:
        return self.declare(inputs="views", projector=self.projector)

    @staticmethod
    def train_transform(cfg: TrainConfig) -> Callable:
        return MultiView(cfg.method.views, cfg.data.mean, cfg.data.std)

    @staticmethod
    def input_sizes(cfg: TrainConfig) -> Dict[str, int]:
        v = cfg.method.views
        return {"method.views.global_size": v.global_size, **({"method.views.local_size": v.local_size}
                                                              if v.num_local else {})}

    def step(self, batch: Any) -> StepOutput:
        views, labels = batch.inputs, batch.labels  # a jepa_zoo.data.batch.Batch
        m: LeJEPAConfig = self.cfg.method
        n_global = m.views.num_global
        if len(views) != n_global + m.views.num_local:
            raise ValueError(f"expected {n_global + m.views.num_local} views, got {len(views)}")
        sizes = [g for g in (views[:n_global], views[n_global:]) if g]  # globals, locals: one backbone call each
        inputs = [torch.cat(g) for g in sizes]
        n = inputs[0].shape[0] // n_global
        emb = [self.backbone(x) for x in inputs]
        emb_all = torch.cat(emb)  # (V·N, D), view-major
        proj = self.projector(emb_all).view(len(views), n, -1)
        logs: Dict[str, Tensor] = {}
        loss = self.collapse_loss(multiview_prediction_loss(proj, n_global), proj, logs)  # SIGReg per view
        logs = {"loss": loss.detach(), **logs}
        return StepOutput(loss=loss, logs=logs, features=emb[0].detach(), labels=labels.repeat(n_global))


PANELS = (
    Section("Loss terms", (
        Line(("train/loss", "train/pred_loss", "train/sigreg_loss"), "loss = (1 − λ)·pred + λ·SIGReg", smoothing=0.6),
    )),
    Section("λ sweep", (
        Parallel(("method.lambd", "method.views.num_local", "method.num_slices"), ("probe/val_acc", "val/knn_top1"),
                 "λ, views and slices → accuracy"),
        Scatter("train/sigreg_loss", "probe/val_acc", color="method.lambd", title="isotropy against accuracy"),
    ), sweep=True),
)

METHOD = MethodSpec("lejepa", LeJEPA, LeJEPAConfig, maskings=("none",), panels=PANELS, inputs="views",
                    collapses=("sigreg", "vicreg"), collapse_refusals={
                        name: "LeJEPA predicts the centre of its own views' projections: it has no target encoder"
                        for name in ("ema", "frozen")})
