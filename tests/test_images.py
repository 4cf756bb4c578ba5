"""Image panels (masks, IWM pairs, retrievals) and the ImageLogger callback."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
import torch

from jepa_zoo.data.actions import ACTION_DIM
from jepa_zoo.evaluation.visual import (
    ACTION_NAMES, DIM, LINE, PAD, TINT_ALPHA, block_colors, mask_overlay, mask_panel, nearest, pair_panel,
    pairs_panel, retrieval_panel, retrievals_panel, titled, to_uint8,
)

from conftest import REPO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# one epoch of fake data (64 images / batch 16, 4 steps), so one validation runs, at step 4
FAST = ["data=fake", "+backbone.kwargs.depth=2", "trainer.max_steps=4", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1"]


def train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "jepa_zoo.train", f"hydra.run.dir={tmp_path}", *overrides],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def images_k255(*shape: int, seed: int = 0) -> torch.Tensor:
    """Float images whose values are exact uint8 levels (k / 255)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g).float() / 255


def tile(grid_img: torch.Tensor, row: int, col: int, h: int, w: int) -> torch.Tensor:
    """The (row, col) image of a make_grid result (padding PAD)."""
    y, x = PAD + row * (h + PAD), PAD + col * (w + PAD)
    return grid_img[:, y:y + h, x:x + w]


def test_mask_overlay_tints_exactly_the_target_patches():
    grid, patch, b = (4, 4), 3, 2
    h = w = 4 * patch
    imgs = images_k255(b, 3, h, w)
    ctx = torch.tensor([[0, 1, 2, 4], [8, 9, 12, 13]])
    tgt = torch.tensor([[[5, 6], [10, 11]], [[2, 3], [6, 7]]])  # two blocks per image, not overlapping
    out = mask_overlay(imgs, ctx, tgt, grid, patch)
    assert out.dtype == torch.uint8 and out.shape == (3, PAD + b * (h + PAD), PAD + 2 * (w + PAD))
    colors = torch.tensor(block_colors(2), dtype=torch.float32)
    assert not torch.equal(colors[0], colors[1])
    orig = to_uint8(imgs)
    for i in range(b):
        assert torch.equal(tile(out, i, 0, h, w), orig[i])  # the image itself, untouched
        over = tile(out, i, 1, h, w)
        for p in range(16):
            r, c = divmod(p, 4)
            sl = (slice(None), slice(r * patch, (r + 1) * patch), slice(c * patch, (c + 1) * patch))
            got, src = over[sl].float(), orig[i][sl].float()
            blocks = [t for t in range(2) if p in tgt[i, t].tolist()]
            if blocks:
                want = src * (1 - TINT_ALPHA) + colors[blocks[0]].view(3, 1, 1) * TINT_ALPHA
            elif p in ctx[i].tolist():
                want = src
            else:
                want = src * DIM
            assert (got - want).abs().max() <= 1, (i, p, blocks)
    # a target patch differs from its source pixels; a context patch equals them
    assert not torch.equal(tile(out, 0, 1, h, w)[:, patch:2 * patch, patch:2 * patch], orig[0][:, patch:2 * patch,
                                                                                                patch:2 * patch])


def test_mask_overlay_rejects_a_wrong_grid():
    with pytest.raises(ValueError, match="grid"):
        mask_overlay(torch.rand(1, 3, 16, 16), torch.tensor([[0]]), torch.tensor([[[1]]]), 4, 3)


def test_pair_panel_shows_both_views_and_writes_the_action():
    assert len(ACTION_NAMES) == ACTION_DIM
    b, h = 3, 32
    src, tgt = images_k255(b, 3, h, h, seed=1), images_k255(b, 3, h, h, seed=2)
    action = torch.zeros(b, ACTION_DIM)
    out = pair_panel(src, tgt, action)
    assert out.dtype == torch.uint8 and out.shape[0] == 3
    row_h = (out.shape[1] - PAD) // b - PAD
    assert out.shape[1] == PAD + b * (row_h + PAD)
    scale = row_h // h
    assert scale >= 1 and row_h >= h * scale
    up = torch.nn.functional.interpolate(to_uint8(src), scale_factor=scale, mode="nearest")
    up_t = torch.nn.functional.interpolate(to_uint8(tgt), scale_factor=scale, mode="nearest")
    s = h * scale
    for i in range(b):
        y = PAD + i * (row_h + PAD)
        assert torch.equal(out[:, y:y + s, PAD:PAD + s], up[i])
        assert torch.equal(out[:, y:y + s, 2 * PAD + s:2 * PAD + 2 * s], up_t[i])
    text = out[:, :, 2 * PAD + 2 * s:]
    assert text.float().mean() > 1  # there is writing beside the pairs
    other = pair_panel(src, tgt, action + torch.eye(ACTION_DIM)[:b])
    assert not torch.equal(other[:, :, 2 * PAD + 2 * s:], text)  # ... and it is the action's values
    with pytest.raises(ValueError, match="action"):
        pair_panel(src, tgt, torch.zeros(b, 3))


def test_retrieval_returns_the_exact_duplicate_first():
    q_imgs, bank_imgs = images_k255(3, 3, 8, 8, seed=3), images_k255(10, 3, 8, 8, seed=4)
    bank_imgs[7] = q_imgs[0]  # the query's exact duplicate
    g = torch.Generator().manual_seed(5)
    q_feats, bank_feats = torch.randn(3, 16, generator=g), torch.randn(10, 16, generator=g)
    bank_feats[7] = q_feats[0] * 3.0  # same direction: cosine similarity 1
    idx = nearest(q_feats, bank_feats, k=4)
    assert idx.shape == (3, 4) and idx[0, 0] == 7
    out = retrieval_panel(q_imgs, bank_imgs, q_feats, bank_feats, k=4)
    assert out.dtype == torch.uint8 and out.shape == (3, PAD + 3 * (8 + PAD), PAD + 5 * (8 + PAD))
    assert torch.equal(tile(out, 0, 0, 8, 8), to_uint8(q_imgs[0]))
    assert torch.equal(tile(out, 0, 1, 8, 8), to_uint8(q_imgs[0]))  # first neighbour: the duplicate
    assert not torch.equal(tile(out, 1, 1, 8, 8), to_uint8(q_imgs[1]))


def test_retrieval_in_its_own_set_leaves_the_query_out():
    feats = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    idx = nearest(feats, feats, k=10, self_index=torch.arange(6))
    assert idx.shape == (6, 5)  # k capped at the other images
    for q in range(6):
        assert q not in idx[q].tolist() and len(set(idx[q].tolist())) == 5
    sim = torch.nn.functional.normalize(feats, dim=1) @ torch.nn.functional.normalize(feats, dim=1).T
    sim.fill_diagonal_(-2)
    assert torch.equal(idx[:, 0], sim.argmax(1))


def test_send_reaches_wandb_tensorboard_and_a_png(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

    from jepa_zoo.callbacks.images import ImageLogger

    wb, tb, csv = MagicMock(spec=WandbLogger), MagicMock(spec=TensorBoardLogger), MagicMock(spec=CSVLogger)
    trainer = SimpleNamespace(loggers=[wb, tb, csv], global_step=7, default_root_dir=str(tmp_path))
    image = torch.randint(0, 256, (3, 10, 12), dtype=torch.uint8)
    path = ImageLogger.send(trainer, "masks", image)
    assert path == tmp_path / "images" / "masks_step7.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    wb.log_image.assert_called_once()
    kw = wb.log_image.call_args.kwargs
    assert kw["key"] == "images/masks" and kw["step"] == 7
    (hwc,) = kw["images"]
    assert hwc.shape == (10, 12, 3) and (hwc == image.permute(1, 2, 0).numpy()).all()
    tb.experiment.add_image.assert_called_once()
    tag, img, step = tb.experiment.add_image.call_args.args
    assert tag == "images/masks" and torch.equal(img, image) and step == 7


MASKED = [*FAST, "method.pred_depth=1"]


def pngs(run_dir: Path) -> dict:
    files = {p.name.split("_step")[0]: p for p in (run_dir / "images").glob("*.png")}
    for p in files.values():
        assert p.read_bytes()[:8] == PNG_SIGNATURE, p
    return files


@pytest.mark.integration
def test_ijepa_run_saves_mask_and_retrieval_pngs(tmp_path):
    r = train(tmp_path, "method=ijepa", *MASKED)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    files = pngs(tmp_path)
    assert set(files) == {"masks", "retrievals"}, files
    assert all(p.name.endswith("_step4.png") for p in files.values())


@pytest.mark.integration
def test_iwm_run_with_tensorboard_logs_images(tmp_path):
    r = train(tmp_path, "method=iwm", *MASKED, "method.mrr.enabled=false", "logger=tensorboard")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert set(pngs(tmp_path)) == {"masks", "pairs", "retrievals"}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (tmp_path / "tb").glob("events.out.tfevents*")
    acc = EventAccumulator(str(events), size_guidance={"images": 0})
    acc.Reload()
    tags = set(acc.Tags()["images"])
    assert {"images/masks", "images/pairs", "images/retrievals"} <= tags, tags
    assert acc.Images("images/pairs")[0].step == 4
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").is_file()  # kept beside TensorBoard: reports read it


@pytest.mark.integration
def test_lejepa_run_saves_retrievals_only(tmp_path):
    r = train(tmp_path, *FAST, "backbone.patch_size=8", "method.proj_hidden_dim=64", "method.num_slices=32",
              "method.views.num_local=2", "images.num_images=3")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    files = pngs(tmp_path)
    assert set(files) == {"retrievals"}, files
    from PIL import Image

    with Image.open(files["retrievals"]) as im:  # title and headers, 3 query rows of 32 px images drawn at 128 px
        assert im.size[1] == 2 * LINE + 4 + PAD + 3 * (128 + PAD + LINE)


def test_images_config_is_validated_and_can_be_turned_off(compose_cfg):
    from jepa_zoo.config import ConfigError, validate

    assert validate(compose_cfg("data=fake")).images.enabled
    assert not validate(compose_cfg("data=fake", "images.enabled=false")).images.enabled
    with pytest.raises(ConfigError, match="images.num_images"):
        validate(compose_cfg("data=fake", "images.num_images=0"))
    with pytest.raises(ConfigError, match="images.every_n_epochs"):
        validate(compose_cfg("data=fake", "images.every_n_epochs=0"))


def test_titled_keeps_the_image_below_its_band():
    image = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
    out = titled(image, "a title", [(2, "col")], [((255, 0, 0), "red")])
    band = 3 * LINE + 4
    assert torch.equal(out[:, band:, :30], image) and out[:, :band].float().mean() > 1
    assert (out[:, :band] == torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1)).all(0).any()  # swatch
    assert torch.equal(titled(image, "t")[:, LINE + 4:, :30], image)


def test_annotated_panels_keep_their_grids_and_say_what_they_show():
    imgs = images_k255(2, 3, 16, 16)
    ctx, tgt = torch.tensor([[0, 1], [2, 3]]), torch.tensor([[[5], [6]], [[7], [8]]])
    raw = mask_overlay(imgs, ctx, tgt, 4, 4)
    panel = mask_panel(imgs, ctx, tgt, 4, 4, step=3)
    assert torch.equal(panel[:, -raw.shape[1]:, :raw.shape[2]], raw)
    action = torch.zeros(2, ACTION_DIM)
    raw = pair_panel(imgs, imgs, action)
    assert torch.equal(pairs_panel(imgs, imgs, action)[:, -raw.shape[1]:, :raw.shape[2]], raw)
    on = pair_panel(imgs, imgs, action + torch.eye(ACTION_DIM)[ACTION_NAMES.index("blur")])
    assert not torch.equal(on, raw)  # the blur flag reads "on" instead of "off"
    feats = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    bank = images_k255(6, 3, 16, 16, seed=1)
    same = retrievals_panel(bank[:2], bank, feats[:2], feats, 2, torch.arange(2), torch.zeros(6).long()[:2],
                            torch.zeros(6).long(), ["cat", "dog"])
    other = retrievals_panel(bank[:2], bank, feats[:2], feats, 2, torch.arange(2), torch.zeros(6).long()[:2],
                             torch.ones(6).long(), ["cat", "dog"])
    assert same.shape == other.shape and not torch.equal(same, other)  # captions: class and match colour
    y = 2 * LINE + 4 + PAD + 16  # the caption line under the first row, right of the query column
    cap_same, cap_other = same[:, y:y + LINE, PAD + 16:].int(), other[:, y:y + LINE, PAD + 16:].int()
    green = lambda c: ((c[1] > 150) & (c[0] < 150)).any()  # noqa: E731
    red = lambda c: ((c[0] > 200) & (c[1] < 150)).any()  # noqa: E731
    assert green(cap_same) and not red(cap_same) and red(cap_other) and not green(cap_other)
