"""Trained evaluation heads on a frozen encoder: linear and attentive probes.

Features are the frozen encoder's patch tokens ``t [B, N, D]`` (a CNN gives
one pooled token), or, with a world-model predictor (I-JEPA, IWM), the
predictor's output on them: every patch visible, a mask token at every
position and the null action, ``t ← g(t, all, all, a=0)`` — IWM's "predictor
fine-tuning", where the predictor trains too (at ``predictor_lr``).

* ``linear``: ``Linear(LN(mean_n t))`` (LayerNorm without affine);
* ``attentive``: one learned query cross-attending to ``t`` (timm's
  ``AttentionPoolLatent``: attention + MLP block), then LayerNorm + Linear.

A grid of heads (every learning rate × weight decay pair) trains in one pass
over the data, each head in its own AdamW parameter group with a linear
warm-up then cosine learning rate; validation reports top-1/top-5 of every
head (``val/top1/<head>``); :meth:`ProbeModule.results` chooses the head on a split held out from
the training images and reports that head's test accuracy (selecting on the test images would
inflate the figure).
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any, Dict, List, Optional, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from timm.layers import AttentionPoolLatent
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics.classification import MulticlassAccuracy

from jepa_zoo.optim import warmup_cosine


class AttentiveHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, num_heads: int):
        super().__init__()
        self.pool = AttentionPoolLatent(dim, num_heads=num_heads, norm_layer=nn.LayerNorm)
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.fc(self.norm(self.pool(tokens)))


class LinearHead(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.fc(self.norm(tokens.mean(dim=1)))


def head_name(lr: float, wd: float) -> str:
    return f"lr{lr:g}_wd{wd:g}"


class ProbeModule(L.LightningModule):
    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        kind: str = "linear",
        lrs: Sequence[float] = (1e-3,),
        wds: Sequence[float] = (0.0,),
        predictor: Optional[nn.Module] = None,
        predictor_lr: float = 1e-4,
        warmup_fraction: float = 0.1,
        num_heads: int = 4,
    ):
        super().__init__()
        if kind not in ("linear", "attentive"):
            raise ValueError(f"kind must be 'linear' or 'attentive', got {kind!r}")
        self.encoder = encoder.eval().requires_grad_(False)
        self.predictor = predictor
        self.predictor_lr = predictor_lr
        self.warmup_fraction = warmup_fraction
        dim = getattr(encoder, "embed_dim", None) or encoder.num_features
        self.grid = [(float(lr), float(wd)) for lr, wd in product(lrs, wds)]
        if not self.grid:
            raise ValueError("the probe grid is empty: give at least one lr and one weight decay")
        self.names = [head_name(lr, wd) for lr, wd in self.grid]

        def make() -> nn.Module:
            return LinearHead(dim, num_classes) if kind == "linear" else AttentiveHead(dim, num_classes, num_heads)

        self.heads = nn.ModuleList([make() for _ in self.grid])
        self.top1 = nn.ModuleList([MulticlassAccuracy(num_classes, top_k=1, average="micro") for _ in self.grid])
        k5 = min(5, num_classes)
        self.top5 = nn.ModuleList([MulticlassAccuracy(num_classes, top_k=k5, average="micro") for _ in self.grid])

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen: no dropout / drop-path, whatever Lightning toggles
        return self

    def tokens(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            t = self.encoder.forward_tokens(x) if hasattr(self.encoder, "forward_tokens") else self.encoder(x)[:, None]
        return t if self.predictor is None else self.predictor.predict_all(t)  # the null action

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        t = self.tokens(x)
        losses = [F.cross_entropy(head(t).float(), y) for head in self.heads]
        loss = torch.stack(losses).sum()
        self.log("train/loss", loss / len(losses), prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        t = self.tokens(x)
        for head, m1, m5 in zip(self.heads, self.top1, self.top5):
            logits = head(t).float()
            m1.update(logits, y)
            m5.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        for name, m1, m5 in zip(self.names, self.top1, self.top5):
            self.log(f"val/top1/{name}", m1.compute())
            self.log(f"val/top5/{name}", m5.compute())
            m1.reset()
            m5.reset()

    def results(self, select: Dict[str, Any], test: Dict[str, Any]) -> Dict[str, Any]:
        """The head chosen on ``select`` (the validation metrics on images held out from training)
        and its ``test`` top-1/top-5, in percent; every head's figures under ``heads``."""
        heads = {n: {"select_top1": 100 * float(select[f"val/top1/{n}"]), "top1": 100 * float(test[f"val/top1/{n}"]),
                     "top5": 100 * float(test[f"val/top5/{n}"])} for n in self.names}
        best = max(self.names, key=lambda n: heads[n]["select_top1"])  # the first of equals: grid order
        return {"top1": heads[best]["top1"], "top5": heads[best]["top5"], "select_top1": heads[best]["select_top1"],
                "best_head": best, "heads": heads}

    def configure_optimizers(self):
        groups: List[Dict[str, Any]] = [
            {"params": list(head.parameters()), "lr": lr, "weight_decay": wd}
            for head, (lr, wd) in zip(self.heads, self.grid)
        ]
        if self.predictor is not None:
            groups.append({"params": list(self.predictor.parameters()), "lr": self.predictor_lr, "weight_decay": 0.05})
        opt = torch.optim.AdamW(groups)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(math.ceil(self.warmup_fraction * total))
        sched = LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup, final_ratio=0.0))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
