"""A toy JEPA that lives outside the package: two views, a predictor from one view's embedding
to the other's (stop-gradient target), a variance floor against collapse.  It exists to show (and
test) that a method is one module plus one yaml: see tests/test_architecture.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from jepa_zoo.config import MethodConfig, TrainConfig
from jepa_zoo.methods.base import JEPAModule, StepOutput
from jepa_zoo.registry import MethodSpec


@dataclass
class ToyConfig(MethodConfig):
    name: str = "toy"
    hidden: int = 32
    var_weight: float = 1.0


class TwoViews:
    def __init__(self, size: int, mean, std):
        self.t = v2.Compose([v2.ToImage(), v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
                             v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def __call__(self, img: Any):
        return [self.t(img), self.t(img)]


class Toy(JEPAModule):
    def __init__(self, cfg: TrainConfig, num_classes=None):
        super().__init__(cfg, num_classes)
        d = self.backbone.embed_dim
        self.predictor = torch.nn.Sequential(torch.nn.Linear(d, self.cfg.method.hidden), torch.nn.GELU(),
                                             torch.nn.Linear(self.cfg.method.hidden, d))

    @staticmethod
    def train_transform(cfg: TrainConfig) -> Callable:
        return TwoViews(cfg.data.img_size, cfg.data.mean, cfg.data.std)

    def step(self, batch: Any) -> StepOutput:
        (a, b), labels = batch.inputs, batch.labels  # a jepa_zoo.data.batch.Batch
        za, zb = self.backbone(a), self.backbone(b)
        pred = F.mse_loss(self.predictor(za), zb.detach())
        var = F.relu(1 - za.std(0)).mean()
        loss = pred + self.cfg.method.var_weight * var
        return StepOutput(loss=loss, logs={"loss": loss.detach(), "pred_loss": pred.detach()},
                          features=za.detach(), labels=labels)


METHOD = MethodSpec("toy", Toy, ToyConfig)
