"""The callbacks of a training run, built in this one place (``jepa_zoo.train`` calls it).

In order:

* the run's status (:class:`~jepa_zoo.callbacks.run_status.RunStatus`, first);
* :class:`~jepa_zoo.callbacks.progress.LastStep` (before the others, which read its stop flag);
* ``perf/``, the progress bar and the model summary;
* checkpoints: ``ModelCheckpoint`` (``step<N>.ckpt``, ``last.ckpt``), save on SIGTERM, the final
  step's checkpoint, the random generators' state;
* the method's own (``JEPAModule.callbacks()``, e.g. IWM's world-model MRR);
* the online monitors (``val/rankme``, ``val/knn_top1``, the end-of-training comparison with the
  initial encoder) and the image panels.

Two callbacks are not here: the datamodule's loader position (``TookBatch``) and non-finite step
skipping (``NonFiniteGuard``) come from the module's ``configure_callbacks``, so that every Trainer
fitting a jepa_zoo module has them (``JEPAModule.setup`` refuses to train without them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Tuple


def monitors(cfg: Any) -> List[Any]:
    """The online monitors ``cfg.monitors`` enables (``val/rankme``, ``val/knn_top1``, ...)."""
    from jepa_zoo.callbacks.monitors import EmbeddingMonitor, OnlineKNN

    m = cfg.monitors
    out: List[Any] = []
    if m.rankme:
        out.append(EmbeddingMonitor(max_images=m.max_images))
    if m.knn:
        out.append(OnlineKNN(m.knn_queue, m.knn_k, m.knn_temperature, max_images=m.max_images))
    if m.final_knn:
        from jepa_zoo.callbacks.learned import TrainedVsInit

        out.append(TrainedVsInit(m.final_knn, m.knn_k, m.knn_temperature))
    return out


def panels(spec: Any, collapse: Optional[str] = None) -> Tuple[Any, ...]:
    """The dashboard sections of a method (its :class:`~jepa_zoo.registry.MethodSpec`) trained with
    ``collapse=<collapse>`` (None: its default): what every method logs (the module base, the
    non-finite guard, the monitors, ``perf/``, the image panels: the plug-ins assembled here), then the
    method's own (``spec.panels``), then the collapse part's; sections of one name are joined
    (:func:`jepa_zoo.panels.merge`)."""
    from jepa_zoo.callbacks import images, monitors as online, nonfinite, perf
    from jepa_zoo.panels import merge

    base, parts = spec.module.shared_panels(collapse or spec.collapses[0])  # the module base's, the collapse part's
    return merge(base, nonfinite.PANELS, online.PANELS, perf.PANELS, images.PANELS, parts, spec.panels)


def training_callbacks(cfg: Any, ckpt_dir: Path, model: Any, status: Any) -> List[Any]:
    """Every callback of a training run of ``model`` with the validated config ``cfg``, in order."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from jepa_zoo.callbacks.perf import PerfMonitor
    from jepa_zoo.callbacks.progress import LastStep, ParamSummary, StepProgressBar
    from jepa_zoo.checkpointing import FinalCheckpoint, RNGState, SaveOnPreemption

    def batch_size(batch: Any) -> int:
        labels = getattr(batch, "labels", None)  # a jepa_zoo.data.batch.Batch or MaskedBatch
        return int((labels if labels is not None else batch[-1]).shape[0])  # an untyped batch: labels last

    out: List[Any] = [status, LastStep()]
    if cfg.monitors.perf:  # compile=true: the first interval after the (eager) counted step is torch.compile's
        out.append(PerfMonitor(batch_size, count_flops=cfg.monitors.perf_flops, skip_intervals=int(cfg.compile)))
    if cfg.trainer.get("enable_progress_bar", True):
        out.append(StepProgressBar(refresh_rate=cfg.progress_every_n_steps))
    if cfg.trainer.get("enable_model_summary", True):
        out.append(ParamSummary())
    out.append(ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="step{step:08d}",
        auto_insert_metric_name=False,
        save_last=True,
        enable_version_counter=False,  # resume=auto overwrites last.ckpt instead of writing last-v1.ckpt
        save_top_k=cfg.checkpoint.save_top_k,
        monitor="step", mode="max",  # "top k" by step: keep the k most recent (Lightning allows k > 1 only with a monitor)
        every_n_train_steps=cfg.checkpoint.every_n_train_steps,
    ))
    out += [SaveOnPreemption(ckpt_dir), FinalCheckpoint(ckpt_dir), RNGState()]
    out += model.callbacks()
    out += monitors(cfg)
    if cfg.images.enabled:  # masks / view pairs / retrievals at validation, also as PNGs in the run dir
        from jepa_zoo.callbacks.images import ImageLogger

        out.append(ImageLogger(cfg.images.every_n_epochs, cfg.images.num_images, seed=cfg.seed))
    return out
