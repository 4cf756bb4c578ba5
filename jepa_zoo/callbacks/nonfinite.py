"""Non-finite losses and gradients: the step is skipped on the device, the host looks only at
logging steps (``nonfinite_loss=stop|skip``).

A step whose loss (on any process) or gradient norm is NaN/inf is flagged with a 0-dim tensor that
torch's fused AdamW reads as ``found_inf``: it leaves parameters, moments and step counts as they
were, as under AMP's GradScaler, with no host synchronisation.  BatchNorm running statistics that
the skipped forward changed are restored.  The host reads the count of skipped steps only on
logging steps (where Lightning converts the logged tensors anyway) and at the end: ``stop`` raises
:class:`NonFiniteLossError` (exit 3) once that step's checkpoints are written, ``skip`` warns.  The count travels in checkpoints.

A callback, not module code: a method that overrides ``optimizer_step`` or ``on_train_batch_end``
cannot switch it off by forgetting ``super()``.  :class:`jepa_zoo.methods.base.JEPAModule` adds it
to every Trainer that fits it (``configure_callbacks``) and refuses to train without it.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import torch
from lightning.pytorch import Callback
from torch import Tensor, nn

from jepa_zoo.panels import Line, Section

PANELS = (Section("Optimisation", (Line(("train/skipped_steps",), "steps skipped (non-finite loss or gradients)"),)),)

log = logging.getLogger("jepa_zoo.methods.base")  # where these warnings came from before (log filters keep working)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite (``nonfinite_loss=stop``)."""


def _supports_found_inf(opt: torch.optim.Optimizer) -> bool:
    """Whether ``opt.step`` honours ``opt.found_inf`` (torch's fused Adam/AdamW/SGD)."""
    return bool(opt.defaults.get("fused"))


def _running_stats(module: nn.Module) -> List[Tensor]:
    """BatchNorm running statistics: the forward updates them, so a skipped step must restore them."""
    return [b for m in module.modules() if isinstance(m, nn.modules.batchnorm._NormBase) and m.training
            for b in (m.running_mean, m.running_var) if b is not None]


class NonFiniteGuard(Callback):
    def __init__(self, policy: str = "stop"):
        if policy not in ("stop", "skip"):
            raise ValueError(f"policy must be 'stop' or 'skip', got {policy!r}")
        self.policy = policy
        self.seen = 0  # skipped steps the host has reported
        self.total = torch.zeros((), dtype=torch.long)  # on the device: every skipped step
        self.first = torch.full((), -1, dtype=torch.long)  # on the device: the first one's step
        self._bad: Optional[Tensor] = None  # this optimiser step's flag, over its micro-batches
        self._stats: Optional[List[Tensor]] = None  # BatchNorm statistics before this optimiser step
        self._pending: Optional[NonFiniteLossError] = None  # stop: raised when the step's checkpoint is written

    # -- per step, on the device ---------------------------------------------------------------
    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._raise_pending()
        if self._stats is None:  # the first micro-batch of this optimiser step
            stats = _running_stats(pl_module)
            self._stats = [b.clone() for b in stats] if stats else None

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Tensor) -> None:
        out = pl_module.last_step_output  # the method's own loss (the probe's gradients are checked below)
        bad = ~torch.isfinite(out.loss if out is not None else loss.detach())
        self._bad = bad if self._bad is None else self._bad | bad

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """Flag the step non-finite (loss on any rank, or any gradient) for the fused optimiser."""
        bad, self._bad = self._bad, None
        if bad is None:
            return
        if trainer.world_size > 1:  # gradients are already averaged; a rank's loss is not
            bad = trainer.strategy.reduce(bad.float(), reduce_op="sum") > 0
        scaler = getattr(trainer.precision_plugin, "scaler", None)  # 16-mixed's GradScaler
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads and scaler is None:  # under a GradScaler, overflowing gradients are its business
            norm = torch.nn.utils.get_total_norm(grads, foreach=True)
            if hasattr(norm, "full_tensor"):  # sharded gradients (fsdp): the norm over every process's shard
                norm = norm.full_tensor()
            bad = bad | ~torch.isfinite(norm)
        self.total = self.total.to(bad.device) + bad.long()
        first = self.first.to(bad.device)
        self.first = torch.where(bad & (first < 0), torch.full_like(first, trainer.global_step), first)
        pl_module.log("train/skipped_steps", self.total.float())
        if self._stats is not None:  # a skipped step's forward must not leave NaN running stats
            for buf, old in zip(_running_stats(pl_module), self._stats):
                buf.copy_(torch.where(bad, old, buf))
            self._stats = None
        inner = getattr(optimizer, "optimizer", optimizer)  # Lightning's wrapper -> the torch optimiser
        if scaler is not None:  # 16-mixed: the scaler skips steps with non-finite (hence NaN-loss) gradients
            return
        if _supports_found_inf(inner):
            inner.found_inf = bad.float()
        elif bool(bad):  # a host sync: only optimisers without a device-side skip get here
            for p in pl_module.parameters():
                p.grad = None

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        for opt in trainer.optimizers:  # the flag belonged to the step just taken
            opt.__dict__.pop("found_inf", None)
        if trainer._logger_connector.should_update_logs:  # Lightning converts the logs now anyway
            self.check(trainer.global_step)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.check(trainer.global_step)
        self._raise_pending()

    def _raise_pending(self) -> None:
        if self._pending is not None:
            error, self._pending = self._pending, None
            raise error

    # -- the host's look -----------------------------------------------------------------------
    def check(self, step: int) -> None:
        """Report steps skipped since the last check: raise (``stop``) or warn (``skip``)."""
        total = int(self.total)
        new, self.seen = total - self.seen, total
        if new <= 0:
            return
        msg = (f"non-finite loss or gradients: {new} step(s) skipped up to step {step}, {total} in all, the "
               f"first at step {int(self.first)}; their updates were not applied, so the weights hold no NaN/inf")
        if self.policy == "stop":  # raised at the next batch (or the end): this step's checkpoint is written first
            self._pending = NonFiniteLossError(msg)
            return
        log.warning(msg)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: Dict[str, Any]) -> None:
        checkpoint["skipped_steps"] = int(self.total)  # a host read, at checkpoint time only

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: Dict[str, Any]) -> None:
        self.seen = int(checkpoint.get("skipped_steps", 0))
        self.total = torch.tensor(self.seen, dtype=torch.long)
