"""Collapse prevention, the part ``collapse=ema|frozen|sigreg|vicreg`` chooses (orthogonal to the method).

Where targets come from and what else is added to the loss, for a method whose step is::

    h    = T(x)              the target tokens
    ŷ    = g(f(x_ctx), ...)  the prediction
    pred = d(ŷ, h)           the method's prediction loss
    loss = pred + R(z)       z: the pooled target embeddings (B, D), or a method's own (LeJEPA's projections)

with, for each option (:data:`jepa_zoo.models.parts.COLLAPSES`):

* ``ema``     ``T = LN ∘ f̄`` under no gradient; after each optimiser step ``f̄ ← m·f̄ + (1 − m)·f``,
  ``m`` linear ``collapse.momentum[0] → [1]`` over the run.  ``R = 0``.  (I-JEPA, IWM, V-JEPA.)
* ``frozen``  ``T = LN ∘ f₀``, a frozen copy of the encoder as built or loaded (``init_from``: the
  file's target encoder).  ``R = 0``.  (V-JEPA 2-AC's frozen encoder.)
* ``sigreg``  ``T = LN ∘ f``, the online encoder, gradients through both sides;
  ``loss = (1 − λ)·pred + λ·SIGReg(z)`` (``mix=convex``, LeJEPA) or ``pred + λ·SIGReg(z)``
  (``mix=additive``, LeWM).  SIGReg pushes the embeddings the evaluation reads towards an
  isotropic Gaussian, which rules out the collapsed solution the missing stop-gradient allows.
* ``vicreg``  ``T = LN ∘ f`` as ``sigreg``; ``loss = pred + α·var(z) + β·cov(z) (+ γ·idm)``
  (:mod:`jepa_zoo.losses.vicreg`; PLDM / EB-JEPA), the inverse-dynamics term only for methods
  whose inputs carry actions.

The target encoder and the SIGReg module are the method's submodules (``target_encoder``,
``sigreg``: the checkpoint keys they always had); this object holds the choice and the maths.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from jepa_zoo.losses.jepa import regularised_loss
from jepa_zoo.losses.sigreg import SIGReg
from jepa_zoo.losses.vicreg import vicreg_terms
from jepa_zoo.models.ema import EMATeacher, make_target
from jepa_zoo.models.parts import CollapseConfig
from jepa_zoo.panels import Line, Section


class Collapse:
    def __init__(self, cfg: CollapseConfig):
        self.cfg = cfg
        self.name = cfg.name
        self.target = cfg.kind.target  # ema | frozen | none
        self.regulariser = cfg.kind.regulariser  # sigreg | vicreg | None
        self.ema = EMATeacher(*cfg.momentum) if cfg.name == "ema" else None

    @property
    def stop_grad(self) -> bool:
        """Whether targets are detached (a separate target encoder) or trained through (online targets)."""
        return self.target != "none"

    def make_target(self, encoder: nn.Module) -> Optional[nn.Module]:
        """The target encoder: a frozen copy of ``encoder`` for ``ema`` / ``frozen``, else None."""
        return make_target(encoder) if self.target in ("ema", "frozen") else None

    def make_sigreg(self, seed: int) -> Optional[SIGReg]:
        c = self.cfg
        return SIGReg(c.num_slices, c.t_max, c.num_points, seed=seed) if self.regulariser == "sigreg" else None

    def target_context(self):
        """``torch.no_grad()`` around the target pass when targets are detached, else nothing."""
        return torch.no_grad() if self.stop_grad else nullcontext()

    def update_(self, target: Optional[nn.Module], online: nn.Module, step: int, total: float) -> Optional[float]:
        """After an optimiser step: the EMA update (``ema`` only); returns the momentum used."""
        if self.ema is None or target is None:
            return None
        return self.ema.update_(target, online, step, total)

    def regularise(self, sigreg: Optional[SIGReg], z: Tensor, step: int) -> Dict[str, Tensor]:
        """The regulariser's terms on embeddings ``z (..., N, D)``: ``{"sigreg_loss"}``, ``{"var_loss",
        "cov_loss"}`` or nothing."""
        if self.regulariser == "sigreg":
            assert sigreg is not None
            return {"sigreg_loss": sigreg(z, step)}
        if self.regulariser == "vicreg":
            return vicreg_terms(z)
        return {}

    def loss(self, pred: Tensor, terms: Dict[str, Tensor]) -> Tensor:
        """The total loss from the prediction loss and :meth:`regularise`'s terms (see the module docstring)."""
        c = self.cfg
        if self.regulariser == "sigreg":
            return regularised_loss(pred, terms["sigreg_loss"], c.weight, c.mix)
        if self.regulariser == "vicreg":
            total = pred + c.var_weight * terms["var_loss"] + c.cov_weight * terms["cov_loss"]
            return total + c.idm_weight * terms["idm_loss"] if "idm_loss" in terms else total
        return pred


def collapse_panels(name: Optional[str]) -> tuple:
    """The dashboard sections of what ``collapse=<name>`` logs."""
    if name in ("ema", "frozen"):
        return (Section("Targets", (
            Line(("train/target_std",), "target feature std", collapse="falls towards 0"),
            Line(("train/pred_cos",), "predictor–target cosine", smoothing=0.6),
            *((Line(("train/ema_momentum",), "EMA momentum"),) if name == "ema" else ()),
        )),)
    if name == "sigreg":
        return (Section("Collapse: SIGReg", (
            Line(("train/sigreg_loss",), "SIGReg (falls by orders of magnitude)", log_y=True, smoothing=0.6),
        )),)
    if name == "vicreg":
        return (Section("Collapse: VICReg", (
            Line(("train/var_loss", "train/cov_loss"), "variance and covariance terms", smoothing=0.6),
        )),)
    return ()
