"""The resumable training order and per-image randomness (jepa_zoo.data.sampling)."""

import pytest
import torch
import torchvision.transforms.v2 as T

from jepa_zoo.masks.schema import masking_config
from jepa_zoo.data.datasets import fake_dataset
from jepa_zoo.data.sampling import ResumableLoader, ResumableSampler, batch_seed, sample_seed
from jepa_zoo.masks.collator import MaskCollator

N, B = 48, 8


def transform():
    return T.Compose([T.RandomResizedCrop(32, scale=(0.2, 1.0)), T.RandomHorizontalFlip(), T.ToImage(),
                      T.ToDtype(torch.float32, scale=True)])


def dataset():
    return fake_dataset(N, 32, 5, transform(), 0)


def loader(ds, workers=0, replicas=1, rank=0, batch=B):
    return ResumableLoader(ds, batch, ResumableSampler(ds, batch, num_replicas=replicas, rank=rank, seed=3),
                           MaskCollator((8, 8), masking_config("multiblock")), num_workers=workers)


def test_seeds_are_distinct_and_deterministic():
    seeds = {sample_seed(0, e, i) for e in range(3) for i in range(1000)}
    assert len(seeds) == 3000 and all(0 <= s < 2**63 for s in seeds)
    assert sample_seed(1, 0, 0) != sample_seed(0, 0, 0) == sample_seed(0, 0, 0)
    assert len({batch_seed(0, e, t) for e in range(3) for t in range(100)}) == 300


def test_each_epoch_is_a_new_permutation_of_every_index():
    s = ResumableSampler(dataset(), B, seed=3)
    first = [i for i, *_ in s]
    s.took_batch()  # the model used the pass
    second = [i for i, *_ in s]
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


def as_tensors(ld):
    """One pass over a training loader, as training does it: every batch is taken by a step."""
    out = []
    for b in ld:
        out.append([x.clone() for x in (b[0], b[1], b[2], b[3])])
        ld.took_batch()
    return out


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


def pos(ld):
    st = ld.state_dict()
    return st["epoch"], st["batches_done"]


def test_position_counts_the_batches_the_model_took_and_rolls_over_at_the_epoch_end():
    ld = loader(dataset())
    assert pos(ld) == (0, 0)
    it = iter(ld)
    next(it), next(it), next(it)  # prefetched beyond what the model took: only took_batch counts
    assert pos(ld) == (0, 0)
    ld.took_batch()
    assert pos(ld) == (0, 1) and ld.state_dict()["samples_done"] == B
    for _ in range(N // B - 1):
        ld.took_batch()
    assert pos(ld) == (1, 0)
    iter(ld)  # the next pass starts (its workers prefetch): still nothing of epoch 1 taken
    assert pos(ld) == (1, 0)


def test_a_pass_abandoned_before_any_batch_is_taken_starts_again():
    """Lightning may start an iterator twice for one epoch (reloaded loaders, setup_data then the
    epoch loop): the second pass must be the same epoch, not the next."""
    s = ResumableSampler(dataset(), B, seed=3)
    first, again = [i for i, *_ in s], [i for i, *_ in s]
    assert first == again
    s.took_batch()
    assert [i for i, *_ in s] != first  # a pass the model used: the next one is the next epoch


def test_position_right_after_a_resume_is_the_resumed_one():
    ld = loader(dataset(), workers=2)
    ld.load_state_dict({"epoch": 0, "batches_done": 1})
    it = iter(ld)
    next(it)  # the workers prefetch; the model has taken nothing yet
    assert pos(ld) == (0, 1)  # a checkpoint written now (SIGTERM at start-up) resumes at the same place


def test_resume_with_another_global_batch_continues_after_the_same_samples():
    ds = dataset()
    state = {"epoch": 0, "batches_done": 3, "samples_done": 3 * B, "global_batch": B}
    smaller = loader(ds, batch=B // 2)
    smaller.load_state_dict(state)
    assert pos(smaller) == (0, 6)
    two_ranks = loader(ds, replicas=2, rank=1, batch=B // 2)  # same global batch, two GPUs
    two_ranks.load_state_dict(state)
    assert pos(two_ranks) == (0, 3)
    larger = loader(ds, batch=2 * B)
    with pytest.warns(UserWarning, match="seen twice"):
        larger.load_state_dict(state)
    assert pos(larger) == (0, 1)


def test_a_reloaded_training_loader_keeps_the_epochs_going():
    """reload_dataloaders_every_n_epochs: a new loader each epoch must not restart at epoch 0."""
    from jepa_zoo.config import DataConfig
    from jepa_zoo.data.datamodule import JEPADataModule

    dm = JEPADataModule(DataConfig(name="fake", fake_size=N, img_size=32, batch_size=B, num_workers=0),
                        transform())
    dm.setup("fit")
    first = dm.train_dataloader()
    epoch0 = [b[1].tolist() for b in first]
    for _ in range(N // B):
        dm.took_batch()
    epoch1 = [b[1].tolist() for b in dm.train_dataloader()]
    assert epoch0 != epoch1 and dm.train_sampler.current == 1


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
