"""Training entry point: ``python -m jepa_zoo.train method=lejepa backbone=vit_b data=imagenet ...``.

Hydra composes ``jepa_zoo/conf/train.yaml`` with the groups method/,
backbone/, masking/, data/, hardware/, logger/, experiment/; the result is
validated against the schemas in :mod:`jepa_zoo.config` before anything is
built.  Outputs go to the Hydra run dir: ``checkpoints/last.ckpt``,
``checkpoints/config.yaml`` (the resolved config) and the logger's files.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List

import hydra
from omegaconf import DictConfig, OmegaConf

from jepa_zoo.config import ConfigError, TrainConfig, validate
from jepa_zoo.data.datasets import DataError

log = logging.getLogger("jepa_zoo.train")


def _single_log_stream() -> None:
    """``import lightning`` adds its own console handler; Hydra's root handlers (console and
    ``train.log``) already show its records, so drop it to print each line once."""
    lg = logging.getLogger("lightning")
    if logging.getLogger().handlers:
        for h in [h for h in lg.handlers if type(h) is logging.StreamHandler]:
            lg.removeHandler(h)


def build_callbacks(cfg: TrainConfig, ckpt_dir: Path) -> List[Any]:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from jepa_zoo.callbacks.perf import PerfMonitor

    def batch_size(batch: Any) -> int:
        return int(batch[-1].shape[0])  # labels are last in every method's batch

    # compile=true: the first interval after the (eager) counted step is torch.compile's, not training's
    perf = ([PerfMonitor(batch_size, count_flops=cfg.monitors.perf_flops, skip_intervals=int(cfg.compile))]
            if cfg.monitors.perf else [])
    if cfg.trainer.get("enable_progress_bar", True):
        from lightning.pytorch.callbacks import TQDMProgressBar

        perf.append(TQDMProgressBar(refresh_rate=cfg.progress_every_n_steps))
    return perf + [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="step{step:08d}",
            auto_insert_metric_name=False,
            save_last=True,
            enable_version_counter=False,  # resume=auto overwrites last.ckpt instead of writing last-v1.ckpt
            save_top_k=cfg.checkpoint.save_top_k,
            monitor="step", mode="max",  # "top k" by step: keep the k most recent (Lightning allows k > 1 only with a monitor)
            every_n_train_steps=cfg.checkpoint.every_n_train_steps,
        ),
    ]


def build_monitors(cfg: TrainConfig) -> List[Any]:
    """The online monitors ``cfg.monitors`` enables (``val/rankme``, ``val/knn_top1``, ...)."""
    from jepa_zoo.callbacks.monitors import EmbeddingMonitor, OnlineKNN

    m = cfg.monitors
    out: List[Any] = []
    if m.rankme:
        out.append(EmbeddingMonitor(max_images=m.max_images))
    if m.knn:
        out.append(OnlineKNN(m.knn_queue, m.knn_k, m.knn_temperature, max_images=m.max_images))
    return out

def _finish_wandb(logger: Any) -> None:
    """End this job's W&B run: the jobs of a local ``--multirun`` share one process, and W&B
    (through Lightning's logger) would otherwise log the next job into this job's run."""
    from lightning.pytorch.loggers import WandbLogger

    if isinstance(logger, WandbLogger) and getattr(logger, "_experiment", None) is not None:
        import wandb

        wandb.finish()


def run(cfg: DictConfig) -> Dict[str, float]:
    """Validate, build and fit; return the final logged metrics (floats)."""
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.utilities import rank_zero_only

    from jepa_zoo.checkpointing import (
        AtomicCheckpointIO, FinalCheckpoint, RNGState, SaveOnPreemption, check_compatible, resolve_resume,
        slurm_requeue_plugins,
    )
    from jepa_zoo.data.datamodule import JEPADataModule
    from jepa_zoo.methods import build_model, get_method

    _single_log_stream()
    tc = validate(cfg)
    model = build_model(tc, num_classes=tc.data.num_classes)  # seeds first
    method_cls = get_method(tc.method.name)
    dm = JEPADataModule(tc.data, method_cls.train_transform(tc), method_cls.collate_fn(tc), seed=tc.seed)

    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    resume = resolve_resume(tc.resume, ckpt_dir)
    if resume is not None:
        check_compatible(resume, tc)
    if rank_zero_only.rank == 0:  # the complete validated config, schema defaults included
        OmegaConf.save(OmegaConf.structured(tc), ckpt_dir / "config.yaml")

    logger = hydra.utils.instantiate(tc.logger) if tc.logger else False
    callbacks = build_callbacks(tc, ckpt_dir) + model.callbacks()
    callbacks += [SaveOnPreemption(ckpt_dir), FinalCheckpoint(ckpt_dir), RNGState()]
    callbacks += build_monitors(tc)
    if tc.images.enabled:  # masks / view pairs / retrievals at validation, also as PNGs in the run dir
        from jepa_zoo.callbacks.images import ImageLogger

        callbacks.append(ImageLogger(tc.images.every_n_epochs, tc.images.num_images, seed=tc.seed))
    trainer_args = dict(tc.trainer)
    if trainer_args.get("strategy") == "fsdp":  # torch's FSDP2 on every process (jepa_zoo/parallel.py)
        from jepa_zoo.parallel import FSDPStrategy

        trainer_args["strategy"] = FSDPStrategy(tc.fsdp.reshard_after_forward, tc.fsdp.param_dtype,
                                                 tc.fsdp.reduce_every_micro_batch)
    try:
        trainer = L.Trainer(**trainer_args, default_root_dir=str(run_dir), logger=logger, callbacks=callbacks,
                            plugins=[AtomicCheckpointIO(), *slurm_requeue_plugins()])
    except (ValueError, TypeError, MisconfigurationException) as e:
        raise ConfigError(f"trainer: {e}") from e
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=resume)
    finally:
        _finish_wandb(logger)
    metrics = {k: float(v) for k, v in trainer.logged_metrics.items()}
    log.info("final metrics: %s", {k: round(v, 4) for k, v in sorted(metrics.items())})
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from jepa_zoo.methods.base import NonFiniteLossError

    try:
        metrics = run(cfg)
    except (ConfigError, DataError) as e:
        log.error("%s: %s", type(e).__name__, e)
        sys.exit(2)
    except NonFiniteLossError as e:
        log.error("%s: %s. Stopped; the last good checkpoint is %s/checkpoints/last.ckpt (if one was saved); "
                  "nonfinite_loss=skip skips such steps instead", type(e).__name__, e, cfg.run_dir)
        sys.exit(3)
    except SIGTERMException:
        log.error("stopped by SIGTERM; checkpoint saved, run again with resume=auto (same run dir) to continue")
        sys.exit(143)
    return metrics.get("train/loss", float("nan"))


def short_dirname(name: str, max_len: int = 180) -> str:
    """A sweep run's dir name: the overrides as Hydra joins them, cut to ``max_len`` characters with a
    hash of the whole so names stay unique (file systems refuse names over 255 bytes)."""
    if len(name) <= max_len:
        return name
    return f"{name[: max_len - 9]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def register_resolvers() -> None:
    """OmegaConf resolvers the configs use (``${jz_dirname:...}``); called before Hydra composes."""
    from jepa_zoo.loggers import sweep_group

    if not OmegaConf.has_resolver("jz_dirname"):
        OmegaConf.register_new_resolver("jz_dirname", short_dirname)
    if not OmegaConf.has_resolver("jz_add"):
        OmegaConf.register_new_resolver("jz_add", lambda *xs: sum(int(x) for x in xs))
    if not OmegaConf.has_resolver("jz_sweep_group"):
        OmegaConf.register_new_resolver("jz_sweep_group", sweep_group)


if __name__ == "__main__":
    register_resolvers()
    main()
