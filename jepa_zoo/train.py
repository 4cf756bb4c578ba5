"""Training entry point: ``python -m jepa_zoo.train method=lejepa backbone=vit_b data=imagenet ...``.

Hydra composes ``jepa_zoo/conf/train.yaml`` with the groups method/,
backbone/, masking/, data/, hardware/, logger/, experiment/; the result is
validated against the schemas in :mod:`jepa_zoo.config` before anything is
built.  Outputs go to the Hydra run dir: ``checkpoints/last.ckpt``,
``checkpoints/config.yaml`` (the resolved config) and the logger's files.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import hydra
from omegaconf import DictConfig, OmegaConf

from jepa_zoo.config import ConfigError, validate
from jepa_zoo.data.datasets import DataError
from jepa_zoo.loggers import quiet_logs
from jepa_zoo.runs import is_fresh, read_summary, remove_launch, write_summary

log = logging.getLogger("jepa_zoo.train")


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
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities import rank_zero_only

    from jepa_zoo.callbacks.assemble import training_callbacks
    from jepa_zoo.callbacks.run_status import RunStatus
    from jepa_zoo.checkpointing import AtomicCheckpointIO, check_compatible, resolve_resume, slurm_requeue_plugins
    from jepa_zoo.data.datamodule import JEPADataModule
    from jepa_zoo.methods import build_model, get_method

    quiet_logs()
    tc = validate(cfg)
    model = build_model(tc, num_classes=tc.data.num_classes)  # seeds first
    method_cls = get_method(tc.method.name, tc.method.module)
    dm = JEPADataModule(tc.data, method_cls.train_transform(tc), method_cls.collate_fn(tc), seed=tc.seed,
                        compile_photometric=tc.compile, val_transform=method_cls.val_transform(tc))
    smallest = min(method_cls.input_sizes(tc).values())
    if tc.backbone.name.startswith("resnet") and not tc.backbone.cifar_stem and smallest <= 64:
        log.warning("backbone %s at %d px: its 7x7/2 stem and max-pool leave a %d-px map for the first block; "
                    "backbone.cifar_stem=true keeps small images whole", tc.backbone.name, smallest, -(-smallest // 4))

    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    resume = resolve_resume(tc.resume, ckpt_dir)
    if resume is None and any(ckpt_dir.glob("*.ckpt")):
        log.warning("%s already holds checkpoints from an earlier run; this run starts afresh and replaces them "
                    "(resume=auto continues that run instead)", ckpt_dir)
    if resume is not None:
        check_compatible(resume, tc)
        if tc.init_from:
            log.info("init_from=%s not used: resuming %s continues that run", tc.init_from, resume)
    elif tc.init_from:  # weights only, before training: a tensor that does not fit stops here
        from jepa_zoo.pretrained import init_from_

        log.info("init_from: loaded %s", init_from_(model, tc.init_from))
    if rank_zero_only.rank == 0:  # the complete validated config, schema defaults included
        OmegaConf.save(OmegaConf.structured(tc), ckpt_dir / "config.yaml")
    log.info("run dir: %s (checkpoints in %s)", run_dir, ckpt_dir)
    status = RunStatus(run_dir, method=tc.method.name, config="checkpoints/config.yaml", resumed_from=resume,
                       command=_command())

    logger = hydra.utils.instantiate(tc.logger) if tc.logger else False
    loggers = [logger] if logger else []
    if logger and not isinstance(logger, CSVLogger):  # metrics.csv always: reports read it, with any logger
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=None))
    callbacks = training_callbacks(tc, ckpt_dir, model, status)
    trainer_args = dict(tc.trainer, enable_model_summary=False)  # ours (ParamSummary) when enabled
    if trainer_args.get("strategy") == "fsdp":  # torch's FSDP2 on every process (jepa_zoo/parallel.py)
        from jepa_zoo.parallel import FSDPStrategy

        trainer_args["strategy"] = FSDPStrategy(tc.fsdp.reshard_after_forward, tc.fsdp.param_dtype,
                                                 tc.fsdp.reduce_every_micro_batch)
    try:
        trainer = L.Trainer(**trainer_args, default_root_dir=str(run_dir), logger=loggers or False, callbacks=callbacks,
                            plugins=[AtomicCheckpointIO(), *slurm_requeue_plugins()])
    except (ValueError, TypeError, MisconfigurationException) as e:
        raise ConfigError(f"trainer: {e}") from e
    _STARTED.clear()
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=resume, weights_only=True if resume else None)
    except SystemExit:
        if isinstance(status.exception, KeyboardInterrupt):  # Lightning's graceful Ctrl-C: sys.exit(1)
            raise KeyboardInterrupt from None
        raise
    finally:
        _finish_wandb(logger)
        if status.started:
            _STARTED.append(run_dir)
    metrics = {k: float(v) for k, v in trainer.logged_metrics.items() if k not in ("step", "epoch")}
    for callback in trainer.callbacks:  # what callbacks measured at the end (final/knn_trained, ...)
        metrics.update(getattr(callback, "final_metrics", {}))
    last = ckpt_dir / "last.ckpt"
    log.info("final metrics (step %d):\n%s", trainer.global_step, metrics_table(metrics))
    log.info("run dir: %s%s", run_dir, f"\ncheckpoint: {last}" if last.is_file() else "")
    if rank_zero_only.rank == 0:
        write_summary(run_dir, "finished", step=trainer.global_step, metrics=metrics, val_images=_val_images(trainer, dm),
                      checkpoint="checkpoints/last.ckpt" if last.is_file() else None)
    return metrics


def metrics_table(metrics: Dict[str, float]) -> str:
    """One ``name  value`` line a metric, sorted, four significant digits (``train/lr`` 6.3e-06, not 0.0)."""
    width = max((len(k) for k in metrics), default=0)
    return "\n".join(f"  {k:<{width}}  {v:.4g}" for k, v in sorted(metrics.items()))


def _val_images(trainer: Any, dm: Any) -> Optional[int]:
    """The validation images each validation of the run scored (its ``limit_val_batches`` applied)."""
    if getattr(dm, "val_set", None) is None or not trainer.num_val_batches:
        return None
    batch = dm.cfg.val_batch_size or dm.cfg.batch_size
    return int(min(len(dm.val_set) // trainer.world_size, sum(trainer.num_val_batches) * batch) * trainer.world_size)


_STARTED: List[Path] = []  # the run dir, once this launch's training has started (RunStatus)


def _command() -> str:
    """This job's command line (a sweep's job: its own overrides)."""
    from hydra.core.hydra_config import HydraConfig

    args = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else sys.argv[1:]
    return " ".join(["python -m jepa_zoo.train", *args])


def _end(run_dir: Path, fresh: bool, code: int, status: str, error: BaseException) -> None:
    """Record how the launch ended, then exit with ``code`` (in a ``--multirun``, re-raise instead, so
    that Hydra runs the sweep's other jobs and reports the failure at the end).

    A launch refused before training started (a config or data error) leaves no trace: in a run dir
    Hydra made for it, the files it wrote are removed (:func:`jepa_zoo.runs.remove_launch`); in an
    earlier run's dir, that run's summary keeps its status and notes the refused launch."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.pytorch.utilities import rank_zero_only

    message = f"{type(error).__name__}: {error}"
    if rank_zero_only.rank == 0 and run_dir.is_dir():
        if status != "refused" or run_dir in _STARTED:
            write_summary(run_dir, "failed" if status == "refused" else status, exit_code=code, error=message)
        elif fresh:
            remove_launch(run_dir, f"{HydraConfig.get().job.name}.log" if HydraConfig.initialized() else "train.log")
        elif read_summary(run_dir) is not None:
            old = read_summary(run_dir)
            write_summary(run_dir, old["status"], last_launch={"status": "refused", "exit_code": code,
                                                               "error": message, "command": _command()})
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise error
    sys.exit(code)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from jepa_zoo.callbacks.nonfinite import NonFiniteLossError

    run_dir = Path(cfg.run_dir)
    fresh = is_fresh(run_dir)  # before anything of ours is written: only Hydra's files for this launch
    try:
        metrics = run(cfg)
    except (ConfigError, DataError) as e:
        # raised in a loader worker, the message carries the worker's traceback: its last line says it
        msg = str(e).strip().splitlines()[-1].split(f"{type(e).__name__}: ", 1)[-1] if "Original Traceback" in str(e) else e
        log.error("%s: %s", type(e).__name__, msg)
        _end(run_dir, fresh, 2, "refused", e)
    except NonFiniteLossError as e:
        log.error("%s: %s. Stopped; the last good checkpoint is %s/checkpoints/last.ckpt (if one was saved); "
                  "nonfinite_loss=skip skips such steps instead", type(e).__name__, e, cfg.run_dir)
        _end(run_dir, fresh, 3, "failed", e)
    except SIGTERMException as e:
        log.error("stopped by SIGTERM; checkpoint saved, run again with resume=auto (same run dir) to continue")
        _end(run_dir, fresh, 143, "stopped", e)
    except KeyboardInterrupt as e:
        log.error("interrupted (Ctrl-C); resume=auto (same run dir) continues from the last checkpoint")
        _end(run_dir, fresh, 130, "stopped", e)
    except Exception as e:  # noqa: BLE001 - not swallowed: logged with its traceback to train.log, exit 1
        log.exception("uncaught %s: %s", type(e).__name__, e)
        _end(run_dir, fresh, 1, "failed", e)
    return metrics.get("train/loss", float("nan"))


def register_resolvers() -> None:
    """What the configs need before Hydra composes them: OmegaConf resolvers (``${jz_sweep_subdir:}``,
    ...) and the method schemas that ``conf/method/*.yaml`` extend (:func:`jepa_zoo.registry.register_schemas`)."""
    from jepa_zoo.loggers import sweep_group
    from jepa_zoo.registry import register_schemas
    from jepa_zoo.runs import sweep_subdir

    register_schemas()

    if not OmegaConf.has_resolver("jz_sweep_subdir"):
        OmegaConf.register_new_resolver("jz_sweep_subdir", sweep_subdir)
    if not OmegaConf.has_resolver("jz_add"):
        OmegaConf.register_new_resolver("jz_add", lambda *xs: sum(int(x) for x in xs))
    if not OmegaConf.has_resolver("jz_sweep_group"):
        OmegaConf.register_new_resolver("jz_sweep_group", sweep_group)


if __name__ == "__main__":
    from jepa_zoo.cli import check_keys, check_paths

    register_resolvers()
    check_paths(sys.argv[1:])
    method = check_keys(sys.argv[1:], Path(__file__).parent / "conf", "train")
    if method:  # the sweep dir's <method>: the command's (a swept method: its first), one for every job
        os.environ.setdefault("JZ_SWEEP_METHOD", method)
    main()
