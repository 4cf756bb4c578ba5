"""Official V-JEPA and V-JEPA 2 weights in jepa_zoo's video ViT and predictor: the fixtures written by
the official training code (../shared/fixtures/vjepa, vjepa2) reproduce the official modules' outputs
within 1e-5, and Hugging Face's ``VJEPA2Model`` reads and writes the same weights."""

from pathlib import Path

import pytest
import torch

from jepa_zoo.losses.jepa import vjepa_loss, vjepa_targets
from jepa_zoo.models.backbones import build_backbone
from jepa_zoo.models.posembed import sincos_3d
from jepa_zoo.models.rope import rope_3d, token_coords
from jepa_zoo.models.schema import BackboneConfig
from jepa_zoo.models.video_predictor import VideoPredictor

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
FILES = {
    "vjepa": (SHARED / "vjepa" / "vjepa_vit_tiny_d2_p16_t2_8f_64px-latest.pth.tar",
              SHARED / "vjepa" / "vjepa_vit_tiny_d2_p16_t2_8f_64px-reference_outputs.pt"),
    "vjepa2": (SHARED / "vjepa2" / "vjepa2_vit_tiny_d2_rope_p16_t2_8f_64px-latest.pt",
               SHARED / "vjepa2" / "vjepa2_vit_tiny_d2_rope_p16_t2_8f_64px-reference_outputs.pt"),
}
needs_fixtures = pytest.mark.skipif(not all(p.is_file() for pair in FILES.values() for p in pair),
                                    reason="../shared/fixtures/vjepa{,2} are not here")
CLOSE = dict(atol=1e-5, rtol=0)


def modules(imported, num_frames=8, img_size=64, rope_layout="vjepa2", pred_heads=None):
    """The encoder, target encoder and predictor of an imported file, loaded strictly."""
    a = imported.arch
    cfg = BackboneConfig(kind="vit", name=a["timm_name"], img_size=a["img_size"] or img_size,
                         patch_size=a["patch_size"], num_frames=a["num_frames"] or num_frames,
                         tubelet_size=a["tubelet_size"], pos=a["pos"], rope_layout=rope_layout,
                         kwargs={"depth": a["depth"], "embed_dim": a["embed_dim"], "num_heads": a["num_heads"]})
    enc, tgt = build_backbone(cfg).eval(), build_backbone(cfg).eval()
    enc.model.load_state_dict(imported.encoder)
    tgt.model.load_state_dict(imported.target_encoder or imported.encoder)
    pred = VideoPredictor(a["embed_dim"], enc.grid_size, a["pred_dim"], a["pred_depth"], pred_heads or a["pred_heads"],
                          pos=a["pos"], rope_layout=rope_layout, num_mask_tokens=a["num_mask_tokens"]).eval()
    pred.load_state_dict(imported.predictor)
    return enc, tgt, pred


@pytest.fixture(scope="module", params=sorted(FILES))
def official(request):
    from jepa_zoo.weights import read_weights

    ckpt, ref = FILES[request.param]
    imported = read_weights(ckpt, "ckpt")
    return request.param, imported, modules(imported), torch.load(ref, weights_only=True)


@needs_fixtures
def test_the_architecture_is_read_from_the_file(official):
    name, imported, _, ref = official
    a, meta = imported.arch, ref["meta"]
    assert imported.format == {"vjepa": "official-vjepa", "vjepa2": "official-vjepa2"}[name]
    assert a["pos"] == ("rope" if name == "vjepa2" else "sincos")
    assert (a["embed_dim"], a["depth"], a["num_heads"], a["patch_size"], a["tubelet_size"]) == (
        meta["encoder"]["embed_dim"], meta["encoder"]["depth"], meta["encoder"]["num_heads"],
        meta["encoder"]["patch_size"], meta["encoder"]["tubelet_size"])
    assert (a["pred_dim"], a["pred_depth"], a["num_mask_tokens"], a["pred_heads"]) == (
        meta["predictor"]["predictor_embed_dim"], meta["predictor"]["depth"], meta["predictor"]["num_mask_tokens"],
        meta["predictor"]["num_heads"])
    if name == "vjepa":  # the sin-cos grid gives the clip length and the image size; RoPE files record neither
        assert (a["num_frames"], a["img_size"]) == (meta["encoder"]["num_frames"], meta["encoder"]["img_size"])
    else:
        assert a["num_frames"] is None and a["img_size"] is None


@needs_fixtures
def test_3d_sincos_is_the_official_embedding():
    ref = torch.load(FILES["vjepa"][1], weights_only=True)
    torch.testing.assert_close(sincos_3d((4, 4, 4), 192), ref["pos_embed"][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(sincos_3d((4, 4, 4), 48), ref["predictor_pos_embed"][0], atol=1e-6, rtol=0)
    assert (sincos_3d((4, 4, 4), 192, uniform_power=False) - ref["pos_embed"][0]).abs().max() > 0.5


@needs_fixtures
@torch.no_grad()
def test_official_outputs_are_reproduced(official):
    name, _, (enc, tgt, pred), ref = official
    x = ref["clips"]
    torch.testing.assert_close(enc.forward_tokens(x), ref["encoder_tokens"], **CLOSE)
    h = tgt.forward_tokens(x)
    torch.testing.assert_close(h, ref["target_encoder_tokens"], **CLOSE)
    torch.testing.assert_close(tgt(x), ref["target_encoder_pooled"], **CLOSE)
    blocks = []
    t = tgt.model.patch_embed(x).flatten(1, 3)
    t = t + sincos_3d(tgt.grid_size, t.shape[-1]) if name == "vjepa" else t
    rope = tgt.rope(tgt.grid_size, None, t.device) if name == "vjepa2" else None
    for blk in tgt.model.blocks:
        t = blk(t) if rope is None else blk(t, rope=rope)
        blocks.append(t)
    for mine, theirs in zip(blocks, ref["target_encoder_block_outputs"], strict=True):
        torch.testing.assert_close(mine, theirs, **CLOSE)
    preds = []
    for j, (ctx, trg) in enumerate(zip(ref["masks_enc"], ref["masks_pred"], strict=True)):
        z = enc.forward_tokens(x, ctx)
        torch.testing.assert_close(z, ref["context_tokens"][j], **CLOSE)
        # V-JEPA: one mask token per mask type; V-JEPA 2 indexes them by clip length (one here): token 0
        preds.append(pred(z, ctx, trg, mask_index=j if name == "vjepa" else 0))
        torch.testing.assert_close(preds[-1], ref["predictor_out"][j], **CLOSE)
    targets = vjepa_targets(h, ref["masks_pred"])
    for mine, theirs in zip(targets, ref["targets"], strict=True):
        torch.testing.assert_close(mine, theirs, **CLOSE)
    torch.testing.assert_close(vjepa_loss(preds, targets), ref["loss"], **CLOSE)


@needs_fixtures
@torch.no_grad()
def test_the_quirks_matter(official):
    """Each official detail kept changes the outputs beyond the tolerance: the RoPE angle layout, the
    mask token of each mask type (mutations of the reproduction above)."""
    name, imported, (_, _, pred), ref = official
    x, ctx, trg = ref["clips"], ref["masks_enc"][0], ref["masks_pred"][0]
    if name == "vjepa2":
        enc, _, _ = modules(imported, rope_layout="interleaved")
        assert (enc.forward_tokens(x) - ref["encoder_tokens"]).abs().max() > 5 * CLOSE["atol"]
    z = ref["context_tokens"][0]
    other = pred(z, ctx, trg, mask_index=1)  # mask type 0 uses token 0 in both; after one step the tokens differ by ~1e-4
    assert (other - ref["predictor_out"][0]).abs().max() > 5 * CLOSE["atol"]


def test_rope_layouts():
    """The official angles: channel n of a chunk turns by ω_{n mod m/2}; the interleaved layout by ω_{n//2}."""
    hd = 64
    m = 2 * ((hd // 3) // 2)  # 20
    coords = token_coords(torch.arange(2 * 3 * 5), (2, 3, 5))
    assert coords[17].tolist() == [1, 0, 2]  # 17 = 1·15 + 0·5 + 2
    table = rope_3d(coords[None], hd)[0]  # [N, 2·hd]
    sin, cos = table[:, :hd], table[:, hd:]
    omega = 1.0 / 10000 ** (torch.arange(m // 2) / (m / 2))
    n = torch.arange(m)
    row = coords[:, 1:2].float()
    torch.testing.assert_close(sin[:, m:2 * m], torch.sin(row * omega[n % (m // 2)]))
    fixed = rope_3d(coords[None], hd, "interleaved")[0]
    torch.testing.assert_close(fixed[:, m:2 * m], torch.sin(row * omega[n // 2]))
    assert torch.equal(sin[:, 3 * m:], torch.zeros(len(coords), hd - 3 * m))  # the rest is not rotated
    assert torch.equal(cos[:, 3 * m:], torch.ones(len(coords), hd - 3 * m))


@needs_fixtures
@torch.no_grad()
def test_hugging_face_vjepa2_both_ways(tmp_path):
    """Official V-JEPA 2 -> jepa_zoo -> ``VJEPA2Model`` reproduces the official target-encoder tokens,
    and ``VJEPA2Model``'s weights -> jepa_zoo reproduce its encoder and predictor outputs."""
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    from jepa_zoo.weights import hf_vjepa2, read_weights

    imported = read_weights(FILES["vjepa2"][0], "ckpt")
    ref = torch.load(FILES["vjepa2"][1], weights_only=True)
    enc, tgt, pred = modules(imported)
    kwargs = hf_vjepa2.config({**imported.arch}, num_frames=8, img_size=64, pred_heads=3)
    hf = transformers.VJEPA2Model(transformers.VJEPA2Config(**kwargs)).eval()
    hf.load_state_dict(hf_vjepa2.write(tgt.model.state_dict(), pred.state_dict()))
    x = ref["clips"]
    out = hf(x.transpose(1, 2))  # HF takes [B, T, C, H, W]
    torch.testing.assert_close(out.last_hidden_state, ref["target_encoder_tokens"], **CLOSE)

    path = tmp_path / "model.safetensors"  # how the Hub stores it
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(path))
    back = read_weights(path, "ckpt")
    assert back.format == "hf-vjepa2" and back.arch["num_mask_tokens"] == 2
    enc2, _, pred2 = modules(back, pred_heads=3)
    torch.testing.assert_close(enc2.forward_tokens(x), out.last_hidden_state, **CLOSE)
    ctx, trg = ref["masks_enc"][0], ref["masks_pred"][0]
    hf_pred = hf(x.transpose(1, 2), context_mask=[ctx], target_mask=[trg]).predictor_output.last_hidden_state
    # HF's predictor reads the full clip's tokens at the context positions, and uses mask_tokens[1 % M]
    z = torch.gather(enc2.forward_tokens(x), 1, ctx[..., None].expand(-1, -1, 192))
    mine = pred2(z, ctx, trg, mask_index=1)
    torch.testing.assert_close(mine, hf_pred, **CLOSE)


@needs_fixtures
@torch.no_grad()
def test_the_method_built_from_the_file_reproduces_the_loss(official):
    """``build_from_weights`` (what ``eval ckpt=`` and ``init_from=`` use) gives ``method=vjepa`` with
    every part loaded: its step on the official inputs gives the official loss."""
    from jepa_zoo.data.schema import DataConfig
    from jepa_zoo.pretrained import build_from_weights

    name, _, _, ref = official
    data = DataConfig(name="moving_shapes", img_size=64, num_frames=8)
    model, imported = build_from_weights(FILES[name][0], "ckpt", data)
    model.eval()
    assert model.cfg.method.name == "vjepa" and model.cfg.backbone.pos == imported.arch["pos"]
    assert model.cfg.method.mask_token_per_type == (name == "vjepa")  # V-JEPA 2's code: token 0 for both types
    x = ref["clips"]
    torch.testing.assert_close(model.eval_encoder(x), ref["target_encoder_pooled"], **CLOSE)
    out = model.vjepa_step(x, ref["masks_enc"], ref["masks_pred"], torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(out.loss, ref["loss"], **CLOSE)


@pytest.mark.integration
@needs_fixtures
@pytest.mark.parametrize("name", sorted(FILES))
def test_training_starts_from_official_weights(tmp_path, name):
    """``init_from=<official file>`` through the entry point loads all three parts (strictly: a
    missing or misshapen tensor is an error) and trains; the other position encoding is refused in
    one line."""
    from test_train_entry import train

    common = ["data=moving_shapes", "data.img_size=64", "backbone.patch_size=16", "+backbone.kwargs.depth=2",
              "method.pred_dim=48", "method.pred_depth=2", "method.pred_heads=3", f"init_from={FILES[name][0]}",
              "trainer.max_steps=1", "trainer.enable_progress_bar=false"]
    method = "method=vjepa2" if name == "vjepa2" else "method=vjepa"
    r = train(tmp_path / "ok", method, *common)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert f"init_from: loaded encoder, target_encoder, predictor from {FILES[name][0]} (official-{name})" in (
        r.stdout + r.stderr)
    wrong = train(tmp_path / "wrong", "method=vjepa" if name == "vjepa2" else "method=vjepa2", *common)
    assert wrong.returncode == 2 and "need a video ViT with backbone.pos=" in wrong.stdout + wrong.stderr


@needs_fixtures
@torch.no_grad()
def test_a_hub_style_vjepa2_file_loads_as_rope(tmp_path):
    """The official V-JEPA 2 hub files hold 10 mask tokens and position tables their RoPE model
    ignores (loaded with strict=False there): such a file is read as RoPE, every token is loaded
    (those no mask type uses are frozen), and the outputs are the official ones."""
    from jepa_zoo.data.schema import DataConfig
    from jepa_zoo.pretrained import build_from_weights

    ckpt = torch.load(FILES["vjepa2"][0], weights_only=True)
    ckpt["encoder"]["module.backbone.pos_embed"] = sincos_3d((4, 4, 4), 192, uniform_power=False)[None]
    ckpt["predictor"]["module.backbone.predictor_pos_embed"] = sincos_3d((4, 4, 4), 48, uniform_power=False)[None]
    for j in range(2, 10):
        ckpt["predictor"][f"module.backbone.mask_tokens.{j}"] = torch.full((1, 1, 48), float(j))
    path = tmp_path / "vitl.pt"
    torch.save(ckpt, path)
    model, imported = build_from_weights(path, "ckpt", DataConfig(name="moving_shapes", img_size=64, num_frames=8))
    assert imported.format == "official-vjepa2" and imported.arch["num_mask_tokens"] == 10
    tokens = list(model.predictor.mask_tokens)
    assert len(tokens) == 10 and tokens[9].eq(9.0).all() and [t.requires_grad for t in tokens].count(True) == 1
    ref = torch.load(FILES["vjepa2"][1], weights_only=True)
    torch.testing.assert_close(model.eval().eval_encoder.forward_tokens(ref["clips"]), ref["target_encoder_tokens"],
                               **CLOSE)


@needs_fixtures
@pytest.mark.parametrize("extra, frames, size", [((), 8, 64), (("data.num_frames=4",), 4, 64),
                                                 (("data.img_size=32",), 8, 32)])
def test_an_official_vjepa_file_on_video_data_keeps_its_clip_unless_the_command_sets_it(tmp_path, extra, frames, size):
    """``eval ckpt=<official V-JEPA file> data=video_folder ...``: the file's 8 frames and 64 px (its stored
    sin-cos grid), not the data group's 16 frames at 224 px, unless the command sets them (as for
    jepa_zoo checkpoints); the model is built as the evaluation builds it (``eval.load_model``)."""
    from hydra import compose, initialize_config_dir

    from conftest import CONF_DIR
    from jepa_zoo.eval import load_model

    overrides = [f"ckpt={FILES['vjepa'][0]}", "data=video_folder", f"data.root={tmp_path}", "folds=4", *extra]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    tc = load_model(cfg, overrides).config
    assert (tc.data.num_frames, tc.backbone.num_frames) == (frames, frames)
    assert (tc.data.img_size, tc.backbone.img_size) == (size, size)
    assert tc.data.frame_step == 4  # the file records no spacing: the data group's
