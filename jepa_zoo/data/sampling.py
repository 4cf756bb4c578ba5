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
  collator that supports it (``MaskCollator``) draws the masks of the
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

import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

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
    """Yields ``(index, sample_seed, batch_seed)``: this rank's share of epoch ``e``'s permutation,
    and keeps the position the model has reached in it.

    Each pass (``__iter__``) is the next epoch — unless the previous pass was abandoned before
    the model took a batch from it (Lightning starts an iterator, and its workers prefetch,
    more than once per epoch in some set-ups, e.g. ``reload_dataloaders_every_n_epochs``); then
    that epoch starts again.  Lightning's ``set_epoch`` is ignored because the fit loop creates
    the first pass's iterator before it calls ``set_epoch``.  A subclass of
    ``DistributedSampler`` so that Lightning does not replace it under DDP.  ``len`` is always
    the full epoch's count; a resumed pass yields fewer.
    """

    def __init__(self, dataset: Dataset, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.epoch, self._skip = 0, 0      # the next pass: its epoch and the batches it skips
        self.current, self._start = -1, 0  # the pass under way (-1: none yet) and its skip
        self._taken = 0                    # batches of the pass under way the model took (skip included)
        self._consumed = False             # whether the model took any batch of the pass under way
        self.per_epoch = self.num_samples // batch_size

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.num_replicas

    def resume(self, epoch: int, batches_done: int) -> None:
        """Make the next pass epoch ``epoch``, starting after its first ``batches_done`` batches."""
        if epoch < 0 or batches_done < 0:
            raise ValueError(f"cannot resume at epoch {epoch}, batch {batches_done}")
        self.epoch, self._skip, self.current, self._consumed = epoch, batches_done, -1, False

    def took_batch(self, per_epoch: Optional[int] = None) -> None:
        """The model took one more batch of the pass under way; an epoch is ``per_epoch`` batches
        (the trainer's ``num_training_batches``, which ``limit_train_batches`` can lower)."""
        self._taken += 1
        self._consumed = True
        if per_epoch is not None:
            self.per_epoch = per_epoch

    @property
    def started(self) -> bool:
        """Whether a pass over the data has begun (``load_position`` then applies to the next one only)."""
        return self.current >= 0

    def position(self) -> Dict[str, int]:
        """Where the next batch the model has not taken is: ``{"epoch", "batches_done"}``, plus
        ``samples_done`` (global) and the layout that produced it, for a resume on other hardware."""
        if self.current < 0 or not self._consumed:  # nothing taken from the pass under way (if any)
            epoch, done = (self.epoch, self._skip) if self.current < 0 else (self.current, self._start)
        elif self._taken >= self.per_epoch:
            epoch, done = self.current + 1, 0
        else:
            epoch, done = self.current, self._taken
        return {"epoch": epoch, "batches_done": done, "samples_done": done * self.global_batch,
                "global_batch": self.global_batch}

    def load_position(self, state: Dict[str, int]) -> None:
        """Resume at a :meth:`position`; with another global batch (other GPU count or per-GPU
        batch) the epoch continues after the same number of samples, rounded down to a batch."""
        done = int(state["batches_done"])
        if "samples_done" in state and int(state.get("global_batch", self.global_batch)) != self.global_batch:
            done = int(state["samples_done"]) // self.global_batch
            if int(state["samples_done"]) % self.global_batch:
                warnings.warn(f"resuming with a global batch of {self.global_batch} instead of "
                              f"{state['global_batch']}: up to one batch of this epoch is seen twice", stacklevel=2)
        self.resume(int(state["epoch"]), done)

    def set_epoch(self, epoch: int) -> None:  # noqa: D102 - see the class docstring
        pass

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's dataset indices for ``epoch``, in order."""
        gen = torch.Generator().manual_seed(sample_seed(self.seed, epoch, -1))
        perm = torch.randperm(len(self.dataset), generator=gen)[: self.total_size]
        return perm[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[Tuple[int, int, int]]:
        if self.current >= 0 and not self._consumed:  # the last pass was abandoned: start it again
            epoch, skip = self.current, self._start
        else:
            epoch, skip = self.epoch, self._skip
        self.current, self._start, self._taken, self._consumed = epoch, skip, skip, False
        self.epoch, self._skip = epoch + 1, 0
        start = skip * self.batch_size
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
            torch.default_generator.manual_seed(seed)  # CPU only: the training process's CUDA streams stay
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
            torch.default_generator.manual_seed(seeds.pop())
            if getattr(self.collate_fn, "global_batch", False):
                return self.collate_fn(samples, shard=self.shard)
            return self.collate_fn(samples)


class ResumableLoader(DataLoader):
    """The training loader: ``SeededSamples`` in the order of a :class:`ResumableSampler`, batches
    collated by :class:`SeededCollate`.  Its ``state_dict`` is the sampler's position (the
    datamodule saves it in checkpoints); ``took_batch`` is called when a training step has
    used a batch (after all prefetching, which runs ahead of the model)."""

    def __init__(self, dataset: Dataset, batch_size: int, sampler: ResumableSampler,
                 collate_fn: Optional[Callable[[List[Any]], Any]] = None, **kwargs: Any):
        if sampler.batch_size != batch_size:
            raise ValueError(f"batch_size {batch_size} differs from the sampler's {sampler.batch_size}")
        super().__init__(SeededSamples(dataset), batch_size=batch_size, sampler=sampler, drop_last=True,
                         collate_fn=SeededCollate(collate_fn, sampler.rank, sampler.num_replicas), **kwargs)

    def took_batch(self, per_epoch: Optional[int] = None) -> None:
        self.sampler.took_batch(per_epoch)

    def state_dict(self) -> dict:
        return self.sampler.position()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_position(state)
