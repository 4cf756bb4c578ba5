"""``python -m jepa_zoo.export``: every encoder jepa_zoo trains exports to a format that loads without
jepa_zoo (``--format torch_export``), the refusals point to it, Hugging Face folders carry their
preprocessing and their clip size, the files get the umask's mode, and an ``--out`` that cannot be
written is one line (issue #33)."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO

SHARED = REPO.parent / "shared" / "fixtures"
VJEPA2 = SHARED / "vjepa2" / "vjepa2_vit_tiny_d2_rope_p16_t2_8f_64px-latest.pt"
VJEPA2_REF = SHARED / "vjepa2" / "vjepa2_vit_tiny_d2_rope_p16_t2_8f_64px-reference_outputs.pt"
IJEPA = SHARED / "ijepa" / "ijepa_vit_tiny_d2_p16_224-official.pth.tar"
needs_fixtures = pytest.mark.skipif(not (VJEPA2.is_file() and IJEPA.is_file()), reason="../shared/fixtures is not here")

# the encoders jepa_zoo trains, as a user's command configures them (small: 1-2 blocks)
ENCODERS = {
    "resnet_cifar_stem": ["experiment=lejepa_cifar10_quick", "data.root=/nowhere"],  # the README quickstart
    "vit": ["method=ijepa", "data=fake", "data.img_size=32", "backbone.patch_size=4", "+backbone.kwargs.depth=1",
            "method.pred_depth=1"],
    "video_sincos": ["method=vjepa", "data=moving_shapes", "+backbone.kwargs.depth=1", "method.pred_depth=1"],
    "video_rope": ["method=vjepa2", "data=moving_shapes", "+backbone.kwargs.depth=1", "method.pred_depth=1"],
}


def checkpoint(path: Path, compose_cfg, *overrides: str) -> Path:
    """A jepa_zoo checkpoint of the model ``overrides`` configure (seeded init; BatchNorm statistics
    moved off their defaults), as a training run saves it."""
    from jepa_zoo.config import validate
    from jepa_zoo.methods import build_model

    tc = validate(compose_cfg(*overrides))
    torch.manual_seed(0)
    model = build_model(tc)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    torch.save({"hyper_parameters": {"cfg": dataclasses.asdict(tc), "num_classes": None},
                "state_dict": model.state_dict(), "global_step": 2}, path)
    return path


def features(ckpt: Path, *xs: torch.Tensor) -> torch.Tensor:
    """The pooled features of ``ckpt``'s evaluation encoder (jepa_zoo's own model) of each input."""
    from jepa_zoo.pretrained import load_any

    encoder = load_any(ckpt, "ckpt").model.eval().eval_encoder.eval()
    with torch.no_grad():
        out = [encoder(x) for x in xs]
    return out[0] if len(out) == 1 else out


def inputs(meta: dict, batch: int) -> torch.Tensor:
    return torch.randn(batch, *meta["input_shape"][1:], generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_encoder_exports_to_a_torch_program_with_the_same_features(tmp_path, compose_cfg, name):
    """``export --format torch_export``: the CIFAR-stem ResNet, the image ViT and both video ViTs give
    the jepa_zoo encoder's features (1e-6) from ``torch.export.load(...).module()``, at any batch size."""
    from jepa_zoo.export import main

    ckpt = checkpoint(tmp_path / "last.ckpt", compose_cfg, *ENCODERS[name])
    assert main([str(ckpt), "--format", "torch_export"]) == 0
    out = tmp_path / "last_encoder.pt2"
    extra = {"jepa_zoo.json": ""}
    program = torch.export.load(str(out), extra_files=extra).module()
    meta = json.loads(extra["jepa_zoo.json"])
    assert meta["method"] and meta["mean"] and meta["input_shape"][0] == "B"
    xs = [inputs(meta, batch) for batch in (1, 3)]
    for x, ours in zip(xs, features(ckpt, *xs)):
        with torch.no_grad():
            torch.testing.assert_close(program(x), ours, atol=1e-6, rtol=0)
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~umask())


@pytest.mark.integration
@pytest.mark.parametrize("name", ["resnet_cifar_stem", "video_sincos"])
def test_a_torch_program_loads_in_plain_pytorch_without_jepa_zoo(tmp_path, compose_cfg, name):
    """Through the entry point, then in a process where ``import jepa_zoo`` (and timm) fail: the
    program runs and gives the jepa_zoo encoder's features (1e-6)."""
    ckpt = checkpoint(tmp_path / "last.ckpt", compose_cfg, *ENCODERS[name])
    r = subprocess.run([sys.executable, "-m", "jepa_zoo.export", str(ckpt), "--format", "torch_export"], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "last_encoder.pt2"
    assert f"torch.export.load('{out}').module()" in r.stdout
    plain = ("import json, sys, torch\n"
             "sys.modules['jepa_zoo'] = None; sys.modules['timm'] = None  # importing either now fails\n"
             "extra = {'jepa_zoo.json': ''}\n"
             f"encoder = torch.export.load({str(out)!r}, extra_files=extra).module()\n"
             "shape = json.loads(extra['jepa_zoo.json'])['input_shape'][1:]\n"
             "x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))\n"
             f"torch.save({{'x': x, 'y': encoder(x).detach()}}, {str(tmp_path / 'plain.pt')!r})\n"
             "assert not any(m.startswith(('jepa_zoo', 'timm')) and sys.modules[m] for m in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", plain], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = torch.load(tmp_path / "plain.pt", weights_only=True)
    torch.testing.assert_close(got["y"], features(ckpt, got["x"]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name, fmt", [("resnet_cifar_stem", "timm"), ("resnet_cifar_stem", "hf"),
                                       ("video_sincos", "timm"), ("video_sincos", "hf"), ("video_rope", "timm")])
def test_the_other_formats_refuse_in_one_line_pointing_to_torch_export(tmp_path, compose_cfg, capsys, name, fmt):
    from jepa_zoo.export import main

    ckpt = checkpoint(tmp_path / "last.ckpt", compose_cfg, *ENCODERS[name])
    assert main([str(ckpt), "--format", fmt]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "--format torch_export" in err[-1], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_exported_safetensors_get_the_umask_mode(tmp_path, compose_cfg):
    """safetensors writes owner-only files: the timm file and the Hugging Face folder's weights get the
    mode of the other files (0644 under umask 022)."""
    from jepa_zoo.export import main

    ckpt = checkpoint(tmp_path / "last.ckpt", compose_cfg, *ENCODERS["vit"])
    assert main([str(ckpt)]) == 0
    assert main([str(ckpt), "--format", "hf"]) == 0
    for f in (tmp_path / "last_encoder.safetensors", tmp_path / "last_hf" / "model.safetensors",
              tmp_path / "last_hf" / "config.json"):
        assert oct(f.stat().st_mode & 0o777) == oct(0o666 & ~umask()), f


@pytest.mark.parametrize("fmt", ["timm", "hf", "torch_export"])
def test_an_out_that_cannot_be_written_is_one_line_and_leaves_nothing(tmp_path, compose_cfg, capsys, monkeypatch, fmt):
    """``--out`` below a regular file, or in a folder ``os.access`` says is read-only (root ignores
    permissions, so that is simulated), or a write that fails half-way: exit 2, one line, no file."""
    import jepa_zoo.export as export

    ckpt = checkpoint(tmp_path / "last.ckpt", compose_cfg, *ENCODERS["vit"])
    (tmp_path / "file").write_text("x")
    assert export.main([str(ckpt), "--format", fmt, "--out", str(tmp_path / "file" / "sub" / "enc")]) == 2
    assert "file is a file, not a folder" in capsys.readouterr().err
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(export.os, "access", lambda p, mode: Path(p) != ro and real(p, mode))
    assert export.main([str(ckpt), "--format", fmt, "--out", str(ro / "enc")]) == 2
    assert f"the folder {ro} is not writable" in capsys.readouterr().err
    monkeypatch.undo()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr({"timm": "safetensors.torch.save_file", "hf": "transformers.IJepaModel.save_pretrained",
                         "torch_export": "torch.export.save"}[fmt], fail)
    assert export.main([str(ckpt), "--format", fmt, "--out", str(tmp_path / "new" / "deeper" / "enc")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --out ") and "No space left on device" in err[-1], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "last.ckpt", "ro"]  # no folder, no .partial
    assert not list(ro.iterdir())


@needs_fixtures
@torch.no_grad()
def test_a_rope_file_exports_for_the_clip_size_the_command_gives(tmp_path, capsys):
    """An official V-JEPA 2 file records no size: ``--format hf`` says in one line that it assumed 256 px
    and 16 frames; with ``--img-size 64 --num-frames 8`` (the file's training clips) ``VJEPA2Model``
    gives the official target-encoder tokens (its RoPE positions come from ``crop_size``), and
    ``AutoVideoProcessor`` loads the folder's preprocessing; the torch program gives the pooled ones."""
    from transformers import AutoVideoProcessor, VJEPA2Model

    from jepa_zoo.export import main

    ref = torch.load(VJEPA2_REF, weights_only=True)
    assert main([str(VJEPA2), "--format", "hf", "--out", str(tmp_path / "assumed")]) == 0
    notes = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("note: ")]
    assert len(notes) == 1 and "records no image size or clip length" in notes[0] and "256-px clips of 16" in notes[0]
    config = json.loads((tmp_path / "assumed" / "config.json").read_text())
    assert (config["crop_size"], config["frames_per_clip"]) == (256, 16)
    assumed = VJEPA2Model.from_pretrained(str(tmp_path / "assumed")).eval()(ref["clips"].transpose(1, 2))
    assert (assumed.last_hidden_state - ref["target_encoder_tokens"]).abs().max() > 1e-3  # another clip size: off
    assert main([str(VJEPA2), "--format", "hf", "--out", str(tmp_path / "hf"), "--img-size", "64",
                 "--num-frames", "8"]) == 0
    assert "note: " not in capsys.readouterr().err
    hf = VJEPA2Model.from_pretrained(str(tmp_path / "hf")).eval()
    assert (hf.config.crop_size, hf.config.frames_per_clip) == (64, 8)
    torch.testing.assert_close(hf(ref["clips"].transpose(1, 2)).last_hidden_state, ref["target_encoder_tokens"],
                               atol=1e-5, rtol=0)
    processor = AutoVideoProcessor.from_pretrained(str(tmp_path / "hf"))
    assert type(processor).__name__ == "VJEPA2VideoProcessor" and processor.crop_size.height == 64
    video = torch.randint(0, 256, (8, 3, 80, 100), dtype=torch.uint8)
    assert processor(video, return_tensors="pt")["pixel_values_videos"].shape == (1, 8, 3, 64, 64)
    assert main([str(VJEPA2), "--format", "torch_export", "--out", str(tmp_path / "v.pt2"), "--img-size", "64",
                 "--num-frames", "8"]) == 0
    program = torch.export.load(str(tmp_path / "v.pt2")).module()
    torch.testing.assert_close(program(ref["clips"]), ref["target_encoder_pooled"], atol=1e-5, rtol=0)
    assert main([str(VJEPA2), "--format", "hf", "--out", str(tmp_path / "bad"), "--img-size", "60"]) == 2
    assert "--img-size 60 is not a multiple of the patch size 16" in capsys.readouterr().err


def test_a_jepa_zoo_rope_run_exports_at_its_own_size(tmp_path, compose_cfg, capsys):
    """A jepa_zoo checkpoint records its size: the folder is for its clips, with no note."""
    from jepa_zoo.export import main

    ckpt = checkpoint(tmp_path / "last.ckpt", compose_cfg, *ENCODERS["video_rope"])
    assert main([str(ckpt), "--format", "hf"]) == 0
    assert "note: " not in capsys.readouterr().err
    config = json.loads((tmp_path / "last_hf" / "config.json").read_text())
    tc = torch.load(ckpt, weights_only=True)["hyper_parameters"]["cfg"]
    assert (config["crop_size"], config["frames_per_clip"]) == (tc["data"]["img_size"], tc["data"]["num_frames"])


@needs_fixtures
@torch.no_grad()
def test_an_image_hf_folder_carries_its_preprocessing(tmp_path, monkeypatch):
    """``AutoImageProcessor.from_pretrained(<export>)`` offline: jepa_zoo's evaluation preprocessing (short
    side to 256, centre crop 224, ImageNet mean/std: the same pixels within 1e-5), and the tokens."""
    import numpy as np
    from PIL import Image
    from transformers import AutoImageProcessor, IJepaModel

    from jepa_zoo.data.views import eval_transform
    from jepa_zoo.export import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main([str(IJEPA), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    processor = AutoImageProcessor.from_pretrained(str(tmp_path / "hf"))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    pixels = processor(image, return_tensors="pt")["pixel_values"]
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    torch.testing.assert_close(pixels[0], eval_transform(224, 0.875, mean, std)(image), atol=1e-5, rtol=0)
    from jepa_zoo.pretrained import load_any

    encoder = load_any(IJEPA, "ckpt").model.eval().eval_encoder
    tokens = IJepaModel.from_pretrained(str(tmp_path / "hf")).eval()(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(tokens, encoder.forward_tokens(pixels), atol=1e-5, rtol=0)


def test_a_timm_export_evaluates_as_ckpt_timm_and_loads_with_plain_timm(tmp_path, compose_cfg):
    """A jepa_zoo ViT's timm export: ``eval ckpt=<it>`` names the ``ckpt=timm:<name> timm_file=`` to use,
    which builds the model the file records (no class token, its patch size, depth) and gives the
    encoder's features; so does the snippet of the docs, with timm alone."""
    import timm
    from hydra import compose, initialize_config_dir
    from safetensors import safe_open

    from conftest import CONF_DIR
    from jepa_zoo.errors import ConfigError
    from jepa_zoo.eval import load_model
    from jepa_zoo.export import main
    from jepa_zoo.pretrained import load_any

    ckpt = checkpoint(tmp_path / "last.ckpt", compose_cfg, *ENCODERS["vit"])
    assert main([str(ckpt)]) == 0
    path = tmp_path / "last_encoder.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    name = meta["timm_model"]
    with pytest.raises(ConfigError, match=f"ckpt=timm:{name} timm_file={path}"):
        load_any(path, "ckpt")
    x = torch.randn(2, 3, 32, 32)
    overrides = [f"ckpt=timm:{name}", f"timm_file={path}", "data=fake", "data.img_size=32"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    with torch.no_grad():
        torch.testing.assert_close(load_model(cfg, overrides).model.eval().eval_encoder(x), features(ckpt, x),
                                   atol=1e-6, rtol=0)
    model = timm.create_model(meta["timm_model"], pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path), **json.loads(meta["pretrained_cfg"])),
                              **json.loads(meta["create_kwargs"])).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), features(ckpt, x), atol=1e-6, rtol=0)
    other = ["ckpt=timm:vit_base_patch16_224", *overrides[1:]]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=other)
    with pytest.raises(ConfigError, match=f"is a jepa_zoo export of {name}; use ckpt=timm:{name}"):
        load_model(cfg, other)


def test_img_size_gives_the_input_size_of_timm_and_program_exports(tmp_path, compose_cfg, capsys):
    """``--img-size 48`` of a ViT trained at 32 px: timm's ``pos_embed`` is the sin-cos of the 12 x 12 grid
    and its data config 48 px; the program takes 48-px images; both give the encoder's features there.
    ``--num-frames`` of an image encoder and ``--img-size`` with the official layout are one line."""
    import timm

    from jepa_zoo.export import load_timm, main

    ckpt = checkpoint(tmp_path / "last.ckpt", compose_cfg, *ENCODERS["vit"])
    assert main([str(ckpt), "--img-size", "48", "--out", str(tmp_path / "t.safetensors")]) == 0
    assert main([str(ckpt), "--img-size", "48", "--format", "torch_export", "--out", str(tmp_path / "p.pt2")]) == 0
    model = load_timm(tmp_path / "t.safetensors")
    assert timm.data.resolve_data_config({}, model=model)["input_size"] == (3, 48, 48)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        ours = features(ckpt, x)
        torch.testing.assert_close(model(x), ours, atol=1e-6, rtol=0)
        torch.testing.assert_close(torch.export.load(str(tmp_path / "p.pt2")).module()(x), ours, atol=1e-6, rtol=0)
    assert main([str(ckpt), "--num-frames", "8"]) == 2
    assert "--num-frames: this encoder takes images" in capsys.readouterr().err
    assert main([str(ckpt), "--format", "official", "--img-size", "48"]) == 2
    assert "--format official keeps the training grid" in capsys.readouterr().err
