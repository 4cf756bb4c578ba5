"""Callback: the world model's MRR (``val/mrr``, ``val/mrr_cos``) at the end of validation.

Uses the first ``num_images`` images of the validation split (their
normalisation undone) and a fixed generator, so successive values compare
the same queries and banks.  Each image costs ``bank_size`` passes of the predictor and the target
encoder, so ``trainer.limit_val_batches`` bounds it too: at most one image per validation batch
the run scores (``limit_val_batches=2``: 2 images).  Progress is logged about every 10 %.
"""

from __future__ import annotations

import logging
import time

import lightning as L
import torch

from jepa_zoo.evaluation.mrr import world_model_mrr

log = logging.getLogger(__name__)


class MRRCallback(L.Callback):
    def __init__(self, every_n_epochs: int = 1, num_images: int = 16, bank_size: int = 256, seed: int = 0):
        """Every ``every_n_epochs`` epochs: the first ``num_images`` validation images, ``bank_size``
        target views each.  The module provides ``predict_all``, ``target_features`` and
        ``action_strength`` (:func:`jepa_zoo.evaluation.mrr.world_model_mrr`; IWM)."""
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.bank_size = bank_size
        self.seed = seed

    def _count(self, trainer: L.Trainer) -> int:
        """The images ranked: ``num_images``; under ``trainer.limit_val_batches`` at most one per
        validation batch the run scores."""
        n = min(self.num_images, len(trainer.datamodule.val_set))
        if trainer.limit_val_batches in (None, 1.0):  # not limited (Lightning's default: 1.0)
            return n
        batches = sum(trainer.num_val_batches) if isinstance(trainer.num_val_batches, list) else trainer.num_val_batches
        return int(min(n, batches)) if batches == batches and batches >= 1 else n  # NaN / inf: no limit

    def _images(self, trainer: L.Trainer, pl_module, n: int) -> torch.Tensor:
        dm = trainer.datamodule
        x = torch.stack([dm.val_set[i][0] for i in range(n)]).to(pl_module.device)
        mean = torch.tensor(dm.cfg.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(dm.cfg.std, device=x.device).view(1, 3, 1, 1)
        return (x * std + mean).clamp(0, 1)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        dm = trainer.datamodule
        if getattr(dm, "val_set", None) is None:
            return  # no validation split: nothing to rank
        gen = torch.Generator().manual_seed(self.seed)
        n = self._count(trainer)
        log.info("val/mrr: ranking %d images against %d target augmentations each (method.mrr.*%s) ...", n,
                 self.bank_size, "; trainer.limit_val_batches caps it" if n < min(self.num_images, len(dm.val_set))
                 else "")
        start, every = time.perf_counter(), max(1, n // 10)

        def progress(done: int, total: int) -> None:
            if done % every == 0 and done < total:
                spent = time.perf_counter() - start
                log.info("  val/mrr: %d/%d images, %.0f s (about %.0f s left)", done, total, spent,
                         spent / done * (total - done))

        scores = world_model_mrr(pl_module, self._images(trainer, pl_module, n), dm.cfg.mean, dm.cfg.std,
                                 self.bank_size, generator=gen, progress=progress)
        log.info("val/mrr: %.4f (chance %.4f) in %.0f s", scores["mrr"], scores["chance"], time.perf_counter() - start)
        pl_module.log("val/mrr", scores["mrr"])
        pl_module.log("val/mrr_cos", scores["mrr_cos"])
