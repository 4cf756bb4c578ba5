"""Callbacks: online monitors that every method can use (``monitors.*`` in the training config).

* :class:`EmbeddingMonitor` logs ``val/rankme``, ``val/emb_std`` and ``val/isotropy`` (see
  :mod:`jepa_zoo.evaluation.rankme`) of the evaluation encoder's features of validation images;
* :class:`OnlineKNN` logs ``val/knn_top1``: validation images classified by weighted kNN
  (:func:`jepa_zoo.evaluation.knn.knn_scores`) against a queue of recent training features.

Each looks at up to ``max_images`` validation images per validation run (the first ones the
loader yields; split evenly across processes under DDP) and computes their features itself with
``pl_module.eval_encoder``: one extra forward pass of those images per callback, in eval mode,
under the trainer's precision context.  Nothing is logged during the sanity check.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from jepa_zoo.evaluation.knn import knn_scores
from jepa_zoo.evaluation.rankme import embedding_stats, rankme
from jepa_zoo.panels import Line, Section

# The dashboard panels of these monitors (jepa_zoo/panels.py); the collapse ones to watch first.
PANELS = (Section("Representation quality", (
    Line(("val/knn_top1",), "online kNN: validation top-1 (%)"),
    Line(("val/rankme",), "RankMe (effective rank)", collapse="falls towards 1"),
    Line(("val/emb_std",), "feature std per dimension", collapse="falls towards 0"),
    Line(("val/isotropy",), "isotropy"),
)),)


def gather_rows(x: Tensor, all_gather: Callable[[Tensor], Tensor], world_size: int) -> Tensor:
    """Every process's ``x [n_rank, ...]`` concatenated in rank order; ``n_rank`` may differ.

    ``all_gather`` (e.g. ``LightningModule.all_gather``) needs equal shapes, so rows are padded to
    the largest ``n_rank`` and the padding dropped after.  Every process must call this.
    """
    if world_size == 1:
        return x
    sizes = all_gather(torch.tensor(x.shape[0], device=x.device)).view(world_size).tolist()
    padded = torch.cat([x, x.new_zeros(max(sizes) - x.shape[0], *x.shape[1:])])
    rows = all_gather(padded).view(world_size, max(sizes), *x.shape[1:])
    return torch.cat([rows[r, :n] for r, n in enumerate(sizes)])


class _ValFeatures(L.Callback):
    """Collects ``eval_encoder`` features + labels of the first validation images of each validation run."""

    def __init__(self, max_images: int):
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        self.max_images = max_images
        self._feats: List[Tensor] = []
        self._labels: List[Tensor] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._feats, self._labels = [], []

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking:
            return
        room = math.ceil(self.max_images / trainer.world_size) - sum(f.shape[0] for f in self._feats)
        if room <= 0:
            return
        images, labels = batch.inputs[:room], batch.labels[:room]
        with torch.no_grad(), trainer.precision_plugin.val_step_context():
            feats = pl_module.eval_encoder(images)
        self._feats.append(feats.float())
        self._labels.append(labels)

    def _collected(self) -> Optional[Tuple[Tensor, Tensor]]:
        """This process's features ``[n, D]`` and labels ``[n]``; None when validation saw no batch.

        Under DDP Lightning's distributed sampler gives every process the same number of
        validation batches, so either all processes have features or none has.
        """
        if not self._feats:
            return None
        feats, labels = torch.cat(self._feats), torch.cat(self._labels)
        self._feats, self._labels = [], []
        return feats, labels


class EmbeddingMonitor(_ValFeatures):
    """``val/rankme``, ``val/emb_std``, ``val/isotropy`` of ``eval_encoder`` features of validation images.

    The features of all processes are gathered (the effective rank of the union is not a mean
    of per-process ranks), so every process logs the same values.  RankMe is at most
    ``min(images, D)``: compare runs at equal ``max_images``, with ``max_images > D`` for a
    meaningful isotropy (see :func:`jepa_zoo.evaluation.rankme.embedding_stats`).
    """

    def __init__(self, max_images: int = 2048):
        super().__init__(max_images)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        got = self._collected()
        if trainer.sanity_checking or got is None:
            return
        z = gather_rows(got[0], pl_module.all_gather, trainer.world_size)
        if z.shape[0] < 2:
            return  # one image has no spread to measure
        if not bool(torch.isfinite(z).all()):  # diverged weights: say so in the metrics, do not crash
            values = {"rankme": math.nan, "std": math.nan, "isotropy": math.nan}
        else:
            values = {"rankme": rankme(z), **embedding_stats(z)}
        pl_module.log("val/rankme", values["rankme"], sync_dist=True)  # equal on every process: the mean is the value
        pl_module.log("val/emb_std", values["std"], sync_dist=True)
        pl_module.log("val/isotropy", values["isotropy"], sync_dist=True)


class OnlineKNN(_ValFeatures):
    """``val/knn_top1`` (in percent, like ``probe/val_acc`` and every evaluation): weighted kNN accuracy of
    ``eval_encoder`` features of validation images against a queue of training features.

    The queue holds the L2-normalised ``StepOutput.features`` and ``labels`` of the latest
    ``queue_size`` training samples, read from ``pl_module.last_step_output`` after each training
    step (for every method these come from the encoder that ``eval_encoder`` is, on training
    views, and are up to ``queue_size / batch`` steps old).  Entries with label -1 (unlabelled
    data) are kept in the queue but never vote, and unlabelled validation images are not scored;
    with no labelled entry or image nothing is logged.

    The queue is a pair of plain tensors on the callback (not module buffers), saved with
    :meth:`state_dict` into checkpoints so that a resumed run keeps it.  Under DDP every process
    queues its own training samples (no communication per step) and classifies its own
    validation images; hits and counts are summed over processes.  Lightning saves rank 0's
    callback state only, so after a resume every process starts from rank 0's queue.
    """

    def __init__(self, queue_size: int = 4096, k: int = 20, temperature: float = 0.07, max_images: int = 2048):
        super().__init__(max_images)
        if queue_size < 1 or k < 1 or not temperature > 0:
            raise ValueError(f"need queue_size >= 1, k >= 1, temperature > 0; got {queue_size}, {k}, {temperature}")
        self.queue_size, self.k, self.temperature = queue_size, k, temperature
        self.queue: Optional[Tensor] = None  # [queue_size, D] float32, rows L2-normalised
        self.queue_labels: Optional[Tensor] = None  # [queue_size] int64
        self.ptr = 0  # the row the next sample goes to
        self.filled = 0  # rows holding samples (the first `filled` until the queue wraps)

    # -- the queue --------------------------------------------------------------------------
    def push(self, features: Tensor, labels: Tensor) -> None:
        """Queue ``features [B, D]`` (L2-normalised here) with ``labels [B]``; the oldest rows go first."""
        if features.dim() != 2 or labels.shape != features.shape[:1]:
            raise ValueError(f"features [B, D] and labels [B] expected, got {tuple(features.shape)}, "
                             f"{tuple(labels.shape)}")
        f = F.normalize(features.detach().float(), dim=1)[-self.queue_size:]
        y = labels.detach().long()[-self.queue_size:]
        # rows of a non-finite (skipped) step are queued as zeros with label -1, so they never vote;
        # torch.where keeps this on the device (no host sync per step)
        finite = torch.isfinite(f).all(dim=1)
        f = torch.where(finite[:, None], f, torch.zeros_like(f))
        y = torch.where(finite, y, torch.full_like(y, -1))
        if self.queue is None or self.queue.shape[1] != f.shape[1]:
            self.queue = f.new_zeros(self.queue_size, f.shape[1])
            self.queue_labels = y.new_full((self.queue_size,), -1)
            self.ptr = self.filled = 0
        self.queue, self.queue_labels = self.queue.to(f.device), self.queue_labels.to(f.device)
        idx = (self.ptr + torch.arange(f.shape[0], device=f.device)) % self.queue_size
        self.queue[idx] = f
        self.queue_labels[idx] = y
        self.ptr = (self.ptr + f.shape[0]) % self.queue_size
        self.filled = min(self.filled + f.shape[0], self.queue_size)

    def entries(self) -> Tuple[Tensor, Tensor]:
        """The queued features ``[n, D]`` and labels ``[n]``, oldest first (empty before any push)."""
        if self.queue is None:
            return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
        if self.filled < self.queue_size:
            return self.queue[: self.filled], self.queue_labels[: self.filled]
        order = torch.arange(self.ptr, self.ptr + self.queue_size, device=self.queue.device) % self.queue_size
        return self.queue[order], self.queue_labels[order]

    def hits(self, features: Tensor, labels: Tensor) -> Tuple[int, int]:
        """(correct, scored) for ``features [Q, D]`` with ``labels [Q]`` against the queue's labelled rows."""
        bank, bank_labels = self.entries()
        keep, scored = bank_labels >= 0, labels >= 0
        if not keep.any() or not scored.any():
            return 0, 0
        bank, bank_labels = bank[keep], bank_labels[keep]
        q = features[scored].to(bank.device)
        y = labels[scored].to(bank.device).long()
        num_classes = int(max(bank_labels.max(), y.max())) + 1
        pred = knn_scores(bank, bank_labels, q, self.k, self.temperature, num_classes).argmax(dim=1)
        return int((pred == y).sum()), int(y.shape[0])

    # -- Lightning hooks ----------------------------------------------------------------------
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        out = getattr(pl_module, "last_step_output", None)
        if out is not None and out.features is not None and out.labels is not None:
            self.push(out.features, out.labels)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        got = self._collected()
        if trainer.sanity_checking or got is None:
            return
        correct, scored = self.hits(*got)
        counts = torch.tensor([correct, scored], dtype=torch.float64, device=pl_module.device)
        correct, scored = trainer.strategy.reduce(counts, reduce_op="sum").tolist()
        if scored > 0:
            pl_module.log("val/knn_top1", 100 * correct / scored, sync_dist=True)  # equal on every process

    def state_dict(self) -> Dict[str, Any]:
        feats, labels = self.entries()
        return {"features": feats.cpu(), "labels": labels.cpu()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore the queue; a different ``queue_size`` keeps the newest entries that fit."""
        self.queue, self.queue_labels, self.ptr, self.filled = None, None, 0, 0
        if state_dict["features"].shape[0] > 0:
            self.push(state_dict["features"], state_dict["labels"])
