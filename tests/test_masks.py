import pytest
import torch

from jepa_zoo.masks.multiblock import block_size, sample_masks


def draw(n_batches: int, grid, seed=0, batch=32, **kw):
    g = torch.Generator().manual_seed(seed)
    return [sample_masks(batch, grid, generator=g, **kw) for _ in range(n_batches)]


@pytest.mark.parametrize("grid", [8, 14, 16, (12, 20)])
def test_shapes_and_no_overlap(grid):
    H, W = (grid, grid) if isinstance(grid, int) else grid
    for ctx, tgt in draw(20, grid):
        assert ctx.dtype == torch.long and tgt.dtype == torch.long
        assert ctx.shape[0] == 32 and tgt.shape[:2] == (32, 4)
        assert int(ctx.max()) < H * W and int(tgt.max()) < H * W
        member = torch.zeros(32, H * W, dtype=torch.bool)
        member.scatter_(1, ctx, True)
        assert not member.gather(1, tgt.flatten(1)).any()  # context never overlaps a target
        assert (ctx.diff(dim=1) > 0).all()  # sorted, no duplicates
        assert (tgt.diff(dim=2) > 0).all()


def test_target_sizes_within_scale():
    for ctx, tgt in draw(100, 14):
        frac = tgt.shape[2] / 196
        # rounding a block to whole patches moves its area by at most half a row/column
        assert 0.15 - 7 / 196 <= frac <= 0.2 + 7 / 196
        assert ctx.shape[1] >= 10


def test_last_row_and_column_reachable():
    cover = torch.zeros(14 * 14)
    for _, tgt in draw(50, 14):
        cover.index_add_(0, tgt.flatten(), torch.ones(tgt.numel()))
    cover = cover.view(14, 14)
    assert cover[-1].sum() > 0 and cover[:, -1].sum() > 0 and cover[-1, -1] > 0


def test_small_cifar_grid_terminates_with_min_keep():
    for ctx, tgt in draw(200, 8, batch=64):
        assert ctx.shape[1] >= 10


def test_scale_and_aspect_are_independent():
    # with a coupled draw, the area would be a function of the aspect ratio
    g = torch.Generator().manual_seed(0)
    shapes = {tuple(sample_masks(1, 32, generator=g)[1].shape[2:]) for _ in range(200)}
    assert len(shapes) > 10
    assert block_size(0.2, 1.0, (8, 8)) == (4, 3)
    assert block_size(1.0, 1.0, (8, 8)) == (8, 8)


def test_deterministic_given_seed():
    a, b, c = draw(3, 14, seed=5), draw(3, 14, seed=5), draw(3, 14, seed=6)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(torch.equal(x[1], y[1]) for x, y in zip(a, c))


def test_bad_arguments():
    with pytest.raises(ValueError, match="target_scale"):
        sample_masks(2, 8, target_scale=(0.3, 0.2))
    with pytest.raises(ValueError, match="batch_size"):
        sample_masks(0, 8)


def test_the_context_is_one_block_minus_the_targets():
    """The context is drawn inside one block of ``context_scale`` (its patches fit that block's height and
    width), not anywhere the targets leave: a mutation that picks free patches at random fails here."""
    gen = torch.Generator().manual_seed(0)
    grid = (14, 14)
    ctx, _ = sample_masks(64, grid, generator=gen, num_targets=1, target_scale=(0.05, 0.05),
                          context_scale=(0.3, 0.3), min_keep=4)
    ch, cw = block_size(0.3, 1.0, grid)
    rows, cols = ctx // grid[1], ctx % grid[1]
    assert ((rows.max(1).values - rows.min(1).values) < ch).all()
    assert ((cols.max(1).values - cols.min(1).values) < cw).all()
