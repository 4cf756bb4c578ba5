"""What every method with an EMA target encoder shares (I-JEPA, IWM, V-JEPA): the update after each
optimiser step, its logged momentum and the dashboard panels of the targets.

A method that holds ``self.target_encoder`` (:func:`jepa_zoo.models.ema.make_target`) and
``self.ema`` (:class:`jepa_zoo.models.ema.EMATeacher`) lists :class:`EMATarget` before
:class:`~jepa_zoo.methods.base.JEPAModule` among its bases, and logs ``target_std`` and
``pred_cos`` in its step.
"""

from __future__ import annotations

from typing import Any

from jepa_zoo.panels import Line, Section


class EMATarget:
    def after_optimizer_step(self) -> None:
        """The EMA update, once per optimiser step and before checkpoints are written, so a checkpoint
        always holds the target that matches its step."""
        self.ema.update_(self.target_encoder, self.backbone, self.global_step, self.total_steps)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self.ema.last_momentum is not None:
            self.log("train/ema_momentum", self.ema.last_momentum)


TARGET_PANELS = Section("Targets", (
    Line(("train/target_std",), "target feature std", collapse="falls towards 0"),
    Line(("train/pred_cos",), "predictor–target cosine", smoothing=0.6),
    Line(("train/ema_momentum",), "EMA momentum"),
))
