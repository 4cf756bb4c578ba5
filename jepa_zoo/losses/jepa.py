"""Prediction losses of the JEPA family (pure functions, shapes checked)."""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def lejepa_loss(proj: Tensor, num_global: int, sigreg: Callable[[Tensor], Tensor], lambd: float) -> Dict[str, Tensor]:
    """LeJEPA objective on view projections ``proj`` of shape ``(V, N, K)``.

    The first ``num_global`` views are the global ones.  With
    ``c = 1/V_g Σ_{v<V_g} z_v`` (no stop-gradient)::

        pred   = 1/(V·N·K) Σ_v ‖c − z_v‖²        (every view, global and local)
        sigreg = 1/V Σ_v SIGReg(z_v)            (per view, then averaged)
        loss   = (1 − λ)·pred + λ·sigreg

    ``sigreg`` maps ``(V, N, K)`` to the mean statistic over views and slices.
    Returns ``{"loss", "pred_loss", "sigreg_loss"}``.
    """
    pred = multiview_prediction_loss(proj, num_global)
    sig = sigreg(proj)
    return {"loss": (1.0 - lambd) * pred + lambd * sig, "pred_loss": pred, "sigreg_loss": sig}


def multiview_prediction_loss(proj: Tensor, num_global: int) -> Tensor:
    """LeJEPA's prediction term on ``proj (V, N, K)``: every view predicts the centre of the first
    ``num_global`` (global) views, ``1/(V·N·K) Σ_v ‖c − z_v‖²`` with ``c = 1/V_g Σ_{v<V_g} z_v`` (no
    stop-gradient), in fp32."""
    if proj.dim() != 3:
        raise ValueError(f"proj must be (V, N, K), got {tuple(proj.shape)}")
    if not 1 <= num_global <= proj.shape[0]:
        raise ValueError(f"num_global must be in [1, V={proj.shape[0]}], got {num_global}")
    proj32 = proj.float()  # the squared error in fp32 even under bf16 autocast
    centers = proj32[:num_global].mean(dim=0)
    return (centers - proj32).square().mean()


def regularised_loss(pred: Tensor, reg: Tensor, weight: float, mix: str = "convex") -> Tensor:
    """The prediction loss with a collapse regulariser (SIGReg): ``convex``: ``(1 − λ)·pred + λ·reg``
    (LeJEPA: one λ); ``additive``: ``pred + λ·reg`` (LeWM: λ = 0.09)."""
    if mix == "convex":
        return (1.0 - weight) * pred + weight * reg
    if mix == "additive":
        return pred + weight * reg
    raise ValueError(f"mix must be 'convex' or 'additive', got {mix!r}")


def latent_prediction_loss(pred: Tensor, target: Tensor, kind: str = "smooth_l1", stop_grad: bool = True) -> Tensor:
    """I-JEPA / IWM regression loss between predicted and target features (same shape).

    ``smooth_l1`` (β = 1, the official I-JEPA code): ``mean ℓ(p − y)`` with
    ``ℓ(d) = ½d²`` for ``|d| < 1`` else ``|d| − ½``; ``mse``: ``mean (p − y)²``.
    Targets are detached here (gradients never flow into the target encoder) unless ``stop_grad`` is
    False: targets from the online encoder under ``collapse=sigreg|vicreg``, trained through both sides.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} shapes differ")
    if stop_grad:
        target = target.detach()
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=1.0)
    if kind == "mse":
        return F.mse_loss(pred, target)
    raise ValueError(f"loss must be 'smooth_l1' or 'mse', got {kind!r}")


def vjepa_loss(preds: Sequence[Tensor], targets: Sequence[Tensor], exponent: float = 1.0,
               stop_grad: bool = True) -> Tensor:
    """V-JEPA / V-JEPA 2 loss over mask types ``j = 1 .. M`` (predictions and targets ``[B, K_j, D]``)::

        loss = 1/M Σ_j mean |ŷ_j − y_j|^p / p          (p = ``exponent``; 1: L1, the papers')

    where ``y_j`` are the target encoder's tokens, layer-normalised without affine
    (:func:`vjepa_targets`), at mask ``j``'s target positions.  Targets are detached here unless
    ``stop_grad`` is False (online targets, ``collapse=sigreg|vicreg``)."""
    if len(preds) != len(targets) or not preds:
        raise ValueError(f"need one target per prediction, got {len(preds)} and {len(targets)}")
    terms = []
    for p, y in zip(preds, targets):
        if p.shape != y.shape:
            raise ValueError(f"pred {tuple(p.shape)} and target {tuple(y.shape)} shapes differ")
        terms.append((p - (y.detach() if stop_grad else y)).abs().pow(exponent).mean() / exponent)
    return torch.stack(terms).mean()


def vjepa_targets(tokens: Tensor, masks: Sequence[Tensor]) -> List[Tensor]:
    """``layer_norm(tokens)`` (no affine) gathered at each mask's indices ``[B, K_j]``: ``[B, K_j, D]``."""
    h = F.layer_norm(tokens, (tokens.shape[-1],))
    return [torch.gather(h, 1, m.unsqueeze(-1).expand(-1, -1, h.shape[-1])) for m in masks]
