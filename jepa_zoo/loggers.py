"""Logger factories referenced from ``conf/logger/*.yaml``."""

from __future__ import annotations

import logging
import netrc
import os
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


def wandb_logger(
    save_dir: str,
    project: str = "jepa_zoo",
    entity: Optional[str] = None,
    group: Optional[str] = None,
    tags: Sequence[str] = (),
    name: Optional[str] = None,
    offline: Optional[bool] = None,
    log_model: bool = False,
):
    """Lightning's WandbLogger that never prompts.

    ``offline=None`` (default) streams when an API key is configured
    (``WANDB_API_KEY`` or ``~/.netrc``) and otherwise writes offline run files
    under ``<save_dir>/wandb`` for a later ``wandb sync``.
    """
    from lightning.pytorch.loggers import WandbLogger

    if offline is None:
        offline = os.environ.get("WANDB_MODE") in ("offline", "dryrun") or not _wandb_key_available()
        if offline:
            log.info("W&B: no API key found, logging offline; upload later with `wandb sync %s/wandb/offline-run-*`",
                     save_dir)
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(
        save_dir=save_dir, project=project, entity=entity, group=group, tags=list(tags), name=name,
        offline=offline, log_model=log_model,
    )
