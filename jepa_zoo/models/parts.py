"""What a JEPA is made of: the parts a method declares, and the collapse-prevention schema.

Every method is a composition of five parts::

    inputs      what a batch holds: images, views, pair (two views and an action), clip, frames
    encoder     the network trained (``backbone``), and the one evaluation reads (``eval_encoder``)
    target      where the regression targets come from:
                  ema     an EMA copy of the encoder (I-JEPA, IWM, V-JEPA)
                  frozen  a frozen copy (pretrained weights: V-JEPA 2-AC)
                  none    the online encoder itself, gradients included (LeJEPA, LeWM)
    predictor   the network that predicts targets from context (mask tokens, an action), or none
    regulariser what else keeps the embeddings from collapsing: sigreg, vicreg, or none

A method returns a :class:`Parts` from ``parts()``; pretrained loading, export, the optimiser
groups, the EMA update and the evaluation read it rather than attribute names.  The target and
the regulariser follow from the ``collapse=`` group (:class:`CollapseConfig`): ``ema``,
``frozen``, ``sigreg`` or ``vicreg``, each method's paper default unless the command says
otherwise.  The frame-sequence input kind (``frames``) is a trajectory batch: frames
``[B, T, C, H, W]``, actions ``[B, T-1, A]``, optional states ``[B, T, S]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from jepa_zoo.errors import check

if TYPE_CHECKING:  # the schema half of this module is read before torch is imported (config validation)
    from torch import nn

INPUT_KINDS = ("images", "views", "pair", "clip", "frames")


@dataclass(frozen=True)
class CollapseKind:
    """One option of ``collapse=``: where targets come from, the regulariser, the keys it reads."""

    target: str  # ema | frozen | none
    regulariser: Optional[str]  # sigreg | vicreg | None
    keys: Tuple[str, ...]


# collapse=<name>: the table every reader (config validation, methods, docs) takes its options from
COLLAPSES: Dict[str, CollapseKind] = {
    "ema": CollapseKind("ema", None, ("momentum",)),
    "frozen": CollapseKind("frozen", None, ()),
    "sigreg": CollapseKind("none", "sigreg", ("weight", "mix", "num_slices", "t_max", "num_points")),
    "vicreg": CollapseKind("none", "vicreg", ("var_weight", "cov_weight", "idm_weight")),
    "none": CollapseKind("none", None, ()),  # the method prevents collapse itself (or does not): nothing added
}
MIXES = ("convex", "additive")  # loss = (1 − λ)·pred + λ·reg (LeJEPA) | pred + λ·reg (LeWM)


@dataclass
class CollapseConfig:
    """``collapse:``, the group ``collapse=ema|frozen|sigreg|vicreg``.  ``null`` keys take the method's
    paper default (its ``method.ema``, ``method.lambd``, ...; see :func:`jepa_zoo.config.validate`)."""

    name: Optional[str] = None  # null: the method's default (the first of its MethodSpec.collapses)
    momentum: Optional[List[float]] = None  # ema: [start, end], linear over the run
    weight: Optional[float] = None  # sigreg: λ
    mix: Optional[str] = None  # sigreg: convex (1 − λ)·pred + λ·SIGReg, or additive pred + λ·SIGReg
    num_slices: Optional[int] = None  # sigreg: random 1-D projections per step
    t_max: Optional[float] = None  # sigreg: the Epps–Pulley integration range [0, t_max]
    num_points: Optional[int] = None  # sigreg: quadrature nodes (odd)
    var_weight: Optional[float] = None  # vicreg: weight of the variance hinge
    cov_weight: Optional[float] = None  # vicreg: weight of the off-diagonal covariance
    idm_weight: Optional[float] = None  # vicreg: weight of the inverse-dynamics term (action-conditioned methods)

    def __post_init__(self) -> None:
        check(self.name is None or self.name in COLLAPSES, "collapse",
              f"must be one of {', '.join(COLLAPSES)}, got {self.name!r}")
        if self.momentum is not None:
            m = list(self.momentum)
            check(len(m) == 2 and 0 <= m[0] <= m[1] <= 1, "collapse.momentum",
                  f"expected [start, end] with 0 <= start <= end <= 1, got {m}")
        check(self.weight is None or self.weight >= 0, "collapse.weight", f"must be >= 0, got {self.weight}")
        check(self.mix is None or self.mix in MIXES, "collapse.mix", f"must be one of {', '.join(MIXES)}, got {self.mix!r}")
        check(self.mix != "convex" or self.weight is None or self.weight <= 1, "collapse.weight",
              f"must be in [0, 1] with collapse.mix=convex, got {self.weight}")
        check(self.num_slices is None or self.num_slices >= 1, "collapse.num_slices", "must be >= 1")
        check(self.t_max is None or self.t_max > 0, "collapse.t_max", "must be > 0")
        check(self.num_points is None or (self.num_points >= 3 and self.num_points % 2 == 1), "collapse.num_points",
              "must be odd and >= 3")
        for key in ("var_weight", "cov_weight", "idm_weight"):
            value = getattr(self, key)
            check(value is None or value >= 0, f"collapse.{key}", f"must be >= 0, got {value}")

    @property
    def kind(self) -> CollapseKind:
        return COLLAPSES[self.name or "none"]


@dataclass(frozen=True)
class Parts:
    """The parts of one built method (see the module docstring): modules, not attribute names."""

    inputs: str
    encoder: "nn.Module"
    eval_encoder: "nn.Module"
    target: str = "none"  # ema | frozen | none
    target_encoder: Optional["nn.Module"] = None
    predictor: Optional["nn.Module"] = None
    regulariser: Optional[str] = None
    heads: Dict[str, "nn.Module"] = field(default_factory=dict)  # other trained modules (a projector)

    def __post_init__(self) -> None:
        if self.inputs not in INPUT_KINDS:
            raise ValueError(f"Parts.inputs must be one of {', '.join(INPUT_KINDS)}, got {self.inputs!r}")
        if self.target in ("ema", "frozen") and self.target_encoder is None:  # (under none, a method may
            raise ValueError(f"Parts: target={self.target} needs a target_encoder")  # keep a target of its own)

    def named(self, model: "nn.Module") -> Dict[str, str]:
        """``{part: its name in model}`` for the parts that are modules of ``model`` (the prefix of
        their checkpoint keys): ``encoder``, ``target_encoder``, ``predictor`` and the heads."""
        where = {id(m): n for n, m in model.named_modules() if n}
        parts = {"encoder": self.encoder, "target_encoder": self.target_encoder, "predictor": self.predictor,
                 **self.heads}
        return {k: where[id(m)] for k, m in parts.items() if m is not None and id(m) in where}
