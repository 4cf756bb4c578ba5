"""What every JEPA method shares: backbone, online probe, optimiser, schedule, logging.

A method subclasses :class:`JEPAModule` and implements

* ``train_transform(cfg)`` (static): the per-image training transform;
* ``collate_fn(cfg)`` (static, optional): a batch collator (masks);
* ``step(batch)``: returns a :class:`StepOutput` with the loss, the scalars to
  log under ``train/`` and the (detached) features + labels for the probe;
* ``parts()``: its :class:`~jepa_zoo.models.parts.Parts` (inputs, encoder, target, predictor,
  regulariser), built with :meth:`JEPAModule.declare`.

Collapse prevention is not the method's choice alone: ``collapse=`` (:mod:`jepa_zoo.methods.collapse`)
gives the target encoder (``self.target_encoder``: an EMA or frozen copy, or None for online
targets), the SIGReg module (``self.sigreg``) and the loss's regulariser, built here for every method.

The online linear probe trains on detached features in its own optimiser
group, so its loss never reaches the encoder.  Validation runs the probe on
pooled encoder features of the validation split.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.functional.classification import multiclass_accuracy

from jepa_zoo.config import ConfigError, TrainConfig, resolve_collapse, validate_saved
from jepa_zoo.methods.collapse import Collapse
from jepa_zoo.models.backbones import build_backbone, check_input_sizes
from jepa_zoo.models.heads import linear_probe
from jepa_zoo.models.parts import Parts
from jepa_zoo.optim import cosine_ramp, lr_schedule, param_groups, time_budget, time_horizon, warmup_length
from jepa_zoo.panels import Line, Section

# The dashboard panels of what every method logs here (jepa_zoo/panels.py).
PANELS = (
    Section("Optimisation", (
        Line(("train/loss",), "loss", smoothing=0.6),
        Line(("train/lr",), "learning rate"),
        Line(("train/wd",), "weight decay", when="method.optim.final_weight_decay is set"),
        Line(("train/horizon",), "schedule horizon (steps the time budget allows)", when="trainer.max_time is set"),
    )),
    Section("Representation quality", (
        Line(("probe/val_acc",), "online linear probe: validation top-1 (%)"),
        Line(("probe/train_loss", "probe/val_loss"), "online linear probe: loss", smoothing=0.6),
    )),
)


@dataclass
class StepOutput:
    loss: Tensor
    logs: Dict[str, Tensor] = field(default_factory=dict)
    features: Optional[Tensor] = None
    labels: Optional[Tensor] = None


class JEPAModule(L.LightningModule):
    def __init__(self, cfg: Union[TrainConfig, Dict[str, Any]], num_classes: Optional[int] = None):
        super().__init__()
        if not isinstance(cfg, TrainConfig):  # a plain dict from a checkpoint's hyperparameters
            cfg = validate_saved(cfg)
        from jepa_zoo.registry import method_spec  # a TrainConfig made in code: its collapse keys filled (idempotent)

        cfg = dataclasses.replace(cfg, collapse=resolve_collapse(
            cfg.collapse, cfg.method, method_spec(cfg.method.name, cfg.method.module)))
        self.cfg = cfg
        # plain types only: `load_from_checkpoint` calls __init__(cfg=..., num_classes=...) with them
        self.save_hyperparameters({"cfg": dataclasses.asdict(cfg), "num_classes": num_classes})
        self.backbone = self.build_encoder(cfg)
        check_input_sizes(self.backbone, cfg.backbone.name, self.input_sizes(cfg))
        self.collapse = Collapse(cfg.collapse)
        self.target_encoder = self.collapse.make_target(self.backbone)  # None: targets from the online encoder
        self.sigreg = self.collapse.make_sigreg(cfg.seed)
        self.probe: Optional[nn.Module] = None
        self._model_configured = False  # configure_model (compile, fsdp) has run
        # the latest training step's output, features detached: callbacks read it in
        # on_train_batch_end (jepa_zoo.callbacks.monitors.OnlineKNN); non-finite rows are theirs to drop
        self.last_step_output: Optional[StepOutput] = None
        if num_classes:
            self._build_probe(num_classes)

    # -- hooks for subclasses -------------------------------------------------------
    def build_encoder(self, cfg: TrainConfig) -> nn.Module:
        """The encoder (``self.backbone``): ``backbone:`` as configured, or a method's own shape of encoder."""
        return build_backbone(cfg.backbone)

    @staticmethod
    def train_transform(cfg: TrainConfig) -> Callable:
        raise NotImplementedError

    @staticmethod
    def collate_fn(cfg: TrainConfig) -> Optional[Callable]:
        return None

    @staticmethod
    def val_transform(cfg: TrainConfig) -> Optional[Callable]:
        """The validation transform; None: the data source's evaluation transform (centre crops)."""
        return None

    def step(self, batch: Any) -> StepOutput:
        raise NotImplementedError

    def parts(self) -> Parts:
        """What this method is made of (:class:`~jepa_zoo.models.parts.Parts`): by default the encoder and
        the collapse part, with its ``MethodSpec.inputs``; a method with a predictor or heads declares them."""
        from jepa_zoo.registry import method_spec

        own = self._modules.get("predictor")  # an undeclared method's conventional name, as before parts existed
        return self.declare(inputs=method_spec(self.cfg.method.name, self.cfg.method.module).inputs, predictor=own)

    def declare(self, inputs: str, predictor: Optional[nn.Module] = None, **heads: nn.Module) -> Parts:
        """The method's :class:`Parts`: its ``inputs`` kind, ``predictor`` and other trained ``heads``;
        the encoder, the target and the regulariser are the ones built here from ``collapse=``."""
        return Parts(inputs=inputs, encoder=self.backbone, eval_encoder=self.eval_encoder,
                     target=self.collapse.target, target_encoder=self.target_encoder, predictor=predictor,
                     regulariser=self.collapse.regulariser, heads=heads)

    def target_tokens_of(self, x: Tensor) -> Tensor:
        """The tokens targets are made of, ``[B, N, D]``: the target encoder's under no gradient
        (``collapse=ema|frozen``), or the online encoder's, gradients included (``sigreg``, ``vicreg``)."""
        with self.collapse.target_context():
            return (self.target_encoder or self.backbone).forward_tokens(x)

    def collapse_loss(self, pred: Tensor, z: Tensor, logs: Dict[str, Tensor]) -> Tensor:
        """The loss from the prediction loss ``pred`` and the regulariser on embeddings ``z (..., N, D)``
        (``collapse=sigreg|vicreg``; ``pred`` alone otherwise); the terms go into ``logs``."""
        terms = self.collapse.regularise(self.sigreg, z, self.global_step)
        logs.update({"pred_loss": pred.detach(), **{k: v.detach() for k, v in terms.items()}} if terms else {})
        return self.collapse.loss(pred, terms)

    @staticmethod
    def input_sizes(cfg: TrainConfig) -> Dict[str, int]:
        """The image sizes the backbone sees, by the key that sets each (checked when it is built)."""
        return {"data.img_size": cfg.data.img_size}

    def callbacks(self) -> list:
        """Method-specific Lightning callbacks (monitors) that training adds."""
        return []

    @property
    def eval_encoder(self) -> nn.Module:
        """The encoder that downstream evaluation uses: the target encoder under ``collapse=ema|frozen`` (as
        the papers evaluate; the pooled features the probe trains on are its), else the trained encoder."""
        return self.target_encoder if self.collapse.target in ("ema", "frozen") else self.backbone

    @classmethod
    def shared_panels(cls, collapse: Optional[str]) -> Tuple[tuple, tuple]:
        """The dashboard sections of what this base logs for every method, and those of ``collapse=<collapse>``."""
        from jepa_zoo.methods.collapse import collapse_panels

        return PANELS, collapse_panels(collapse)

    def initial_copy(self) -> "JEPAModule":
        """This method as built before training (seeded first, as :func:`jepa_zoo.methods.build_model`)."""
        L.seed_everything(self.cfg.seed, workers=True)
        return type(self)(self.cfg, num_classes=self.cfg.data.num_classes)

    def image_panels(self, images: Tensor, shown: Tensor, scale: int, step: Optional[int]) -> Dict[str, Tensor]:
        """The method's own validation panels, uint8 ``[3, H, W]`` by name (I-JEPA: ``masks``; IWM: also
        ``pairs``), drawn by :class:`jepa_zoo.callbacks.images.ImageLogger` beside the ``retrievals``
        every method gets.  ``images``: validation images in [0, 1] (normalisation undone); ``shown``:
        the same upscaled ``scale`` times for display.  Called with the CPU generator seeded."""
        return {}

    # -- online probe ---------------------------------------------------------------
    def _build_probe(self, num_classes: int) -> None:
        if not self.cfg.method.probe.enabled or num_classes <= 0:
            return
        if num_classes == 1:  # torchmetrics refuses it with a traceback; say what to do instead
            raise ConfigError(f"data.root: {self.cfg.data.root} holds one class folder: the online probe needs 2 or "
                              "more classes; put the images in data.root itself (unlabelled: probe off) or set "
                              "method.probe.enabled=false")
        self.probe = linear_probe(self.backbone.embed_dim, num_classes)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=-1)
        self.hparams["num_classes"] = num_classes

    def setup(self, stage: str) -> None:
        from jepa_zoo.callbacks.nonfinite import NonFiniteGuard
        from jepa_zoo.data.datamodule import TookBatch

        have = {type(c) for c in self.trainer.callbacks}
        missing = [c.__name__ for c in (TookBatch, NonFiniteGuard) if c not in have]
        if stage == "fit" and missing:
            raise RuntimeError(f"{type(self).__name__}.configure_callbacks dropped {', '.join(missing)}: "
                               "return super().configure_callbacks() + your own")
        dm = getattr(self.trainer, "datamodule", None)
        if self.probe is None and dm is not None and hasattr(dm, "num_classes"):
            self._build_probe(dm.num_classes)

    # -- steps ----------------------------------------------------------------------------
    # Non-finite steps are skipped on the device by jepa_zoo.callbacks.nonfinite.NonFiniteGuard,
    # which configure_callbacks adds to every Trainer that fits the module.
    def training_step(self, batch: Any, batch_idx: int) -> Optional[Tensor]:
        out, loss, probe = self.forward_loss(batch)
        bs = out.labels.shape[0] if out.labels is not None else None
        self.last_step_output = dataclasses.replace(
            out, loss=out.loss.detach(), features=out.features.detach() if out.features is not None else None)
        if probe is not None:
            logits, probe_loss = probe
            self.log("probe/train_loss", probe_loss, batch_size=bs)
            acc = multiclass_accuracy(logits.detach(), out.labels, logits.shape[-1], average="micro", ignore_index=-1)
            self.log("probe/train_acc", 100 * acc, batch_size=bs)  # percent, as every accuracy
        self.log_dict({f"train/{k}": v for k, v in out.logs.items()}, prog_bar=True, batch_size=bs)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        # one step number everywhere (metrics.csv, checkpoints, images, run_summary.json): the optimiser
        # steps completed when the row is written; Lightning takes a logged "step" as the row's step
        self.log_dict({"step": float(self.global_step + 1), "epoch": float(self.current_epoch)}, batch_size=bs)
        return loss

    def forward_loss(self, batch: Any) -> Tuple[StepOutput, Tensor, Optional[Tuple[Tensor, Tensor]]]:
        """One batch's computation, as training and the benchmark run it: the method's :meth:`step`, plus
        the online probe's cross-entropy on the detached features -> ``(step output, the loss to
        backpropagate, (the probe's logits, its loss) or None)``."""
        out = self.step(batch)
        if self.probe is None or out.features is None or out.labels is None:
            return out, out.loss, None
        logits = self.probe(out.features.detach())
        probe_loss = F.cross_entropy(logits, out.labels, ignore_index=-1)
        return out, out.loss + probe_loss, (logits, probe_loss)

    def after_optimizer_step(self) -> None:
        """What a method does once per optimiser step, after it: the EMA target's update under
        ``collapse=ema``, before checkpoints are written (a checkpoint holds the target of its step);
        called by :meth:`optimizer_step`, and by the benchmark's step."""
        self.collapse.update_(self.target_encoder, self.backbone, self.global_step, self.total_steps)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        momentum = self.collapse.ema.last_momentum if self.collapse.ema is not None else None
        if momentum is not None:
            self.log("train/ema_momentum", momentum)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimiser step, then :meth:`after_optimizer_step`: once per optimiser step (not per
        accumulated micro-batch), and before ``on_train_batch_end``, where checkpoints are written."""
        super().optimizer_step(*args, **kwargs)
        self.after_optimizer_step()

    def _grad_scaler(self) -> Optional[Any]:
        """The AMP GradScaler of ``16-mixed`` precision, if any (none without a Trainer, as in the bench)."""
        trainer = self._trainer  # the ``trainer`` property raises when detached
        return getattr(trainer.precision_plugin, "scaler", None) if trainer is not None else None

    def compile_(self) -> List[str]:
        """``torch.compile`` in place what ``compile=true`` compiles of the module: the transformer
        blocks (:mod:`jepa_zoo.models.compile`; the datamodule compiles the device photometric ops).
        Returns the names compiled."""
        from jepa_zoo.models.compile import compile_blocks_

        return compile_blocks_(self)

    def configure_model(self) -> None:
        """``compile=true`` and ``trainer.strategy=fsdp`` (:func:`jepa_zoo.parallel.configure_model_`).
        Lightning calls this after ``setup``, where the probe is built, and before the optimiser is
        made; only the first call does anything."""
        from jepa_zoo.parallel import configure_model_

        if not self._model_configured:
            self._model_configured = True
            configure_model_(self, self.cfg.compile, self._trainer.strategy if self._trainer is not None else None)

    def configure_callbacks(self) -> list:
        """Callbacks every Trainer that fits this module needs: the datamodule's loader position
        advances when a step has used its batch (:class:`~jepa_zoo.data.datamodule.TookBatch`), and
        non-finite steps are skipped (:class:`~jepa_zoo.callbacks.nonfinite.NonFiniteGuard`)."""
        from jepa_zoo.callbacks.nonfinite import NonFiniteGuard
        from jepa_zoo.data.datamodule import TookBatch

        return [TookBatch(), NonFiniteGuard(self.cfg.nonfinite_loss)]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if self.probe is None:
            return
        images, labels = batch.inputs, batch.labels  # a jepa_zoo.data.batch.Batch
        logits = self.probe(self.eval_encoder(images))  # the encoder the probe trains on
        self.val_acc.update(logits, labels)
        self.log("probe/val_loss", F.cross_entropy(logits, labels, ignore_index=-1), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            # after global_step steps; the same on every process (sync_dist: no per-process warning)
            self.log_dict({"step": float(self.global_step), "epoch": float(self.current_epoch)}, sync_dist=True)
        if self.probe is not None and self.val_acc.update_count:  # over every process's images, in percent
            self.log("probe/val_acc", 100 * self.val_acc.compute(), prog_bar=True, sync_dist=True)  # equal everywhere
            self.val_acc.reset()

    # -- optimisation ---------------------------------------------------------------------
    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip the SSL parameters only: the probe's gradients must not change the encoder's update."""
        if not gradient_clip_val:
            return
        params = [p for n, p in self.named_parameters() if not n.startswith("probe.") and p.grad is not None]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    fixed_schedule: Optional[Tuple[int, int]] = None  # (total, warm-up) steps without a Trainer (the benchmark)

    def _schedule_lengths(self) -> Tuple[int, int]:
        """(total, warm-up) optimiser steps (:func:`jepa_zoo.optim.warmup_length`)."""
        if self.fixed_schedule is not None:
            return self.fixed_schedule
        total = self.total_steps
        return total, warmup_length(self.trainer, total, self.cfg.method.optim)

    @property
    def total_steps(self) -> float:
        """Optimiser steps of the whole run (the horizon of every schedule): the steps ``max_steps`` /
        ``max_epochs`` allow, or under ``trainer.max_time`` the steps the time budget allows at the
        run's pace (:func:`jepa_zoo.optim.time_horizon`, fixed for each step at its start; not a
        whole number)."""
        if self.fixed_schedule is not None:
            return self.fixed_schedule[0]
        if self._horizon is not None:
            return self._horizon
        planned = float(self.trainer.estimated_stepping_batches)
        if not math.isfinite(planned):  # max_epochs=-1: only max_time ends the run
            budget = self._time_budget()
            if budget is None:
                raise ConfigError("trainer: max_steps=-1 with max_epochs=-1 and no max_time never ends, and "
                                  "the schedules need an end; set one of them")
            return time_horizon(self.global_step, budget[0], budget[1], planned, self._launch_start or (0, 0.0))
        return int(planned)

    _horizon: Optional[float] = None
    _launch_start: Optional[Tuple[int, float]] = None

    def _time_budget(self) -> Optional[Tuple[float, float]]:
        return time_budget(self.trainer)  # jepa_zoo.optim

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        budget = self._time_budget() if self.fixed_schedule is None else None
        if budget is not None:
            if self._launch_start is None:  # the pace is measured from this launch's first step
                self._launch_start = (self.global_step, budget[0])
            self._horizon = time_horizon(self.global_step, budget[0], budget[1],
                                         float(self.trainer.estimated_stepping_batches), self._launch_start)
            self.log("train/horizon", self._horizon)
        o = self.cfg.method.optim
        if o.final_weight_decay is None:
            return
        wd = cosine_ramp(self.global_step, self.total_steps, o.weight_decay, o.final_weight_decay)
        for group in self.trainer.optimizers[0].param_groups:
            if group.get("name") == "decay":
                group["weight_decay"] = wd
        self.log("train/wd", wd)

    @property
    def global_batch_size(self) -> int:
        """Images per optimiser step over all processes."""
        t = self.trainer
        return self.cfg.data.batch_size * t.world_size * t.accumulate_grad_batches

    @property
    def base_lr(self) -> float:
        """``method.optim.lr``, scaled by ``global batch / method.optim.ref_batch_size`` when that is set."""
        o = self.cfg.method.optim
        return o.lr if o.ref_batch_size is None else o.lr * self.global_batch_size / o.ref_batch_size

    def configure_optimizers(self):
        o = self.cfg.method.optim
        frozen = self.parts().named(self).get("target_encoder")
        groups = param_groups(self, o.weight_decay, exclude=("probe.", *([frozen + "."] if frozen else [])))
        lambdas = []
        _, warmup = self._schedule_lengths()
        # the horizon is read at every step: under trainer.max_time it is the time budget's
        lambdas += [lr_schedule(o, lambda: self.total_steps, warmup)] * len(groups)
        if self.probe is not None:
            p = self.cfg.method.probe
            groups.append({"params": list(self.probe.parameters()), "lr": p.lr, "weight_decay": p.weight_decay,
                           "name": "probe"})
            lambdas.append(lambda s: 1.0)
        # fused: one kernel for the whole update, and a device-side skip of non-finite steps (found_inf)
        # (not under 16-mixed's GradScaler: Lightning would then leave the gradients scaled for clipping)
        fused = self._grad_scaler() is None and all(
            p.is_floating_point() and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
        opt = torch.optim.AdamW(groups, lr=self.base_lr, betas=tuple(o.betas), fused=fused or None)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": LambdaLR(opt, lambdas), "interval": "step"}}


def __getattr__(name: str) -> Any:
    if name == "NonFiniteLossError":  # moved with non-finite skipping to jepa_zoo.callbacks.nonfinite
        import warnings

        from jepa_zoo.callbacks import nonfinite

        warnings.warn("jepa_zoo.methods.base.NonFiniteLossError moved to jepa_zoo.callbacks.nonfinite",
                      DeprecationWarning, stacklevel=2)
        return nonfinite.NonFiniteLossError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
