"""Did it learn? At the end of training, the trained encoder against its own initialisation.

``monitors.final_knn=N`` (the README quickstart sets it): when training ends, the weighted kNN
(``monitors.knn_k``, clean centre crops, :func:`jepa_zoo.evaluation.knn.knn_accuracy`) of ``N``
test images against a bank of ``N`` training images (seeded subsets), for the trained evaluation
encoder and for the same encoder rebuilt at the run's seeded initialisation
(``JEPAModule.initial_copy``, as ``python -m jepa_zoo.eval init=random`` rebuilds it). Printed
as a two-row table in the log, and logged as ``final/knn_trained`` and ``final/knn_init`` (%) (also
kept in :attr:`TrainedVsInit.final_metrics`, which the run's summary holds).

The verdict is a paired test on the same queries (McNemar's, normal approximation): with ``b``
queries only the trained encoder gets right and ``c`` only the initial one does, the gain
``(b − c)/N`` is beyond noise when ``|b − c| > 1.96·√(b + c)``; otherwise the log says the gain is
within the noise band ``±1.96·√(b + c)/N`` (on 1,000 queries about ±2 points).  A time-budgeted run
that ends before twice its warm-up says so: its schedule never left the warm-up (a slow or busy
machine), and the comparison says little.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from typing import Any, Dict

import lightning as L
import torch

log = logging.getLogger("jepa_zoo.train")


class _SIGTERM(Exception):
    """A SIGTERM during the end-of-run comparison."""


def _raise_sigterm(signum: int, frame: Any) -> None:
    raise _SIGTERM


class TrainedVsInit(L.Callback):
    def __init__(self, images: int, k: int = 20, temperature: float = 0.07):
        self.images, self.k, self.temperature = images, k, temperature
        self.final_metrics: Dict[str, float] = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        """The comparison, unless a SIGTERM came (then, or while it runs: it is skipped at once, the run's
        training and checkpoint being complete; under SLURM the kill follows the SIGTERM)."""
        if trainer.global_rank != 0:
            return
        skipped = "SIGTERM: the end-of-run kNN (monitors.final_knn) is skipped; training and its checkpoint are complete"
        if trainer.received_sigterm:
            log.warning(skipped)
            return
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main_thread else None
        if main_thread:
            signal.signal(signal.SIGTERM, _raise_sigterm)
        try:
            self._compare(trainer, pl_module)
        except _SIGTERM:
            log.warning(skipped)
        finally:
            if main_thread:  # None: a handler not set from Python; the default is the nearest
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    def _compare(self, trainer: L.Trainer, pl_module: Any) -> None:
        from jepa_zoo.evaluation.eval_data import build_sets
        from jepa_zoo.evaluation.features import FeatureCache
        from jepa_zoo.evaluation.knn import knn_scores

        cfg = pl_module.cfg
        _, sets = build_sets(cfg.data, cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        bank = torch.randperm(len(sets.train), generator=gen)[: self.images].tolist()
        queries = torch.randperm(len(sets.test), generator=gen)[: self.images].tolist()
        with torch.random.fork_rng(devices=[]):  # rebuilding the initial weights reseeds
            initial = pl_module.initial_copy().to(pl_module.device)
        batch = cfg.data.val_batch_size or cfg.data.batch_size
        hits = {}
        for name, encoder in (("trained", pl_module.eval_encoder), ("init", initial.eval_encoder)):
            was_training = encoder.training
            cache = FeatureCache(encoder.eval(), batch, cfg.data.num_workers)
            b, by = cache.get("train", sets.train, bank, "training images (the bank)")
            q, qy = cache.get("test", sets.test, queries, "test images")
            encoder.train(was_training)
            num_classes = int(max(by.max(), qy.max())) + 1
            hits[name] = knn_scores(b, by, q, self.k, self.temperature, num_classes).argmax(dim=1) == qy
        scores = {name: 100.0 * h.float().mean().item() for name, h in hits.items()}
        self.final_metrics = {"final/knn_trained": scores["trained"], "final/knn_init": scores["init"]}
        rows = [(f"trained (step {trainer.global_step})", scores["trained"]), ("random init", scores["init"])]
        log.info("trained vs its initialisation: kNN@%d top-1 of %d test images against %d training images\n%s\n"
                 "  %s", self.k, len(queries), len(bank),
                 "\n".join(f"  {name:<22}{value:6.2f} %" for name, value in rows), verdict(hits["trained"], hits["init"]))
        o = cfg.method.optim  # the preset's warm-up (not capped by the few steps the budget allowed)
        warmup = (o.warmup_steps if o.warmup_steps is not None else pl_module._schedule_lengths()[1]) \
            if cfg.trainer.get("max_time") else 0
        if cfg.trainer.get("max_time") and trainer.global_step < 2 * max(warmup, 10):
            log.warning("this run made %d optimiser steps in its time budget (trainer.max_time=%s; warm-up %d steps): "
                        "the machine ran slower than the preset assumes (another process on the cores?), so the "
                        "comparison says little; give it more time", trainer.global_step, cfg.trainer["max_time"], warmup)
        for logger in trainer.loggers:
            logger.log_metrics(self.final_metrics, step=trainer.global_step)


def verdict(trained: torch.Tensor, initial: torch.Tensor) -> str:
    """The gain of ``trained`` over ``initial`` (per-query hits of the same queries) and whether it is
    beyond noise, by McNemar's paired test (module docstring)."""
    n = trained.numel()
    b = int((trained & ~initial).sum())  # right only after training
    c = int((~trained & initial).sum())  # right only at init
    gain, band = 100.0 * (b - c) / n, 100.0 * 1.96 * math.sqrt(b + c) / n
    if b - c > 1.96 * math.sqrt(b + c):
        return f"{gain:+.2f} points (noise band ±{band:.2f} on {n} queries): it learned"
    if c - b > 1.96 * math.sqrt(b + c):
        return f"{gain:+.2f} points (noise band ±{band:.2f} on {n} queries): worse than its initialisation"
    return (f"{gain:+.2f} points: within the noise band ±{band:.2f} on {n} queries: not measurably better than "
            "its initialisation (yet)")
