"""``run_summary.json`` while a run trains: ``running`` once training has started, the exception
that ended it (a Ctrl-C inside ``fit``, which Lightning turns into ``sys.exit(1)``).

The entry point writes the end (``finished``, ``failed``, ``stopped``; :func:`jepa_zoo.train.main`).
A launch refused before training starts (a config or data error found while Lightning sets up)
never reaches :meth:`RunStatus.on_train_start`, so the status of an earlier run in the same dir
stays as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from lightning.pytorch import Callback

from jepa_zoo.runs import write_summary


class RunStatus(Callback):
    def __init__(self, run_dir: Path, **fields: Any):
        self.run_dir = Path(run_dir)
        self.fields: Dict[str, Any] = fields
        self.started = False
        self.exception: Optional[BaseException] = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.started = True
        if trainer.is_global_zero:
            write_summary(self.run_dir, "running", new_launch=True, **self.fields)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.exception = exception
