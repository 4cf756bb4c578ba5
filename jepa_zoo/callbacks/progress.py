"""Progress a user sees: the bar's real length, and logs and validation at the last step.

:class:`LastStep`: a run that ends at ``max_steps`` before an epoch ends, or between two
``log_every_n_steps``, logged nothing and validated nothing at its end (a 3-step smoke run wrote
no ``metrics.csv`` row).  At the final optimiser step it sets ``trainer.should_stop``, which makes
Lightning log that step and run the validation it runs for an early stop.

:class:`StepProgressBar`: Lightning's tqdm bar with the real length of this launch's epoch.

:class:`ParamSummary`: Lightning's model summary without its FLOPs column, which stays 0 unless a
module sets ``example_input_array`` (``perf/tflops_per_device`` counts the real FLOPs).

Lightning sizes the bar by the epoch's batches unless ``max_epochs=-1``, so ``max_steps=3`` showed
``3/6250`` with a 126-hour estimate.  Here the total is the batches that will run in this epoch:
the loader's batches, capped by the optimiser steps left before ``max_steps`` (times the gradient
accumulation); the description names the epoch and the optimiser step.  Under ``trainer.max_time``
the total is re-estimated at every step from the time left (it showed ``7/781 [04:11<7:43:49]`` in
a 2-minute run).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Tuple, Union

from lightning.pytorch.callbacks import Callback, ModelSummary, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf

log = logging.getLogger("lightning.pytorch.callbacks.model_summary")


class LastStep(Callback):
    """Stop (hence log and validate) at the step that ends the run: ``max_steps``, or the last batch of
    the last epoch.  Placed first among the callbacks, so that the others see the flag too."""

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        loop = trainer.fit_loop
        if loop.epoch_loop._should_accumulate():  # a micro-batch: the optimiser step is still to come
            return
        last_step = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
        last_epoch = trainer.max_epochs is not None and trainer.max_epochs >= 0 and (
            trainer.current_epoch + 1 >= trainer.max_epochs and loop.epoch_loop.batch_progress.is_last_batch)
        if last_step or last_epoch:
            trainer.should_stop = True


class StepProgressBar(TQDMProgressBar):
    @property
    def total_train_batches(self) -> Union[int, float]:
        t = self.trainer
        batches = t.num_training_batches
        if t.max_steps is not None and t.max_steps > 0:
            left = (t.max_steps - t.global_step) * t.accumulate_grad_batches
            return min(batches, left) if math.isfinite(batches) else left
        return batches

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """A run resumed mid-epoch starts without ``on_train_epoch_start`` (it was Lightning's "Training:
        3/?"): the bar counts on from the batches of the epoch already done."""
        super().on_train_start(trainer, pl_module)
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        if done > 0:
            bar = self.train_progress_bar
            bar.reset(total=convert_inf(min(trainer.num_training_batches, done + self.total_train_batches)))
            bar.initial = 0
            bar.n = done
            bar.set_description(f"Epoch {trainer.current_epoch} (from step {trainer.global_step})")
            bar.refresh()

    def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch} (from step {trainer.global_step})")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Under ``trainer.max_time`` the epoch ends when the time does: the bar's total (hence its
        ETA) is the batches the budget allows at the run's pace (the schedules' horizon,
        ``total_steps``), capped by the epoch's."""
        if _time_budgeted(trainer) and isinstance(getattr(pl_module, "total_steps", None), (int, float)):
            bar = self.train_progress_bar
            left = max(math.ceil(pl_module.total_steps - trainer.global_step), 0) * trainer.accumulate_grad_batches
            total = batch_idx + 1 + left
            bar.total = min(total, trainer.num_training_batches) if math.isfinite(trainer.num_training_batches) else total
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def _time_budgeted(trainer: Any) -> bool:
    from lightning.pytorch.callbacks import Timer

    return any(isinstance(c, Timer) and c.time_remaining("train") is not None for c in trainer.callbacks)


class ParamSummary(ModelSummary):
    @staticmethod
    def summarize(summary_data: List[Tuple[str, List[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: Dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

        cols = [c for c in summary_data if c[0] != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes,
                                      total_flops, *cols)
        log.info("\n%s", table.rpartition("\n")[0])  # the last line is "Total Flops"
