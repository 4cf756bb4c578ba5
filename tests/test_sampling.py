"""The resumable training order and per-image randomness (jepa_zoo.data.sampling)."""

import pytest
import torch
import torchvision.transforms.v2 as T

from jepa_zoo.config import MaskingConfig
from jepa_zoo.data.datasets import fake_dataset
from jepa_zoo.data.sampling import ResumableLoader, ResumableSampler, batch_seed, sample_seed
from jepa_zoo.masks.collator import MultiBlockCollator

N, B = 48, 8


def dataset():
    tf = T.Compose([T.RandomResizedCrop(32, scale=(0.2, 1.0)), T.RandomHorizontalFlip(), T.ToImage(),
                    T.ToDtype(torch.float32, scale=True)])
    return fake_dataset(N, 32, 5, tf, 0)


def loader(ds, workers=0, replicas=1, rank=0, batch=B):
    return ResumableLoader(ds, batch, ResumableSampler(ds, batch, num_replicas=replicas, rank=rank, seed=3),
                           MultiBlockCollator((8, 8), MaskingConfig()), num_workers=workers)


def test_seeds_are_distinct_and_deterministic():
    seeds = {sample_seed(0, e, i) for e in range(3) for i in range(1000)}
    assert len(seeds) == 3000 and all(0 <= s < 2**63 for s in seeds)
    assert sample_seed(1, 0, 0) != sample_seed(0, 0, 0) == sample_seed(0, 0, 0)
    assert len({batch_seed(0, e, t) for e in range(3) for t in range(100)}) == 300


def test_each_epoch_is_a_new_permutation_of_every_index():
    s = ResumableSampler(dataset(), B, seed=3)
    first, second = [i for i, *_ in s], [i for i, *_ in s]
    assert sorted(first) == sorted(second) == list(range(N)) and first != second
    assert s.current == 1 and s.epoch == 2


def test_ranks_split_each_global_batch():
    """Rank r's t-th batch of B/2 holds the even/odd positions of the single process's t-th batch."""
    ds = dataset()
    single = [i for i, *_ in ResumableSampler(ds, B, seed=3)]
    ranks = [[i for i, *_ in ResumableSampler(ds, B // 2, num_replicas=2, rank=r, seed=3)] for r in (0, 1)]
    for t in range(N // B):
        assert sorted(ranks[0][t * B // 2:(t + 1) * B // 2] + ranks[1][t * B // 2:(t + 1) * B // 2]) == sorted(
            single[t * B:(t + 1) * B])


def as_tensors(batches):
    return [[x.clone() for x in (b[0], b[1], b[2], b[3])] for b in batches]


def equal(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for p, q in zip(a, b) for x, y in zip(p, q))


def test_views_and_masks_do_not_depend_on_workers_or_the_global_generator():
    ds = dataset()
    torch.manual_seed(0)
    a = as_tensors(loader(ds))
    torch.manual_seed(123)  # the global stream must not matter
    b = as_tensors(loader(ds, workers=2))
    assert equal(a, b)
    assert not torch.equal(a[0][0], a[1][0]) and not torch.equal(a[0][1], a[1][1])  # batches do differ


def test_resume_continues_with_the_next_batch_then_the_next_epoch():
    ds = dataset()
    straight = loader(ds)
    epoch0, epoch1 = as_tensors(straight), as_tensors(straight)
    resumed = loader(ds)
    resumed.load_state_dict({"epoch": 0, "batches_done": 2})
    assert equal(as_tensors(resumed), epoch0[2:])
    assert equal(as_tensors(resumed), epoch1)
    assert len(resumed) == N // B  # the trainer's count of batches per epoch is unchanged


def test_state_counts_taken_batches_and_rolls_over_at_the_epoch_end():
    ds = dataset()
    ld = loader(ds)
    assert ld.state_dict() == {"epoch": 0, "batches_done": 0}
    it = iter(ld)
    next(it), next(it), next(it)  # prefetched beyond what the model took: only took_batch counts
    ld.took_batch()
    assert ld.state_dict() == {"epoch": 0, "batches_done": 1}
    for _ in range(N // B - 1):
        ld.took_batch()
    assert ld.state_dict() == {"epoch": 1, "batches_done": 0}
    ld.took_batch(per_epoch=10)  # a new pass has not started: still epoch 0's count, now 7 of 10
    assert ld.state_dict() == {"epoch": 0, "batches_done": 7}


def test_bad_resume_position_is_refused():
    with pytest.raises(ValueError, match="cannot resume"):
        ResumableSampler(dataset(), B).resume(-1, 0)


def test_two_ranks_draw_the_single_process_views_and_masks():
    """Rank r's t-th batch (B/2) is rows r, r+2, ... of the single process's t-th batch (B): images,
    context and target indices alike, so DDP trains on exactly what one process would."""
    ds = dataset()
    single = as_tensors(loader(ds))
    ranks = [as_tensors(loader(ds, replicas=2, rank=r, batch=B // 2)) for r in (0, 1)]
    for t, whole in enumerate(single):
        for r in (0, 1):
            assert all(torch.equal(x[r::2], y) for x, y in zip(whole, ranks[r][t]))


def test_loader_and_sampler_batch_sizes_must_agree():
    ds = dataset()
    with pytest.raises(ValueError, match="differs"):
        ResumableLoader(ds, 4, ResumableSampler(ds, 8))
