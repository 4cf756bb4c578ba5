"""Checkpoint files: atomic writes, resume resolution and compatibility checks.

* :class:`AtomicCheckpointIO` — Lightning's ``TorchCheckpointIO`` writing to a
  temporary file *in the same directory*, fsynced, then ``os.replace``-d over
  the target: a process killed mid-save leaves the previous checkpoint intact
  (Lightning's own transaction stages in the system temp dir, and a move
  across file systems is a copy, which is not atomic). A Ctrl-C during the
  write is held until the file is complete, then raised (a second Ctrl-C
  stops at once); without this, torch's zip writer turns the interrupt into
  a RuntimeError and the run exits 1 instead of 130.
* :func:`resolve_resume` — ``resume=auto`` (the newest of the run dir's
  ``last.ckpt`` and SLURM HPC checkpoints) or ``resume=<path>``.
* :func:`check_compatible` — refuse a checkpoint of another method or backbone.
* :class:`SaveOnPreemption` — SIGTERM: save ``last.ckpt`` at the step boundary.
* :class:`FinalCheckpoint` — ``last.ckpt`` holds the final step when training ends.
* :class:`RNGState` — the process's random generators, saved and restored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from lightning.pytorch import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from jepa_zoo.config import ConfigError, TrainConfig

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with _ctrl_c_held(path):
                with open(tmp, "wb") as f:
                    torch.save(checkpoint, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
        except Exception as e:
            if isinstance(e.__context__, KeyboardInterrupt):  # a second Ctrl-C inside torch's zip writer
                raise e.__context__ from None
            raise
        finally:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _ctrl_c_held(path: Path):
    """Hold a SIGINT that arrives inside the block and deliver it on leaving; a second one is
    delivered at once. Only in the main thread (the only one Python runs signal handlers in)."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    held: list = []

    def hold(signum, frame):
        if held:
            previous(signum, frame)
            return
        held.append(frame)
        log.warning("Ctrl-C: finishing the write of %s, then stopping (Ctrl-C again to stop now)", path)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        previous(signal.SIGINT, held[0])


def resolve_resume(resume: Optional[str], ckpt_dir: Path) -> Optional[str]:
    """The checkpoint to resume from, or None to start fresh.

    ``auto``: the newest of ``<run dir>/checkpoints/last.ckpt`` and the HPC checkpoints
    (``<run dir>/hpc_ckpt_<n>.ckpt``) that Lightning writes on SLURM's requeue signal."""
    if resume is None:
        return None
    if resume == "auto":
        found = [p for p in [ckpt_dir / "last.ckpt", *ckpt_dir.parent.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
        if found:
            newest = max(found, key=lambda p: p.stat().st_mtime_ns)
            log.info("resume=auto: continuing from %s", newest)
            return str(newest)
        log.info("resume=auto: no %s yet, starting a new run", ckpt_dir / "last.ckpt")
        return None
    path = Path(resume).expanduser()
    if not path.is_file():
        raise ConfigError(f"resume: no such checkpoint file: {path} (use resume=auto to continue a run dir)")
    return str(path)


def read_checkpoint(path: str | Path, key: str, mmap: bool = False) -> Dict[str, Any]:
    """A jepa_zoo training checkpoint, loaded ``weights_only`` on the CPU.

    Raises:
        ConfigError: one line naming ``key`` (the setting that gave the path) and the problem: no
            such file, not a PyTorch file (neither a zip archive nor a pickle; its first bytes are
            shown), unreadable, or a PyTorch file without jepa_zoo's ``hyper_parameters.cfg``."""
    from jepa_zoo.weights import load_file

    path = Path(path).expanduser()
    state = load_file(path, key, mmap=mmap)
    cfg = (state.get("hyper_parameters") or {}).get("cfg") if isinstance(state, dict) else None
    if not isinstance(cfg, dict):
        keys = ", ".join(sorted(map(str, state))[:8]) if isinstance(state, dict) else type(state).__name__
        raise ConfigError(f"{key}: {path} is not a jepa_zoo checkpoint (no hyper_parameters.cfg; it holds: {keys}); "
                          f"official weights: python -m jepa_zoo.eval ckpt=<file> data=...")
    return state


def check_compatible(path: str, tc: TrainConfig) -> None:
    """Refuse a checkpoint written by another method or backbone (before Lightning loads it); an
    unreadable one names the step checkpoints beside it that may be intact."""
    try:
        state = read_checkpoint(path, "resume", mmap=True)
    except ConfigError as e:
        others = sorted((p for p in Path(path).parent.glob("step*.ckpt") if p != Path(path)),
                        key=lambda p: p.stat().st_mtime_ns, reverse=True)
        if not others:
            raise
        raise ConfigError(f"{e}; the newest step checkpoint beside it may be intact: resume={others[0]}") from None
    cfg = state["hyper_parameters"]["cfg"]
    if tc.trainer.get("strategy") == "fsdp" and (cfg.get("trainer") or {}).get("strategy") != "fsdp":
        # Lightning maps a full checkpoint's optimiser state onto sharded parameters by their order in
        # ``model.parameters()``; only an FSDP run writes it in that order (ours groups them by decay)
        raise ConfigError(f"resume: {path} was not written under trainer.strategy=fsdp; its optimiser state "
                          f"cannot be resumed under fsdp (the other way, fsdp -> ddp or one process, works)")
    order = cfg["backbone"].get("sincos_order", "timm")  # checkpoints before the setting: timm's order
    if tc.backbone.kind == "vit" and order != tc.backbone.sincos_order:
        raise ConfigError(f"resume: {path} was trained with backbone.sincos_order={order}; add "
                          f"backbone.sincos_order={order} to continue it")
    theirs = (cfg["method"]["name"], cfg["backbone"]["name"], cfg["backbone"]["patch_size"])
    ours = (tc.method.name, tc.backbone.name, tc.backbone.patch_size)
    if theirs != ours:
        raise ConfigError(
            f"resume: {path} was written by method={theirs[0]} backbone={theirs[1]}/{theirs[2]}; "
            f"this run is method={ours[0]} backbone={ours[1]}/{ours[2]}"
        )


class SaveOnPreemption(Callback):
    """On SIGTERM (Lightning stops at the next step boundary with ``SIGTERMException``) write
    ``last.ckpt``, so that ``resume=auto`` continues from there.  Under SLURM, Lightning itself
    handles the requeue signal (SIGUSR1): it saves an HPC checkpoint and requeues the job, and the
    requeued job (same job id, so the same run dir) restores it."""

    def __init__(self, ckpt_dir: Path):
        self.ckpt_dir = Path(ckpt_dir)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            path = self.ckpt_dir / "last.ckpt"
            trainer.save_checkpoint(path)
            log.warning("SIGTERM at step %d: saved %s; resume=auto continues from it", trainer.global_step, path)


def slurm_requeue_plugins() -> list:
    """Under hydra-submitit-launcher on SLURM, hand the time-limit signal to Lightning.

    submitit asks SLURM for ``--signal=USR2@<signal_delay_s>`` (``SUBMITIT_PREEMPT_SIGNAL``
    changes it) and installs its own handler, which with ``max_num_timeout=0`` only raises.
    Reset that handler and make Lightning's SLURM environment listen to the same signal: it
    saves ``<run dir>/hpc_ckpt_<n>.ckpt`` and requeues the job, which ``resume=auto`` (or
    Lightning itself, when ``resume`` is unset) continues from.  Outside submitit: nothing."""
    import signal

    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return []
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    sig = getattr(signal, f"SIG{name}", None)
    if sig is None:
        raise ConfigError(f"SUBMITIT_PREEMPT_SIGNAL={name!r} is not a signal name (e.g. USR2)")
    signal.signal(sig, signal.SIG_DFL)
    return [SLURMEnvironment(auto_requeue=True, requeue_signal=sig)]


class FinalCheckpoint(Callback):
    """Write ``last.ckpt`` when training ends (``max_steps``, ``max_epochs``, ``max_time``) unless
    it already holds the final step: with ``checkpoint.every_n_train_steps`` set, Lightning's
    ``ModelCheckpoint`` saves only on multiples of N, and the steps after the last multiple
    would be lost.  (Lightning counts the epoch as finished in this file even when
    ``max_steps`` ended it midway; the loader position does not, so a run extended with a
    larger ``max_steps`` sees the rest of that data epoch, counted as the next epoch.)"""

    def __init__(self, ckpt_dir: Path):
        self.ckpt_dir = Path(ckpt_dir)
        self.saved_step: Optional[int] = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: Dict[str, Any]) -> None:
        self.saved_step = trainer.global_step

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step > 0 and self.saved_step != trainer.global_step:
            trainer.save_checkpoint(self.ckpt_dir / "last.ckpt")


class RNGState(Callback):
    """Save and restore the process's random generators (torch CPU and CUDA, Python, NumPy) with
    each checkpoint, so the views, sampler order and every other draw continue as if the run had
    never stopped.  Stored as tensors and plain tuples: checkpoints stay ``weights_only``-loadable."""

    def state_dict(self) -> Dict[str, Any]:
        import random

        import numpy as np

        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        import random

        import numpy as np

        torch.set_rng_state(state["torch"])
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
