"""End-to-end fine-tuning: the pretrained encoder and a LayerNorm + Linear head trained together.

The recipe of the MAE / I-JEPA fine-tuning protocol, scaled down:

* AdamW; the encoder's parameter groups use layer-wise LR decay from timm
  (``timm.optim.param_groups_layer_decay``: block ``l`` of ``L`` (1-based)
  trains at ``lr · decay^(L - l)``, the patch embedding at ``lr · decay^L``,
  the last block and the head at ``lr``); no weight decay on norms and biases;
* linear warm-up over ``warmup_fraction`` of the steps, then cosine to 0;
* label-smoothed cross-entropy; drop-path as configured in the backbone.

Top-1 / top-5 on the validation split are reported by :meth:`FinetuneModule.results`.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics.classification import MulticlassAccuracy

from jepa_zoo.evaluation.probes import LinearHead


class FinetuneModule(L.LightningModule):
    def __init__(self, encoder: nn.Module, num_classes: int, lr: float = 1e-3, weight_decay: float = 0.05,
                 layer_decay: float = 0.75, label_smoothing: float = 0.1, warmup_fraction: float = 0.1):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"fine-tuning needs labelled data with >= 2 classes, got {num_classes}")
        if not 0 < layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
        self.encoder = encoder.train().requires_grad_(True)
        dim = getattr(encoder, "embed_dim", None) or encoder.num_features
        self.head = LinearHead(dim, num_classes)
        self.lr, self.weight_decay, self.layer_decay = lr, weight_decay, layer_decay
        self.label_smoothing, self.warmup_fraction = label_smoothing, warmup_fraction
        self.top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, C]`` from images ``[B, 3, H, W]`` (pooled encoder features -> head)."""
        feats = self.encoder(x)
        if feats.dim() != 2:
            raise ValueError(f"the encoder must return pooled features [B, D], got {tuple(feats.shape)}")
        return self.head(feats[:, None]).float()  # LinearHead pools tokens; one "token" here

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.top1(logits, y)
        self.top5(logits, y)
        self.log("val/top1", self.top1, sync_dist=True)
        self.log("val/top5", self.top5, sync_dist=True)

    def configure_optimizers(self):
        from timm.optim import param_groups_layer_decay

        inner = getattr(self.encoder, "model", self.encoder)  # our wrappers hold the timm model as .model
        groups = param_groups_layer_decay(inner, weight_decay=self.weight_decay, layer_decay=self.layer_decay)
        head = [p for p in self.head.parameters()]
        groups.append({"params": [p for p in head if p.ndim > 1], "weight_decay": self.weight_decay, "lr_scale": 1.0})
        groups.append({"params": [p for p in head if p.ndim <= 1], "weight_decay": 0.0, "lr_scale": 1.0})
        covered = {id(p) for g in groups for p in g["params"]}
        missing = [n for n, p in self.named_parameters() if p.requires_grad and id(p) not in covered]
        if missing:
            raise RuntimeError(f"parameters left out of the optimiser: {missing[:3]}")
        for g in groups:
            g["lr"] = self.lr * g.pop("lr_scale", 1.0)
        opt = torch.optim.AdamW(groups, lr=self.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.warmup_fraction * total)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        return {"optimizer": opt, "lr_scheduler": {"scheduler": LambdaLR(opt, schedule), "interval": "step"}}

    @staticmethod
    def results(metrics: Mapping[str, Any]) -> Dict[str, float]:
        """``{"top1", "top5"}`` in percent (as every protocol reports them) from the validation metrics."""
        return {k: 100 * float(metrics[f"val/{k}"]) for k in ("top1", "top5")}
