"""The I-JEPA masking ablations: rasterised, block and random (context = complement of the targets)."""

import pytest
import torch

from jepa_zoo.config import ConfigError, MaskingConfig
from jepa_zoo.masks.schema import masking_config
from jepa_zoo.masks.collator import MaskCollator, VideoMaskCollator
from jepa_zoo.masks.strategies import block_masks, random_masks, rasterized_masks


def membership(idx: torch.Tensor, n: int) -> torch.Tensor:
    """``[B, K]`` indices -> ``[B, n]`` boolean membership."""
    return torch.zeros(idx.shape[0], n, dtype=torch.bool).scatter_(1, idx, True)


def check_basic(ctx, tgt, n, batch):
    assert ctx.dtype == torch.long and tgt.dtype == torch.long
    assert ctx.shape[0] == batch and tgt.shape[0] == batch
    assert (ctx.diff(dim=1) > 0).all() and (tgt.diff(dim=2) > 0).all()  # sorted, unique
    assert int(ctx.max()) < n and int(tgt.max()) < n
    assert not membership(ctx, n).gather(1, tgt.flatten(1)).any()  # disjoint


@pytest.mark.parametrize("grid", [8, 14])
def test_rasterized_is_one_quadrant_and_its_complement(grid):
    g = torch.Generator().manual_seed(0)
    n, half = grid * grid, grid // 2
    ctx, tgt = rasterized_masks(64, grid, generator=g)
    check_basic(ctx, tgt, n, 64)
    assert ctx.shape[1] == n // 4 and tgt.shape == (64, 1, 3 * n // 4)
    seen = set()
    for row in ctx:
        r, c = row // grid, row % grid
        q = (int(r[0]) >= half, int(c[0]) >= half)
        assert ((r >= half) == q[0]).all() and ((c >= half) == q[1]).all()  # all in one quadrant
        seen.add(q)
    assert len(seen) == 4  # every quadrant serves as context
    assert (membership(ctx, n) | membership(tgt[:, 0], n)).all()  # together they cover the grid


def test_rasterized_odd_grid_is_rectangular():
    ctx, tgt = rasterized_masks(32, 7, generator=torch.Generator().manual_seed(1))
    check_basic(ctx, tgt, 49, 32)
    assert ctx.shape[1] == 9  # the smallest quadrant (3x3) sets the context length


@pytest.mark.parametrize("grid", [8, 14])
def test_block_target_is_a_rectangle_and_context_its_complement(grid):
    g = torch.Generator().manual_seed(0)
    n = grid * grid
    ctx, tgt = block_masks(32, grid, generator=g, target_scale=(0.6, 0.6))
    check_basic(ctx, tgt, n, 32)
    k = tgt.shape[2]
    assert abs(k / n - 0.6) < 1.5 * grid / n  # rounding to whole rows/columns
    assert ctx.shape[1] == n - k
    for row in tgt[:, 0]:
        r, c = row // grid, row % grid
        assert (int(r.max()) - int(r.min()) + 1) * (int(c.max()) - int(c.min()) + 1) == k  # a full rectangle


def test_block_with_several_targets_keeps_the_context_outside_all():
    ctx, tgt = block_masks(16, 14, generator=torch.Generator().manual_seed(3), num_targets=3,
                           target_scale=(0.1, 0.2))
    check_basic(ctx, tgt, 196, 16)
    assert tgt.shape[1] == 3


def test_random_target_fraction_and_spread():
    g = torch.Generator().manual_seed(0)
    ctx, tgt = random_masks(256, 14, generator=g, target_scale=(0.6, 0.6))
    check_basic(ctx, tgt, 196, 256)
    assert tgt.shape == (256, 1, 118) and ctx.shape == (256, 78)
    freq = membership(tgt[:, 0], 196).float().mean(0)
    assert 0.45 < float(freq.min()) and float(freq.max()) < 0.75  # every patch about 60 % of the time


def test_deterministic_given_seed():
    for fn in (rasterized_masks, block_masks, random_masks):
        a = fn(8, 14, generator=torch.Generator().manual_seed(5))
        b = fn(8, 14, generator=torch.Generator().manual_seed(5))
        c = fn(8, 14, generator=torch.Generator().manual_seed(6))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="target_scale"):
        random_masks(4, 8, target_scale=(0.5, 1.0))
    with pytest.raises(ValueError, match="target_scale"):
        block_masks(4, 8, target_scale=(0.7, 0.6))
    with pytest.raises(ValueError, match="batch_size"):
        rasterized_masks(0, 8)
    with pytest.raises(ValueError, match="2x2"):
        rasterized_masks(4, 1)


@pytest.mark.parametrize("name", ["rasterized", "block", "random"])
def test_collator_draws_the_named_strategy(name):
    m = masking_config(name, **({} if name == "rasterized" else {"target_scale": [0.6, 0.6]}))
    samples = [(torch.zeros(3, 32, 32), i) for i in range(6)]
    torch.manual_seed(0)
    images, ctx, tgt, labels = MaskCollator((8, 8), m)(samples)
    assert images.shape == (6, 3, 32, 32) and labels.tolist() == list(range(6))
    check_basic(ctx, tgt, 64, 6)
    assert tgt.shape[1] == 1
    assert ctx.shape[1] + tgt.shape[2] == 64  # complement: nothing dropped on an 8x8 grid
    if name == "rasterized":
        assert ctx.shape[1] == 16


@pytest.mark.parametrize("masking, key", [
    ({"name": "random", "num_targets": 4}, "masking.num_targets"),  # one target: the key is not in its schema
    ({"name": "block", "num_targets": 4}, "masking.num_targets"),  # 4 blocks of 60 % can cover the grid
    ({"name": "multiblock", "mask_types": []}, "masking.mask_types"),  # another masking's key
    ({"name": "block", "target_scale": [0.6]}, "masking.target_scale"),
    ({"name": "block", "target_scale": [0.5, 1.0]}, "masking.target_scale"),
    ({"name": "grid"}, "masking.name"),
])
def test_config_rejects_what_a_strategy_cannot_do(compose_cfg, masking, key):
    from omegaconf import OmegaConf

    from jepa_zoo.config import validate

    cfg = OmegaConf.to_container(compose_cfg("method=ijepa", "data=fake"))
    cfg["masking"] = masking
    with pytest.raises(ConfigError, match=key):
        validate(OmegaConf.create(cfg))


def test_each_masking_has_its_schema_and_the_collators_refuse_the_others():
    with pytest.raises(ConfigError, match="has its own schema"):
        MaskingConfig(name="multiblock")  # the base holds none of multiblock's keys
    with pytest.raises(ValueError, match="no patch masks"):
        MaskCollator((8, 8), masking_config("none"))
    with pytest.raises(ValueError, match="no clip masks"):
        VideoMaskCollator((2, 4, 4), masking_config("multiblock"))


def test_a_checkpoint_from_the_one_schema_days_loads(compose_cfg):
    """Configs saved when every masking shared one schema hold keys the masking never read: dropped on load."""
    import dataclasses

    from jepa_zoo.config import validate, validate_saved

    saved = dataclasses.asdict(validate(compose_cfg("method=ijepa", "data=fake", "masking=block")))
    saved["masking"].update(num_targets=1, context_scale=[0.85, 1.0], min_keep=10)  # "unused" then
    tc = validate_saved(saved)
    assert tc.masking.name == "block" and tc.masking.target_scale == [0.6, 0.6]
    assert not hasattr(tc.masking, "min_keep")
