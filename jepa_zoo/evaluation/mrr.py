"""World-model quality: IWM's mean reciprocal rank (MRR).

For an image ``x`` (clean source, every patch visible) and ``M`` target views
``y_j`` (photometric augmentations of the same crop, actions ``a_j``), the
world model predicts ``ŷ_j = g(f(x), a_j)`` and the target encoder gives the
bank ``h_j = LN(f̄(y_j))``.  The rank of ``h_j`` among the bank for query
``ŷ_j`` is ``r_j = 1 + #{k : d(ŷ_j, h_k) < d(ŷ_j, h_j)}`` and::

    MRR = mean_j 1 / r_j

``d`` is the L2 distance between LayerNorm'd patch features, flattened (the
metric we report), or minus the cosine of mean-pooled features (a variant).
A perfect world model scores 1; one that ignores the action ranks the true
target uniformly at random: ``chance = H_M / M`` (0.024 for M = 256).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from jepa_zoo.data.actions import SOLARIZE_THRESHOLD, action_vector
from jepa_zoo.data.photometric import apply_photometric, draw_params, identity_params, stack_params


def mean_reciprocal_rank(pred: Tensor, bank: Tensor, metric: str = "l2") -> Tensor:
    """``pred [B, M, D]`` queries, ``bank [B, M, D]`` candidates; ``pred[b, j]``'s answer is
    ``bank[b, j]`` among ``bank[b, :]``.  Returns the scalar MRR (float32)."""
    if pred.dim() != 3 or pred.shape != bank.shape:
        raise ValueError(f"pred and bank must both be [B, M, D]; got {tuple(pred.shape)}, {tuple(bank.shape)}")
    pred, bank = pred.float(), bank.float()
    if metric == "l2":
        d = torch.cdist(pred, bank)  # (B, M, M)
    elif metric == "cosine":
        d = -F.normalize(pred, dim=-1) @ F.normalize(bank, dim=-1).transpose(1, 2)
    else:
        raise ValueError(f"metric must be 'l2' or 'cosine', got {metric!r}")
    true = d.diagonal(dim1=1, dim2=2)  # (B, M)
    rank = 1 + (d < true[..., None]).sum(dim=-1)
    return (1.0 / rank.float()).mean()


def chance_mrr(m: int) -> float:
    """Expected MRR when the true item's rank is uniform on 1..M: ``H_M / M``."""
    return sum(1.0 / r for r in range(1, m + 1)) / m


@torch.no_grad()
def world_model_mrr(
    model,
    images: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    bank_size: int = 256,
    generator: Optional[torch.Generator] = None,
    chunk: int = 64,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Dict[str, float]:
    """MRR of ``model``'s world model on ``images [B, 3, H, W]`` (floats in [0, 1]).

    ``model`` provides ``predict_all(images, action) -> [n, N, D]``, ``target_features(images)
    -> [n, N, D]`` and ``action_strength`` (the jitter strengths: the bank's jitter is drawn with
    them, always applied so bank items differ).  Returns ``{"mrr", "mrr_cos", "chance"}``.
    ``progress(done, total)`` is called after each image.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    strength = tuple(model.action_strength)
    scores = {"mrr": [], "mrr_cos": []}
    for img in images:
        views = stack_params([draw_params(strength, 1.0, 0.0, 0.0, 0.0, generator, shuffle=False)
                              for _ in range(bank_size)])  # jitter only, always applied
        actions = action_vector(stack_params([identity_params()] * bank_size), views, strength).to(img.device)
        views = type(views)(*(f.to(img.device) for f in views))
        targets = apply_photometric(img.expand(bank_size, -1, -1, -1), views, mean, std, 3, SOLARIZE_THRESHOLD)
        source = TF.normalize(img, list(mean), list(std))[None]
        preds, bank = [], []
        for a, y in zip(actions.split(chunk), targets.split(chunk)):
            p = model.predict_all(source.expand(a.shape[0], -1, -1, -1), a)
            preds.append(F.layer_norm(p.float(), p.shape[-1:]))
            bank.append(model.target_features(y).float())
        p, h = torch.cat(preds)[None], torch.cat(bank)[None]  # (1, M, N, D)
        scores["mrr"].append(mean_reciprocal_rank(p.flatten(2), h.flatten(2)))
        scores["mrr_cos"].append(mean_reciprocal_rank(p.mean(2), h.mean(2), "cosine"))
        if progress is not None:
            progress(len(scores["mrr"]), len(images))
    out = {k: float(torch.stack(v).mean()) for k, v in scores.items()}
    out["chance"] = chance_mrr(bank_size)
    return out
