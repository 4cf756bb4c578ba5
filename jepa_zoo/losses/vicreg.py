"""VICReg's variance and covariance terms (Bardes et al., 2022), the regulariser of ``collapse=vicreg``
(PLDM / EB-JEPA use them on a world model's embeddings).

For embeddings ``z`` of shape ``(N, D)`` (one row per sample), ``z̄ = z − mean_n z``::

    var = 1/D Σ_d max(0, γ − sqrt(Var_n z_d + ε))          γ = 1, ε = 1e-4 (unbiased variance)
    cov = 1/D Σ_{d≠e} C_de²,   C = z̄ᵀ z̄ / (N − 1)

Both vanish only when every dimension has a standard deviation of at least γ and the dimensions
are decorrelated; a collapsed batch (every row equal) gives ``var = γ − sqrt(ε)``.  The
invariance term of VICReg is the method's own prediction loss.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor


def variance_loss(z: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """The hinge on each dimension's standard deviation, averaged over dimensions; ``z (N, D)``."""
    std = torch.sqrt(z.float().var(dim=0) + eps)
    return torch.relu(gamma - std).mean()


def covariance_loss(z: Tensor) -> Tensor:
    """The sum of squared off-diagonal covariances divided by ``D``; ``z (N, D)``."""
    z = z.float()
    n, d = z.shape
    zc = z - z.mean(dim=0)
    cov = zc.T @ zc / max(n - 1, 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.square().sum() / d


def vicreg_terms(z: Tensor) -> Dict[str, Tensor]:
    """``{"var_loss", "cov_loss"}`` of ``z (..., N, D)``, each averaged over the leading dimensions."""
    if z.dim() < 2:
        raise ValueError(f"VICReg expects (..., N, D) embeddings, got shape {tuple(z.shape)}")
    flat = z.reshape(-1, *z.shape[-2:])
    return {"var_loss": torch.stack([variance_loss(x) for x in flat]).mean(),
            "cov_loss": torch.stack([covariance_loss(x) for x in flat]).mean()}
