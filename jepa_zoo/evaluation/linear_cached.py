"""Linear probes on cached features: the lr × wd grid of heads trained on tensors, in seconds.

The head is the linear probe of :mod:`jepa_zoo.evaluation.probes`,
``Linear(LN(f))`` with ``f`` the encoder's pooled (mean) token and a LayerNorm
without affine, so training it on features extracted once gives the probe
trained on the frozen encoder on the fly, minus the augmentation (a few
augmented copies of the training features put some back). Every head of the
grid sees the same mini-batches (a seeded order), with AdamW in its own
parameter group and the same linear warm-up then cosine learning rate;
:meth:`ProbeModule.results`'s rule chooses the head: the best on the held-out
``select`` features, reported on the ``test`` features.

The training runs on one intra-op thread by default (``threads``): its ops are small (a batch of
256 features per head), so each parallel region costs more in thread synchronisation than it
saves, and beside another busy process on the cores a synchronisation costs milliseconds: 47 s
against 0.6 s for the same grid (``docs/performance.md``, "Threads").
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from jepa_zoo.evaluation.probes import LinearHead, head_name
from jepa_zoo.losses.sigreg import intra_op_threads
from jepa_zoo.optim import warmup_cosine


def _top(logits: Tensor, y: Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    return 100.0 * (logits.topk(k, dim=1).indices == y[:, None]).any(1).float().mean().item()


def fit_linear_grid(train: Sequence[Tensor], select: Sequence[Tensor], test: Sequence[Tensor], num_classes: int,
                    lrs: Sequence[float], wds: Sequence[float], epochs: int, batch_size: int = 256,
                    warmup_fraction: float = 0.1, seed: int = 0, min_steps: int = 0,
                    threads: Optional[int] = 1) -> Dict[str, Any]:
    """Train one linear head per (lr, wd) on ``train = (features [M, D], labels [M])`` for ``epochs``, or
    more epochs where that is fewer than ``min_steps`` steps (a low-shot set of 100 images is one batch
    an epoch); choose the head on ``select``, report it on ``test`` (top-1 / top-5 in %); every head's
    figures under ``heads``.  ``threads``: torch's intra-op threads while it runs (restored after;
    ``None`` keeps torch's setting)."""
    with intra_op_threads(threads):
        return _fit_linear_grid(train, select, test, num_classes, lrs, wds, epochs, batch_size, warmup_fraction,
                                seed, min_steps)


def _fit_linear_grid(train: Sequence[Tensor], select: Sequence[Tensor], test: Sequence[Tensor], num_classes: int,
                     lrs: Sequence[float], wds: Sequence[float], epochs: int, batch_size: int,
                     warmup_fraction: float, seed: int, min_steps: int) -> Dict[str, Any]:
    x, y = train
    if len(x) == 0:
        raise ValueError("no training features")
    gen = torch.Generator().manual_seed(seed)
    grid = [(float(lr), float(wd)) for lr, wd in product(lrs, wds)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        heads = nn.ModuleList([LinearHead(x.shape[1], num_classes) for _ in grid])
    opt = torch.optim.AdamW([{"params": list(h.parameters()), "lr": lr, "weight_decay": wd}
                             for h, (lr, wd) in zip(heads, grid)])
    batch = min(batch_size, len(x))
    steps_per_epoch = len(x) // batch  # a last partial batch is dropped, as the on-the-fly probe's loader does
    epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    total = max(1, epochs * steps_per_epoch)
    sched = LambdaLR(opt, lambda s: warmup_cosine(s, total, int(math.ceil(warmup_fraction * total)), final_ratio=0.0))
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for b in range(steps_per_epoch):
            at = order[b * batch:(b + 1) * batch]
            t = x[at][:, None]  # one "token": LinearHead pools over tokens
            loss = torch.stack([F.cross_entropy(h(t), y[at]) for h in heads]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    heads.eval()
    out = {}
    with torch.no_grad():
        for (lr, wd), h in zip(grid, heads):
            ls, lt = h(select[0][:, None]), h(test[0][:, None])
            out[head_name(lr, wd)] = {"select_top1": _top(ls, select[1], 1), "top1": _top(lt, test[1], 1),
                                      "top5": _top(lt, test[1], 5)}
    best = max(out, key=lambda n: out[n]["select_top1"])  # the first of equals: grid order
    return {"top1": out[best]["top1"], "top5": out[best]["top5"], "select_top1": out[best]["select_top1"],
            "best_head": best, "steps": total, "heads": out}
