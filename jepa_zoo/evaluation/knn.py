"""Weighted k-nearest-neighbour classification (Wu et al., 2018) on frozen features.

Features are L2-normalised; for a query ``q`` with neighbours ``i ∈ top-k``
by cosine similarity ``s_i``, class ``c`` scores ``Σ_i exp(s_i / T)·[y_i = c]``.
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def knn_scores(bank: Tensor, bank_labels: Tensor, queries: Tensor, k: int, temperature: float,
               num_classes: int, chunk: int = 1024) -> Tensor:
    """Class scores ``[Q, C]`` for ``queries [Q, D]`` against ``bank [M, D]`` with labels ``[M]``."""
    if bank.dim() != 2 or queries.dim() != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(f"bank [M, D] and queries [Q, D] expected, got {tuple(bank.shape)}, {tuple(queries.shape)}")
    if bank_labels.shape != bank.shape[:1]:
        raise ValueError(f"bank_labels must be [{bank.shape[0]}], got {tuple(bank_labels.shape)}")
    k = min(k, bank.shape[0])
    bank = F.normalize(bank.float(), dim=1)
    out = []
    for q in F.normalize(queries.float(), dim=1).split(chunk):
        sim, idx = (q @ bank.T).topk(k, dim=1)  # [q, k]
        weights = (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        out.append(votes.scatter_add_(1, bank_labels[idx], weights))
    return torch.cat(out)


def knn_accuracy(bank: Tensor, bank_labels: Tensor, queries: Tensor, query_labels: Tensor,
                 ks: Sequence[int] = (20, 200), temperature: float = 0.07) -> Dict[str, float]:
    """Top-1 / top-5 accuracy (in %) for each ``k``: ``{"knn20_top1": ..., "knn20_top5": ...}``."""
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    result: Dict[str, float] = {}
    for k in ks:
        ranked = knn_scores(bank, bank_labels, queries, k, temperature, num_classes).argsort(dim=1, descending=True)
        hit = ranked == query_labels[:, None]
        result[f"knn{k}_top1"] = 100.0 * hit[:, :1].any(1).float().mean().item()
        result[f"knn{k}_top5"] = 100.0 * hit[:, :5].any(1).float().mean().item()
    return result
