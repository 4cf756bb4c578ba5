"""A training order that resumes mid-epoch and randomness that belongs to each image.

Two things make a resumed run draw exactly the batches an uninterrupted run
would have drawn, whatever the number of loader workers or ranks:

* :class:`ResumableSampler` — epoch ``e``'s order is ``randperm(N)`` seeded by
  ``(seed, e)``; rank ``r`` of ``R`` takes positions ``r, r + R, ...`` (so the
  union of the ranks' ``t``-th batches of size ``B/R`` is the single-process
  ``t``-th batch of size ``B``), and after a resume the first pass skips the
  batches the run had already consumed.
* :class:`ResumableLoader` — a DataLoader with a position,
  ``{"epoch", "batches_done"}``, that checkpoints save and a resumed run hands
  to the sampler before the first batch is drawn.
* Each index comes with its own seed ``sample_seed(seed, e, index)`` and the
  seed of its *global* batch ``batch_seed(seed, e, t)``; :class:`SeededSamples`
  runs the dataset's transform (crops, flips, jitter, IWM actions) under the
  former and :class:`SeededCollate` draws the masks under the latter.  A
  collator that supports it (``MultiBlockCollator``) draws the masks of the
  whole global batch (``B × R`` rows) and keeps this rank's rows ``r, r + R,
  ...``, so the masks, and the batch-wide choices in them (block sizes, the
  number of context patches), are the same on 1 or on 64 processes.  Views
  and masks are then a function of (seed, epoch, image), not of which worker
  produced them or of how far torch's global generator had advanced — which a
  mid-epoch checkpoint could not restore, since Lightning fetches the next
  batch before the current step's checkpoint is written.

Only torch's CPU generator is seeded (torchvision's v2 transforms and our
masks use it); a custom transform drawing from Python's ``random`` or NumPy
is not covered.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

_MASK64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """SplitMix64 finaliser: a bijection on 64-bit ints that scatters nearby inputs."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of image ``index``'s views in ``epoch``: ``mix(mix(mix(seed) + epoch) + index)``, 63 bits."""
    return _mix(_mix(_mix(seed) + epoch) + index) >> 1


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """The seed of global batch ``batch``'s masks in ``epoch`` (the same on every rank), 63 bits."""
    return _mix(_mix(_mix(seed ^ 0x6A09E667F3BCC908) + epoch) + batch) >> 1


class ResumableSampler(DistributedSampler):
    """Yields ``(index, sample_seed, batch_seed)``: this rank's share of epoch ``e``'s permutation.

    The epoch advances by one with each pass (``__iter__``); Lightning's
    ``set_epoch`` is ignored because the fit loop creates the first pass's
    iterator (and prefetches from it) before it calls ``set_epoch``.  A
    subclass of ``DistributedSampler`` so that Lightning does not replace it
    under DDP.  ``len`` is always the full epoch's count; a resumed first pass
    yields fewer.
    """

    def __init__(self, dataset: Dataset, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.epoch = 0       # the epoch of the next pass
        self.current = -1    # the epoch of the pass under way (-1: none yet)
        self._skip = 0       # batches to skip at the start of the next pass

    def resume(self, epoch: int, batches_done: int) -> None:
        """Make the next pass epoch ``epoch``, starting after its first ``batches_done`` batches."""
        if epoch < 0 or batches_done < 0:
            raise ValueError(f"cannot resume at epoch {epoch}, batch {batches_done}")
        self.epoch, self._skip = epoch, batches_done

    def set_epoch(self, epoch: int) -> None:  # noqa: D102 - see the class docstring
        pass

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's dataset indices for ``epoch``, in order."""
        gen = torch.Generator().manual_seed(sample_seed(self.seed, epoch, -1))
        perm = torch.randperm(len(self.dataset), generator=gen)[: self.total_size]
        return perm[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[Tuple[int, int, int]]:
        epoch, start = self.epoch, self._skip * self.batch_size
        self.current, self.epoch, self._skip = epoch, epoch + 1, 0
        for pos, i in enumerate(self.order(epoch)[start:].tolist(), start):
            yield i, sample_seed(self.seed, epoch, i), batch_seed(self.seed, epoch, pos // self.batch_size)


class SeededSamples(Dataset):
    """``ds[(index, seed, batch_seed)] -> (batch_seed, ds[index])`` with torch's CPU generator
    seeded by ``seed`` for the duration of the call (the caller's generator state is restored
    afterwards)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int, int]) -> Tuple[int, Any]:
        index, seed, bseed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return bseed, self.dataset[index]


class SeededCollate:
    """Collate ``(batch_seed, sample)`` pairs with ``collate_fn`` (default: torch's) under the batch
    seed.  A ``collate_fn`` with ``global_batch = True`` is called as
    ``collate_fn(samples, shard=(rank, replicas))`` and returns this rank's share of the
    global batch's draws."""

    def __init__(self, collate_fn: Optional[Callable[..., Any]] = None, rank: int = 0, replicas: int = 1):
        self.collate_fn = collate_fn or default_collate
        self.shard = (rank, replicas)

    def __call__(self, items: Sequence[Tuple[int, Any]]) -> Any:
        seeds = {s for s, _ in items}
        if len(seeds) != 1:
            raise ValueError(f"a batch mixes samples of {len(seeds)} global batches: the loader's batch size "
                             "must be the sampler's")
        samples = [x for _, x in items]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds.pop())
            if getattr(self.collate_fn, "global_batch", False):
                return self.collate_fn(samples, shard=self.shard)
            return self.collate_fn(samples)


class ResumableLoader(DataLoader):
    """The training loader: ``SeededSamples`` in the order of a :class:`ResumableSampler`, batches
    collated by :class:`SeededCollate`.  ``took_batch`` is called as the training loop takes each
    batch (the datamodule's ``on_before_batch_transfer``, i.e. after all prefetching), so
    ``state_dict`` — Lightning saves it with the fit loop — is the position of the next batch the
    model has not seen."""

    def __init__(self, dataset: Dataset, batch_size: int, sampler: ResumableSampler,
                 collate_fn: Optional[Callable[[List[Any]], Any]] = None, **kwargs: Any):
        if sampler.batch_size != batch_size:
            raise ValueError(f"batch_size {batch_size} differs from the sampler's {sampler.batch_size}")
        super().__init__(SeededSamples(dataset), batch_size=batch_size, sampler=sampler, drop_last=True,
                         collate_fn=SeededCollate(collate_fn, sampler.rank, sampler.num_replicas), **kwargs)
        self._taken = (-1, 0)          # (epoch, batches taken in it)
        self._per_epoch: Optional[int] = None

    def took_batch(self, per_epoch: Optional[int] = None) -> None:
        """One more batch of the sampler's current pass went to the model; an epoch is
        ``per_epoch`` batches (the trainer's ``num_training_batches``; default ``len(self)``)."""
        epoch, taken = self._taken
        now = self.sampler.current
        self._taken = (now, taken + 1 if epoch == now else 1)
        self._per_epoch = per_epoch

    def state_dict(self) -> dict:
        epoch, taken = self._taken
        if epoch < 0:
            return {"epoch": self.sampler.epoch, "batches_done": 0}
        per_epoch = self._per_epoch if self._per_epoch is not None else len(self)
        if taken >= per_epoch:
            return {"epoch": epoch + 1, "batches_done": 0}
        return {"epoch": epoch, "batches_done": taken}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.resume(int(state["epoch"]), int(state["batches_done"]))
        self._taken = (-1, 0)
