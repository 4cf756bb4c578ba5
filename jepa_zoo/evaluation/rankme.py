"""Label-free measures of embedding quality: RankMe, per-dimension spread, isotropy.

All take embeddings ``z [N, D]`` (N samples, D dimensions) and return Python floats.
They need no labels, so they track dimensional collapse on any data; see
:class:`jepa_zoo.callbacks.monitors.EmbeddingMonitor` for the online use.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_2d(z: Tensor, min_rows: int) -> None:
    if z.dim() != 2 or z.shape[0] < min_rows or z.shape[1] < 1:
        raise ValueError(f"embeddings [N, D] with N >= {min_rows}, D >= 1 expected, got {tuple(z.shape)}")


@torch.no_grad()
def rankme(z: Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al., 2023, "RankMe: Assessing the downstream performance of pretrained
    self-supervised representations by their rank"): a smooth effective rank of ``z [N, D]``.

    With ``σ_1 .. σ_K`` (``K = min(N, D)``) the singular values of ``z`` (not centred, as in the
    paper), ``p_k = σ_k / Σ_j σ_j + ε`` and

        RankMe(z) = exp(−Σ_k p_k · log p_k).

    It lies in ``[1, K]`` (up to terms of order ``K·ε``): 1 for a rank-1 ``z`` (complete
    dimensional collapse), ``r`` for a rank-``r`` ``z`` whose ``r`` non-zero singular values are
    equal, ``≈ K`` for an isotropic Gaussian with ``N ≫ D``.  An all-zero ``z`` gives 0.
    Computed in float64.
    """
    _check_2d(z, 1)
    s = torch.linalg.svdvals(z.detach().double())
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total + eps
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def embedding_stats(z: Tensor) -> Dict[str, float]:
    """Spread and isotropy of the L2-normalised embeddings ``u_i = z_i / ‖z_i‖`` of ``z [N, D]``, N >= 2.

    * ``std``: the mean over dimensions of the per-dimension standard deviation of ``u`` over the
      N samples, ``(1/D) Σ_d std_i(u_id)`` (SimSiam's collapse monitor, Chen & He 2021).  0 when
      every sample has the same direction (collapse); ``≈ 1/√D`` when ``u`` is uniform on the
      sphere (e.g. ``z`` an isotropic Gaussian).
    * ``isotropy``: the participation ratio of the eigenvalues ``λ_d`` of the covariance ``C`` of
      ``u``, normalised by D:  ``(Σ_d λ_d)² / (D · Σ_d λ_d²) = tr(C)² / (D · ‖C‖_F²)``.
      1 when ``C ∝ I`` (the spread is the same in every direction), ``1/D`` when all the spread
      lies along one direction, ``r/D`` for equal spread in ``r`` directions; defined as 0 when
      ``tr(C) ≤ 1e-12`` (collapse: rounding noise would otherwise decide the ratio).  ``C`` has
      rank at most ``N − 1``, so the value is at most ``(N − 1)/D``: use ``N > D`` samples for a
      figure comparable across runs.

    Computed in float64; returns ``{"std": ..., "isotropy": ...}``.
    """
    _check_2d(z, 2)
    u = F.normalize(z.detach().double(), dim=1)
    std = u.std(dim=0).mean()
    c = u - u.mean(dim=0)  # centred [N, D]; C = cᵀc / (N − 1)
    gram = c.T @ c if c.shape[1] <= c.shape[0] else c @ c.T  # same non-zero eigenvalues, smaller side
    frob2 = (gram * gram).sum()  # ‖cᵀc‖_F² = Σ λ² · (N − 1)²
    trace = gram.diagonal().sum()  # tr(cᵀc) = Σ λ · (N − 1)
    collapsed = trace <= 1e-12 * (z.shape[0] - 1)
    isotropy = 0.0 if collapsed else float(trace * trace / (z.shape[1] * frob2))
    return {"std": float(std), "isotropy": isotropy}


@torch.no_grad()
def token_spread(h: Tensor, max_rows: int = 8192) -> Dict[str, float]:
    """Where the energy of a batch of token features ``h [B, N, D]`` (B samples of N tokens) lies, and
    the effective rank of what distinguishes the samples.

    With ``μ = mean_{b,n} h`` (the mean token), ``μ_n = mean_b h_bn`` (the mean token at position n)::

        shared   = ‖μ‖²                                   a direction every token has
        position = mean_n ‖μ_n − μ‖²                      what the position alone tells
        content  = mean_{b,n} ‖h_bn − μ_n‖²               what differs between samples

    ``mean ‖h_bn‖² = shared + position + content`` exactly, and each is returned as its share of
    that total (they sum to 1).  ``content_rank`` is :func:`rankme` of the content part
    ``h_bn − μ_n`` (at most ``max_rows`` rows).  Why both: RankMe of pooled features falls when a
    shared direction grows (the features still differ, along a direction they no longer need to
    share) and when the content itself loses dimensions (dimensional collapse); only the second
    lowers ``content_rank``.  Computed in float64.
    """
    if h.dim() != 3 or h.shape[0] < 2:
        raise ValueError(f"token features [B, N, D] with B >= 2 expected, got {tuple(h.shape)}")
    h = h.detach().double()
    mu_n = h.mean(dim=0)  # [N, D]
    mu = mu_n.mean(dim=0)  # [D]
    shared = mu.square().sum()
    position = (mu_n - mu).square().sum(-1).mean()
    content = (h - mu_n).square().sum(-1).mean()
    total = shared + position + content
    if total <= 0:
        raise ValueError("token features are all zero")
    rows = (h - mu_n).reshape(-1, h.shape[-1])
    return {"shared": float(shared / total), "position": float(position / total), "content": float(content / total),
            "content_rank": rankme(rows[:max_rows])}
