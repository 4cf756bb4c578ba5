"""Video: 3-D multi-block masks, clip sampling and decoding of real MP4 clips (corrupt and
truncated files included), clip transforms, the synthetic moving shapes, and V-JEPA / V-JEPA 2
through the entry points."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, shared_data_dir
from test_train_entry import read_metrics, train

from jepa_zoo.data.datasets import DataError, SkipUnreadable, resolve_root
from jepa_zoo.data.moving_shapes import MovingShapes
from jepa_zoo.data.video import VideoClips, clip_indices
from jepa_zoo.data.video_views import video_eval_transform, video_train_transform
from jepa_zoo.masks.collator import VideoMaskCollator
from jepa_zoo.masks.multiblock3d import VJEPA_MASKS, block_size_3d, sample_mask_types, sample_masks_3d
from jepa_zoo.masks.schema import masking_config

GRID = (4, 6, 6)


@pytest.fixture(scope="module")
def weizmann():
    root = shared_data_dir()
    if root is None:
        pytest.skip("shared data not found (set JEPA_ZOO_DATA)")
    return resolve_root(str(root / "weizmann-actions-mp4.tar"))


# -- masks ---------------------------------------------------------------------------------------
def test_3d_masks_are_disjoint_sorted_and_the_papers_sizes():
    g = torch.Generator().manual_seed(0)
    n = GRID[0] * GRID[1] * GRID[2]
    for ctx, tgt in sample_mask_types(32, GRID, VJEPA_MASKS, generator=g):
        assert ctx.dtype == tgt.dtype == torch.long and ctx.shape[0] == tgt.shape[0] == 32
        for c, t in zip(ctx, tgt):
            assert not set(c.tolist()) & set(t.tolist())  # context and targets never overlap
            assert torch.equal(c, c.sort().values) and torch.equal(t, t.sort().values)
            assert len(set(c.tolist())) == len(c) and 0 <= c.min() and c.max() < n
    # temporal scale 1: each block spans every frame, so each frame's targets are the same tokens
    _, tgt = sample_masks_3d(16, GRID, generator=g, num_blocks=1, spatial_scale=(0.3, 0.3))
    per_frame = GRID[1] * GRID[2]
    for t in tgt:
        frames = [set((t[(t // per_frame) == f] % per_frame).tolist()) for f in range(GRID[0])]
        assert all(f == frames[0] for f in frames) and 6 <= len(frames[0]) <= 16  # ~int(36 * 0.3) = 10 tokens
    assert block_size_3d(0.15, 1.0, 1.0, (8, 14, 14)) == (8, 5, 5)  # int(196 * .15) = 29 -> round(√29) = 5
    assert block_size_3d(0.7, 0.5, 1.0, (8, 14, 14)) == (4, 12, 12)  # 137 tokens: round(√137) = 12; half the frames
    assert block_size_3d(0.7, 1.0, 1.5, (8, 14, 14)) == (8, 14, 10)  # √205.5 = 14.3, √91.3 = 9.6


def test_3d_masks_reproducible_and_redraw_full_cover():
    a = sample_mask_types(8, GRID, VJEPA_MASKS, generator=torch.Generator().manual_seed(3))
    b = sample_mask_types(8, GRID, VJEPA_MASKS, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for pa, pb in zip(a, b) for x, y in zip(pa, pb))
    with pytest.raises(ValueError, match="keep covering the whole"):
        sample_masks_3d(4, GRID, num_blocks=2, spatial_scale=(1.0, 1.0), aspect=(1.0, 1.0))  # the whole frame


def test_video_collator_draws_the_global_batch_and_keeps_its_rows():
    m = masking_config("multiblock3d")
    samples = [(torch.zeros(3, 8, 8, 8), i) for i in range(4)]
    torch.manual_seed(1)
    whole = VideoMaskCollator(GRID, m)(samples * 2)
    torch.manual_seed(1)
    part = VideoMaskCollator(GRID, m)(samples, shard=(1, 2))
    assert len(part.ctx) == len(part.tgt) == 2  # one pair per mask type
    for j in range(2):
        assert torch.equal(part.ctx[j], whole.ctx[j][1::2]) and torch.equal(part.tgt[j], whole.tgt[j][1::2])


# -- clips ---------------------------------------------------------------------------------------
def test_clip_indices():
    torch.manual_seed(0)
    idx, short = clip_indices(100, 8, 4, train=True)
    assert not short and idx.shape == (1, 8) and torch.equal(idx[0] - idx[0, 0], torch.arange(8) * 4)
    assert 0 <= idx.min() and idx.max() < 100
    idx, _ = clip_indices(100, 8, 4, clips=3, train=False)  # the centres of 3 segments of the 0..71 starts
    assert idx[:, 0].tolist() == [12, 36, 59]
    assert clip_indices(100, 8, 4, clips=1, train=False)[0][0, 0] == 36  # one clip: the middle
    idx, short = clip_indices(10, 8, 4, short="pad")  # 0, 4, 8 then the last frame again
    assert short and idx[0].tolist() == [0, 4, 8, 8, 8, 8, 8, 8]
    assert clip_indices(10, 8, 4, short="loop")[0][0].tolist() == [0, 4, 8, 0, 4, 8, 0, 4]


@pytest.mark.integration
def test_real_clips_decode_with_labels_and_multi_clip(weizmann):
    ds = VideoClips(weizmann, num_frames=8, frame_step=2)
    assert len(ds) == 72 and ds.classes == ["class_0", "class_1", "class_3", "class_4"]
    assert sorted(set(ds.targets)) == [0, 1, 2, 3] and ds.targets.count(0) == 18
    clip, label = ds[40]
    assert clip.shape == (8, 3, 64, 64) and clip.dtype == torch.uint8 and label == ds.targets[40]
    assert clip.float().std() > 10  # real pixels, not a blank frame
    multi = VideoClips(weizmann, num_frames=8, frame_step=2, clips=3, train=False)
    clips, _ = multi[40]
    assert clips.shape == (3, 8, 3, 64, 64) and not torch.equal(clips[0], clips[2])
    fps = VideoClips(weizmann, num_frames=4, fps=4)  # the official step: ceil(rate) // fps
    assert (fps.step_for(25.0), fps.step_for(29.97), fps.step_for(15.0)) == (6, 7, 3)


@pytest.mark.integration
def test_corrupt_and_truncated_files_are_skipped_and_counted(weizmann, tmp_path, caplog):
    root = tmp_path / "clips"
    shutil.copytree(weizmann / "class_0", root / "a")
    shutil.copytree(weizmann / "class_1", root / "b")
    (root / "a" / "0000garbage.mp4").write_bytes(b"\x00not a video" * 100)
    good = sorted((root / "b").glob("*.mp4"))[0]
    data = good.read_bytes()
    (root / "b" / "0000cut.mp4").write_bytes(data[: len(data) // 3])  # truncated: its index (at the end) is gone
    faststart = root / "b" / "0000faststart.mp4"  # the index first: it lists 60 frames, 20 remain after the cut
    write_mp4(faststart, 60)
    faststart.write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    ds = SkipUnreadable(VideoClips(root, num_frames=8, frame_step=2), "skip")
    torch.manual_seed(0)  # the clip starts (a start within the 20 frames left of the faststart file would read)
    clips = [ds[i][0] for i in range(len(ds))]  # a whole pass: never a crash
    assert all(c.shape == (8, 3, 64, 64) for c in clips)
    messages = [r.getMessage() for r in caplog.records if "skipped unreadable video" in r.getMessage()]
    assert ds.skipped == 4 and len(messages) == 3, messages  # 0000cut's stand-in is 0000faststart: read twice
    assert any("garbage" in m for m in messages) and any("0000cut" in m for m in messages)
    assert any("0000faststart" in m and "truncated: the container lists 60 frames, 20 decode" in m for m in messages)
    strict = SkipUnreadable(VideoClips(root, num_frames=8, frame_step=2), "fail")
    bad = [p.name for p in strict.ds.files].index("0000garbage.mp4")
    with pytest.raises(DataError, match="unreadable video .*0000garbage.mp4"):
        strict[bad]


def write_mp4(path, frames: int) -> None:
    """An MPEG-4 file of ``frames`` grey frames with its index first (faststart)."""
    import av
    import numpy as np

    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            for packet in s.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 4 * i, np.uint8), format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


@pytest.mark.integration
def test_short_videos_are_padded_with_a_counted_warning(weizmann):
    ds = VideoClips(weizmann, num_frames=16, frame_step=8)  # 121 frames: longer than every clip
    with pytest.warns(UserWarning, match=r"shorter than a 16-frame clip .* repeated \(1 short videos"):
        clip, _ = ds[0]
    assert clip.shape[0] == 16 and torch.equal(clip[-1], clip[-2])
    assert ds.num_short == 1


def test_no_videos_and_an_empty_folder_are_one_line(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("no video")
    with pytest.raises(DataError, match="no videos .* found under"):
        VideoClips(tmp_path, num_frames=4)


def test_one_crop_and_flip_for_every_frame():
    frame = torch.randint(0, 255, (3, 40, 48), dtype=torch.uint8)
    clip = frame.expand(6, -1, -1, -1).clone()  # the same frame six times
    torch.manual_seed(0)
    out = video_train_transform(16, (0.2, 0.5), (0.75, 1.35), 0.5, [0.5] * 3, [0.25] * 3)(clip)
    assert out.shape == (3, 6, 16, 16)  # [C, T, H, W]
    assert all(torch.equal(out[:, 0], out[:, t]) for t in range(6))  # one crop and flip for the clip
    ev = video_eval_transform(16, 1.0, [0.5] * 3, [0.25] * 3)(clip.expand(2, -1, -1, -1, -1))
    assert ev.shape == (2, 3, 6, 16, 16)


def test_moving_shapes_move_as_their_labels_say():
    ds = MovingShapes(8, num_frames=6, img_size=32, seed=0)
    assert [ds[i][1] for i in range(4)] == [0, 1, 2, 3] == ds.targets[:4]
    assert torch.equal(ds.clip(5), ds.clip(5))  # the same clip every time
    for i in range(4):
        clip = ds.clip(i).float().mean(1)  # [T, H, W]
        mask = clip > clip.mean() + 40
        rows = [torch.nonzero(m)[:, 0].float().mean() for m in mask]
        cols = [torch.nonzero(m)[:, 1].float().mean() for m in mask]
        moved = (abs(rows[-1] - rows[0]) > 2, abs(cols[-1] - cols[0]) > 2)
        assert moved == {0: (False, False), 1: (False, True), 2: (True, False), 3: (True, True)}[i]


# -- methods through the entry points ------------------------------------------------------------------
VIDEO_FAST = ["data=moving_shapes", "data.fake_size=32", "+backbone.kwargs.depth=2", "method.pred_depth=1",
              "trainer.max_steps=3", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false"]


@pytest.mark.integration
@pytest.mark.parametrize("method", ["vjepa", "vjepa2"])
def test_vjepa_trains_through_the_entry_point_and_evaluates(tmp_path, method):
    r = train(tmp_path, f"method={method}", *VIDEO_FAST)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    rows = read_metrics(tmp_path)
    keys = set().union(*rows)
    for k in ("train/loss", "train/target_std", "train/pred_cos", "train/ema_momentum", "probe/val_acc"):
        assert k in keys, k
    saved = (tmp_path / "checkpoints" / "config.yaml").read_text()
    assert ("pos: rope" in saved) == (method == "vjepa2") and "multiblock3d" in saved
    ev = subprocess.run([sys.executable, "-m", "jepa_zoo.eval", f"ckpt={tmp_path}/checkpoints/last.ckpt",
                         "protocol=knn", "folds=2", f"hydra.run.dir={tmp_path / 'ev'}"],
                        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert ev.returncode == 0, ev.stderr[-2000:]
    record = json.loads(ev.stdout.strip().splitlines()[-1])
    assert record["folds"] == 2 and record["queries"] == 32 and len(record["per_fold"]) == 2
    assert Path(record["file"]) == tmp_path / "checkpoints" / "eval_knn_cv2_trained.json" and record["rankme"] > 0
    if method == "vjepa2":
        check_hf_export(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "hf")


def check_hf_export(ckpt, out):
    """``export --format hf`` of a V-JEPA 2 run: ``VJEPA2Model.from_pretrained`` gives the run's
    target-encoder tokens and its predictor's output (HF's predictor uses mask token 1)."""
    transformers = pytest.importorskip("transformers")
    from jepa_zoo.export import main
    from jepa_zoo.pretrained import load_any

    assert main([str(ckpt), "--format", "hf", "--out", str(out)]) == 0
    hf = transformers.VJEPA2Model.from_pretrained(str(out)).eval()
    model = load_any(ckpt, "ckpt").model.eval()
    x = torch.randn(2, 3, 8, 32, 32)
    ctx, tgt = torch.arange(0, 64, 2).expand(2, -1), torch.arange(1, 64, 2).expand(2, -1)
    with torch.no_grad():
        out_hf = hf(x.transpose(1, 2), context_mask=[ctx], target_mask=[tgt])
        tokens = model.eval_encoder.forward_tokens(x)
        torch.testing.assert_close(out_hf.last_hidden_state, tokens, atol=1e-5, rtol=0)
        mine = model.predictor(tokens[:, ::2], ctx, tgt, mask_index=1)
        torch.testing.assert_close(out_hf.predictor_output.last_hidden_state, mine, atol=1e-5, rtol=0)
    assert main([str(ckpt), "--out", str(out.parent / "x.safetensors")]) == 2  # timm: image encoders only


@pytest.mark.integration
def test_video_method_on_image_data_is_one_line(tmp_path):
    r = train(tmp_path, "method=vjepa", "data=fake")
    assert r.returncode == 2
    err = [ln for ln in (r.stdout + r.stderr).splitlines() if "ConfigError" in ln]
    assert len(err) == 1 and "needs video" in err[0] and "data=video_folder" in err[0], (r.stdout + r.stderr)[-2000:]


def test_one_mask_token_for_every_type_leaves_the_others_out_of_training(compose_cfg):
    """``mask_token_per_type=false`` (the official V-JEPA 2 behaviour): token 0 serves every mask type;
    the others keep their loaded values and get no gradient, so DDP finds no unused parameter."""
    from jepa_zoo.config import validate
    from jepa_zoo.methods import build_model

    tc = validate(compose_cfg("method=vjepa2", "data=moving_shapes", "+backbone.kwargs.depth=1", "method.pred_depth=1",
                              "method.mask_token_per_type=false"))
    model = build_model(tc)
    tokens = list(model.predictor.mask_tokens)
    assert len(tokens) == 2 and tokens[0].requires_grad and not tokens[1].requires_grad
    batch = VideoMaskCollator(model.backbone.grid_size, tc.masking)([(torch.randn(3, 8, 32, 32), 0)] * 4)
    model.step(batch).loss.backward()
    assert tokens[0].grad is not None and tokens[1].grad is None


@pytest.mark.integration
def test_cross_validation_keeps_mirrored_twins_in_one_fold(weizmann):
    """The Weizmann set holds each of 36 videos twice, once mirrored (files 2k and 2k+1): the folds
    group them, so a clip is never tested against its own mirror image; without the groups most
    twins would land in different folds (the mutation)."""
    from jepa_zoo.data.schema import DataConfig
    from jepa_zoo.evaluation.eval_data import build_sets, cv_folds, duplicate_groups

    data = DataConfig(name="video_folder", root=str(weizmann), img_size=64, num_frames=8, frame_step=2,
                      eval_crop_ratio=1.0)
    _, sets = build_sets(data, 0, folds=4)
    pool = list(range(len(sets.train)))
    groups = duplicate_groups(sets.train, pool)
    number = [int(p.stem) for p, _ in sets.train.ds.samples]
    assert len(set(groups.values())) == 36
    assert all(number[i] // 2 == number[groups[i]] // 2 for i in pool)
    twin = {i: next(j for j in pool if j != i and number[j] // 2 == number[i] // 2) for i in pool}
    fold_of = {i: k for k, f in enumerate(cv_folds(sets.labels, pool, 4, 2, groups)) for i in f}
    assert all(fold_of[i] == fold_of[twin[i]] for i in pool)
    plain = {i: k for k, f in enumerate(cv_folds(sets.labels, pool, 4, 2)) for i in f}
    assert sum(plain[i] != plain[twin[i]] for i in pool) > 36


@pytest.mark.parametrize("pos", ["sincos", "rope"])
def test_the_video_encoder_takes_images_and_several_clips(pos):
    """An image is its frame repeated over the clip (as the official evaluations feed images); several
    clips per video give each clip's tokens one after the other."""
    from jepa_zoo.config import BackboneConfig
    from jepa_zoo.models.backbones import build_backbone

    torch.manual_seed(0)
    enc = build_backbone(BackboneConfig(name="vit_tiny_patch16_224", img_size=32, patch_size=8, num_frames=4,
                                        pos=pos, kwargs={"depth": 1})).eval()
    img = torch.randn(2, 3, 32, 32)
    a, b = torch.randn(2, 3, 4, 32, 32), torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        tokens = enc.forward_tokens(img)
        assert tokens.shape == (2, 2 * 4 * 4, 192)
        assert torch.allclose(tokens, enc.forward_tokens(img[:, :, None].repeat(1, 1, 4, 1, 1)), atol=1e-6)
        assert not torch.allclose(tokens, enc.forward_tokens(a), atol=1e-3)
        both = enc.forward_tokens(torch.stack([a, b], dim=1))  # [B, 2 clips, C, T, H, W]
        assert torch.allclose(both, torch.cat([enc.forward_tokens(a), enc.forward_tokens(b)], dim=1), atol=1e-6)
    with pytest.raises(ValueError, match="several clips"):
        enc.forward_tokens(torch.stack([a, b], dim=1), torch.arange(4).expand(2, -1))


@pytest.mark.integration
@pytest.mark.parametrize("preset", ["vjepa_moving_shapes_cpu", "vjepa_weizmann_cpu"])
def test_each_video_cpu_preset_trains_two_steps(preset, weizmann, tmp_path):
    extra = [f"data.root={shared_data_dir() / 'weizmann-actions-mp4.tar'}"] if "weizmann" in preset else []
    r = train(tmp_path, f"experiment={preset}", *extra, "trainer.max_steps=2", "trainer.enable_progress_bar=false")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == 2 and summary["method"] == "vjepa"
    if "weizmann" not in preset:
        return
    # the attentive probe over the tokens of two clips per video, cross-validated (images through a video
    # encoder: test_the_video_encoder_takes_images_and_several_clips)
    ev = subprocess.run([sys.executable, "-m", "jepa_zoo.eval", f"ckpt={tmp_path / 'checkpoints' / 'last.ckpt'}",
                         "protocol=attentive", "data=video_folder", *extra, "data.eval_clips=2", "folds=2",
                         "probe.max_steps=2", f"hydra.run.dir={tmp_path / 'attentive'}"],
                        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert ev.returncode == 0, ev.stderr[-2000:]
    record = json.loads(ev.stdout.strip().splitlines()[-1])
    assert record["protocol"] == "attentive" and record["folds"] == 2 and record["queries"] == 72
    # what was averaged: the checkpoint's 8-frame clips (frame_step 2), not data=video_folder's 16 (every 4)
    assert record["clips"] == 2 and record["num_frames"] == 8
    assert len(list((tmp_path / "checkpoints").glob("eval_attentive_cv2_*_2clips_s*_trained.json"))) == 1  # s*: probe


@pytest.mark.integration
def test_seeking_gives_the_frames_of_decoding_in_order(weizmann, tmp_path):
    """A clip late in a video seeks to the keyframe before it: the frames are exactly those decoding
    from the start gives, on the real H.264 clips and on a long MPEG-4 file with B-frames (the
    timestamps are in presentation order); a Matroska file without a frame count is counted from
    its duration."""
    import av
    import numpy as np

    from jepa_zoo.data import video

    def both(path, wanted):
        with av.open(str(path)) as c:
            in_order = video._decode_in_order(c, wanted)
        return in_order, video.decode(path, wanted)

    long = tmp_path / "long.mp4"
    with av.open(str(long), "w") as c:
        s = c.add_stream("mpeg4", rate=30)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        s.codec_context.gop_size, s.codec_context.max_b_frames = 30, 2
        for i in range(600):
            img = np.zeros((64, 64, 3), np.uint8)
            img[:, (i // 5) % 64, 1] = 255
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    clips = sorted(weizmann.rglob("*.mp4"))[:12]
    for path, wanted in [(long, set(range(437, 501, 4))), *[(p, set(range(49, 80, 3))) for p in clips]]:
        (a, n_a), (b, n_b) = both(path, wanted)
        assert n_a == n_b and a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), path
    mkv = tmp_path / "clip.mkv"
    with av.open(str(mkv), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        for i in range(100):
            for packet in s.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), i, np.uint8), format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    assert video.probe(mkv) == (100, 25.0)
