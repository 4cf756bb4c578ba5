"""Did it learn? At the end of training, the trained encoder against its own initialisation.

``monitors.final_knn=N`` (the README quickstart sets it): when training ends, the weighted kNN
(``monitors.knn_k``, clean centre crops, :func:`jepa_zoo.evaluation.knn.knn_accuracy`) of ``N``
test images against a bank of ``N`` training images (seeded subsets), for the trained evaluation
encoder and for the same encoder rebuilt at the run's seeded initialisation
(:func:`jepa_zoo.methods.build_model`, as ``python -m jepa_zoo.eval init=random`` does). Printed
as a two-row table in the log, and logged as ``final/knn_trained`` and ``final/knn_init`` (%).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch

log = logging.getLogger("jepa_zoo.train")


class TrainedVsInit(L.Callback):
    def __init__(self, images: int, k: int = 20, temperature: float = 0.07):
        self.images, self.k, self.temperature = images, k, temperature

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.global_rank != 0:
            return
        from jepa_zoo.evaluation.eval_data import build_sets
        from jepa_zoo.evaluation.features import FeatureCache
        from jepa_zoo.evaluation.knn import knn_accuracy
        from jepa_zoo.methods import build_model

        cfg = pl_module.cfg
        _, sets = build_sets(cfg.data, cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        bank = torch.randperm(len(sets.train), generator=gen)[: self.images].tolist()
        queries = torch.randperm(len(sets.test), generator=gen)[: self.images].tolist()
        with torch.random.fork_rng(devices=[]):  # rebuilding the initial weights reseeds
            initial = build_model(cfg, num_classes=cfg.data.num_classes).to(pl_module.device)
        batch = cfg.data.val_batch_size or cfg.data.batch_size
        scores = {}
        for name, encoder in (("trained", pl_module.eval_encoder), ("init", initial.eval_encoder)):
            was_training = encoder.training
            cache = FeatureCache(encoder.eval(), batch, cfg.data.num_workers)
            b, by = cache.get("train", sets.train, bank, "training images (the bank)")
            q, qy = cache.get("test", sets.test, queries, "test images")
            encoder.train(was_training)
            scores[name] = knn_accuracy(b, by, q, qy, ks=[self.k], temperature=self.temperature)[f"knn{self.k}_top1"]
        gain = scores["trained"] - scores["init"]
        verdict = "it learned" if gain > 0 else "not better than its initialisation (yet)"
        rows = [(f"trained (step {trainer.global_step})", scores["trained"]), ("random init", scores["init"])]
        log.info("trained vs its initialisation: kNN@%d top-1 of %d test images against %d training images\n%s\n"
                 "  %+.2f points: %s", self.k, len(queries), len(bank),
                 "\n".join(f"  {name:<22}{value:6.2f} %" for name, value in rows), gain, verdict)
        for logger in trainer.loggers:
            logger.log_metrics({"final/knn_trained": scores["trained"], "final/knn_init": scores["init"]},
                               step=trainer.global_step)
