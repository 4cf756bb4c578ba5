"""Heads and fine-tuning that train with Lightning on the images: the on-the-fly linear and
attentive probes (:mod:`jepa_zoo.evaluation.probes`, optionally through the world-model predictor)
and end-to-end fine-tuning (:mod:`jepa_zoo.evaluation.finetune`), for ``python -m jepa_zoo.eval``."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict

import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch import Callback
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from jepa_zoo.data.datasets import DataError
from jepa_zoo.errors import ConfigError

log = logging.getLogger("jepa_zoo.eval")


def run_probe(cfg: DictConfig, model, encoder: torch.nn.Module, train_set: Dataset, sets: Dict[str, Dataset],
              num_classes: int) -> Dict[str, Any]:
    """Train a grid of linear / attentive heads (and, with ``features=predictor``, the predictor);
    the head is chosen on ``sets["select"]`` (held out from the training images) and reported on
    ``sets["test"]``."""
    from jepa_zoo.evaluation.probes import ProbeModule

    predictor = None
    if cfg.features == "predictor":
        from jepa_zoo.models.predictor import Predictor

        predictor = model.parts().predictor
        if not isinstance(predictor, Predictor):
            raise ConfigError(f"features: method {model.cfg.method.name} has no JEPA predictor "
                              f"(jepa_zoo.models.predictor.Predictor) to put before the head")
        predictor.train()
    p = cfg.probe
    probe = ProbeModule(encoder, num_classes, cfg.protocol, lrs=list(p.lrs), wds=list(p.wds),
                        predictor=predictor, predictor_lr=p.predictor_lr, num_heads=p.num_heads)
    scores = _fit(cfg, p, probe, train_set, sets)
    return probe.results(scores["select"], scores["test"])


def _readable(batch: list) -> Any:
    """The default collate of the readable samples: a random training clip past the readable part of a
    partly corrupt video (the scan read its middle clip) comes back :class:`Unreadable`; it is dropped."""
    from jepa_zoo.data.datasets import drop_unreadable

    kept, dropped = drop_unreadable(batch)
    if kept is None:
        raise DataError(f"a whole batch of {len(batch)} training samples could not be read "
                        f"(first: {next(iter(dropped.values())).path})")
    return kept


class EpochLog(Callback):
    """One log line per training epoch of a head / fine-tuning (the bar is off by default)."""

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        log.info("  epoch %d/%d: %d steps, train/loss %s, %.1f s", trainer.current_epoch + 1, trainer.max_epochs,
                 trainer.global_step, f"{float(loss):.4f}" if loss is not None else "-", time.perf_counter() - self.start)


def _fit(cfg: DictConfig, schedule: DictConfig, module, train_set: Dataset, sets: Dict[str, Dataset]) -> Dict:
    """Train ``module`` (``schedule``: epochs, max_steps, precision), then validate it on each of
    ``sets``; ``{name: the metrics logged on it}``.  The batch is at most the training set's size
    (the loader drops a last partial batch), and a fit in which no step ran is refused."""
    import warnings

    import lightning as L

    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # the frozen encoder, on purpose
    warnings.filterwarnings("ignore", message=r"You defined a `validation_step` but have no `val_dataloader`")
    batch = min(cfg.batch_size, len(train_set))
    if batch < cfg.batch_size:
        log.info("batch_size: %d training images, so batches of %d (not %d)", len(train_set), batch, cfg.batch_size)
    loader = dict(batch_size=batch, num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0)
    trainer = L.Trainer(
        max_epochs=schedule.epochs, max_steps=schedule.max_steps if schedule.max_steps is not None else -1,
        precision=schedule.precision, logger=False, enable_checkpointing=False, enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, callbacks=[EpochLog()],
        default_root_dir=str(Path(HydraConfig.get().runtime.output_dir)) if HydraConfig.initialized() else None,
    )
    log.info("training for %d epoch(s) of %d batches on %d images%s ...", schedule.epochs, len(train_set) // batch,
             len(train_set), "" if cfg.progress_bar else " (progress_bar=true shows a bar)")
    trainer.fit(module, DataLoader(train_set, shuffle=True, drop_last=True, collate_fn=_readable, **loader))
    if trainer.global_step == 0:
        raise DataError(f"no training step ran ({len(train_set)} training images, batch {batch}): no result written")
    log.info("trained %d steps on %d images; validating on %s", trainer.global_step, len(train_set),
             ", ".join(f"{k} ({len(v)} images)" for k, v in sets.items()))
    out = {}
    trainer.limit_val_batches = 1.0  # off during fit: the sets are validated once, here
    for name, ds in sets.items():
        (out[name],) = trainer.validate(module, DataLoader(ds, **{**loader, "batch_size": cfg.batch_size}),
                                        verbose=False)
    return out


def run_finetune(cfg: DictConfig, encoder: torch.nn.Module, train_set: Dataset, sets: Dict[str, Dataset],
                 num_classes: int) -> Dict[str, Any]:
    """Fine-tune the evaluation encoder end to end with a linear head."""
    from jepa_zoo.evaluation.finetune import FinetuneModule

    f = cfg.finetune
    try:
        module = FinetuneModule(encoder, num_classes, lr=f.lr, weight_decay=f.weight_decay,
                                layer_decay=f.layer_decay, label_smoothing=f.label_smoothing)
    except ValueError as e:
        raise ConfigError(f"finetune: {e}") from None
    return module.results(_fit(cfg, f, module, train_set, sets)["test"])
