"""Logger factories referenced from ``conf/logger/*.yaml``, and the console and log-file hygiene of
the entry points (:func:`quiet_logs`)."""

from __future__ import annotations

import logging
import netrc
import os
import secrets
from typing import Optional, Sequence

log = logging.getLogger(__name__)


def _wandb_key_available() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc()
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
    return rc.authenticators(host) is not None


def _run_id(save_dir: str) -> Optional[str]:
    """The W&B run id of this run dir: read from ``<save_dir>/wandb/run_id`` (a resumed run), or
    made and written there by rank 0 (other ranks never log to W&B and get None)."""
    from lightning.pytorch.utilities import rank_zero_only

    path = os.path.join(save_dir, "wandb", "run_id")
    if os.path.isfile(path):
        with open(path) as f:
            return f.read().strip()
    if rank_zero_only.rank != 0:
        return None
    run_id = secrets.token_hex(6)  # W&B run ids: any short string of [a-z0-9]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(run_id + "\n")
    return run_id


def wandb_logger(
    save_dir: str,
    project: str = "jepa_zoo",
    entity: Optional[str] = None,
    group: Optional[str] = None,
    tags: Sequence[str] = (),
    name: Optional[str] = None,
    offline: Optional[bool] = None,
    log_model: bool = False,
    id: Optional[str] = None,  # noqa: A002 - W&B's own name for it
):
    """Lightning's WandbLogger that never prompts.

    ``offline=None`` (default) streams when an API key is configured
    (``WANDB_API_KEY`` or ``~/.netrc``) and otherwise writes offline run files
    under ``<save_dir>/wandb`` for a later ``wandb sync``.  The run id is kept in
    ``<save_dir>/wandb/run_id``, so ``resume=auto`` (same run dir) continues the
    same W&B run (``resume="allow"``); ``id`` forces one.
    """
    from lightning.pytorch.loggers import WandbLogger

    if offline is None:
        offline = os.environ.get("WANDB_MODE") in ("offline", "dryrun") or not _wandb_key_available()
        if offline:
            log.info("W&B: no API key found, logging offline; upload later with `wandb sync %s/wandb/offline-run-*`",
                     save_dir)
    os.makedirs(save_dir, exist_ok=True)
    logger = WandbLogger(
        save_dir=save_dir, project=project, entity=entity, group=group, tags=list(tags), name=name,
        offline=offline, log_model=log_model, id=id or _run_id(save_dir), resume="allow",
    )
    # Lightning always hands wandb.init an ``anonymous`` setting (None when unset), which current
    # wandb answers with "The anonymous setting has no effect" on every run: leave it out when unset
    if logger._wandb_init.get("anonymous") is None:
        logger._wandb_init.pop("anonymous", None)
    return logger


def sweep_group(mode: object = None, sweep_dir: Optional[str] = None) -> Optional[str]:
    """``${jz_sweep_group:}``: a multirun's runs share one W&B group, named after the sweep dir
    (``<method>/<timestamp>``); a single run, or a config composed outside Hydra's app, has none.
    ``mode`` and ``sweep_dir`` default to the running Hydra app's."""
    if mode is None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        mode, sweep_dir = hc.mode, hc.sweep.dir
    if "MULTIRUN" not in str(mode):
        return None
    parts = os.path.normpath(str(sweep_dir)).split(os.sep)
    return "/".join(parts[-2:])


def _no_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip")  # Lightning's advertisement on every run


def quiet_logs() -> None:
    """Each line once, also in the run's log file, and only lines a user can act on: ``import lightning``
    adds its own console handlers, but Hydra's root handlers (console and ``train.log``) show its
    records; the
    litlogger tip, a warning from inside Lightning (torch's LeafSpec deprecation), the
    checkpoint-dir warning that our own ``config.yaml`` there causes (``jepa_zoo.train`` warns
    about earlier checkpoints itself) and the empty-validation-list warning (the datamodule says
    that validation is off) are dropped."""
    import warnings

    if logging.getLogger().handlers:  # Hydra's console and file handlers: Lightning's records go there
        # lightning, lightning.pytorch and lightning.fabric each add a console handler (the last two with
        # propagate=False) when imported before Hydra configures logging, as our schemas' imports do
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            lg = logging.getLogger(name)
            for h in [h for h in lg.handlers if type(h) is logging.StreamHandler]:
                lg.removeHandler(h)
            lg.propagate = True
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _no_tip not in tips.filters:
        tips.addFilter(_no_tip)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    # bf16-mixed: the summary's size column is an estimate; nothing for a user to do
    warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the model summary")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # no validation split: the datamodule says so in its own words (validation off)
    warnings.filterwarnings("ignore", message=r"Total length of `list` across ranks is zero")
    # the last step is always logged (jepa_zoo.callbacks.progress.LastStep): a short epoch loses nothing
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
