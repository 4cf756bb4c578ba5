"""Kept for methods of one's own written before ``collapse=`` existed: :class:`EMATarget`, a mixin that
updates ``self.target_encoder`` from ``self.backbone`` with ``self.ema`` (an
:class:`~jepa_zoo.models.ema.EMATeacher`) after each optimiser step and logs the momentum.

New code does not need it: ``collapse=ema`` builds the EMA target and updates it for every method
(:mod:`jepa_zoo.methods.collapse`), and the built-in methods no longer use this mixin.  A method that
keeps its own target this way declares ``collapse=none`` (the default of a method that declares
nothing), so that the framework adds no second target.
"""

from __future__ import annotations

from typing import Any

from jepa_zoo.methods.collapse import collapse_panels


class EMATarget:
    def after_optimizer_step(self) -> None:
        """The EMA update, once per optimiser step and before checkpoints are written."""
        self.ema.update_(self.target_encoder, self.backbone, self.global_step, self.total_steps)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self.ema.last_momentum is not None:
            self.log("train/ema_momentum", self.ema.last_momentum)


TARGET_PANELS = collapse_panels("ema")[0]  # the "Targets" section collapse=ema shows
