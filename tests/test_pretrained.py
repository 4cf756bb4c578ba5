"""Official I-JEPA weights in jepa_zoo: the fixture written by the official training code
(../shared/fixtures/ijepa) reproduces the official modules' outputs."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from jepa_zoo.errors import ConfigError
from jepa_zoo.models.backbones import gather_tokens
from jepa_zoo.models.posembed import sincos_2d, sincos_order_of

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ijepa"
CKPT = FIXTURES / "ijepa_vit_tiny_d2_p16_224-official.pth.tar"
REF = FIXTURES / "ijepa_vit_tiny_d2_p16_224-reference_outputs.pt"
needs_fixture = pytest.mark.skipif(not CKPT.is_file(), reason="../shared/fixtures/ijepa is not here")


@pytest.fixture(scope="module")
def official():
    from jepa_zoo.pretrained import build_from_weights

    model, imported = build_from_weights(CKPT, "ckpt")
    return model.eval(), imported, torch.load(REF, weights_only=True)


@needs_fixture
def test_the_architecture_is_read_from_the_shapes(official):
    _, imported, ref = official
    a = imported.arch
    assert (a["embed_dim"], a["depth"], a["num_heads"], a["patch_size"], a["img_size"]) == (192, 2, 3, 16, 224)
    assert (a["pred_dim"], a["pred_depth"]) == (48, 2)
    assert ref["meta"]["encoder"]["num_heads"] == 3 and ref["meta"]["predictor"]["predictor_embed_dim"] == 48


@needs_fixture
def test_sincos_orders():
    ref = torch.load(REF, weights_only=True)
    assert torch.allclose(sincos_2d((14, 14), 192), ref["pos_embed"][0], atol=1e-6)
    assert torch.allclose(sincos_2d((14, 14), 48), ref["predictor_pos_embed"][0], atol=1e-6)
    assert (sincos_2d((14, 14), 192, "timm") - ref["pos_embed"][0]).abs().max() > 1  # the other order is far off
    assert sincos_order_of(ref["pos_embed"]) == "ijepa" and sincos_order_of(sincos_2d((14, 14), 192, "timm")) == "timm"
    assert sincos_order_of(torch.randn(1, 196, 192)) is None  # learned embeddings


@needs_fixture
@torch.no_grad()
def test_official_outputs_are_reproduced(official):
    model, _, ref = official
    x = ref["images"]
    close = dict(atol=1e-5, rtol=0)
    torch.testing.assert_close(model.backbone.forward_tokens(x), ref["encoder_tokens"], **close)
    h = model.target_encoder.forward_tokens(x)
    torch.testing.assert_close(h, ref["target_encoder_tokens"], **close)
    torch.testing.assert_close(model.eval_encoder(x), ref["target_encoder_pooled"], **close)
    ctx = ref["masks_enc"][0]
    z = model.backbone.forward_tokens(x, ctx)
    torch.testing.assert_close(z, ref["context_tokens"], **close)
    tgt = torch.stack(ref["masks_pred"], dim=1)  # (B, T, K_t)
    pred = model.predictor(z, ctx, tgt)  # (B, T, K_t, D); the official order is mask-major (T·B, K_t, D)
    torch.testing.assert_close(pred.transpose(0, 1).flatten(0, 1), ref["predictor_out"], **close)
    y = gather_tokens(F.layer_norm(h, h.shape[-1:]), tgt.flatten(1)).view(*tgt.shape, -1)
    torch.testing.assert_close(y.transpose(0, 1).flatten(0, 1), ref["targets"], **close)
    torch.testing.assert_close(F.smooth_l1_loss(pred, y), ref["loss"], **close)


def test_files_of_no_known_format_are_one_line(tmp_path):
    from jepa_zoo.weights import read_weights

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ConfigError, match="ckpt: .*notes.txt is not a PyTorch checkpoint"):
        read_weights(text, "ckpt")
    other = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, other)
    with pytest.raises(ConfigError, match=r"in no format jepa_zoo reads .* it holds: model"):
        read_weights(other, "ckpt")
    cut = tmp_path / "cut.pth.tar"
    torch.save({"encoder": {"patch_embed.proj.weight": torch.zeros(192, 3, 16, 16)}}, cut)
    cut.write_bytes(cut.read_bytes()[:200])
    with pytest.raises(ConfigError, match="not a readable weights-only"):
        read_weights(cut, "ckpt")
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"encoder": {"x": object()}}, unsafe)
    with pytest.raises(ConfigError, match="not a readable weights-only"):
        read_weights(unsafe, "ckpt")


def run_eval(tmp_path, *args):
    import subprocess
    import sys

    from conftest import REPO

    return subprocess.run([sys.executable, "-m", "jepa_zoo.eval", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.integration
@needs_fixture
def test_eval_runs_knn_and_a_linear_probe_on_official_weights(tmp_path):
    """python -m jepa_zoo.eval ckpt=<official .pth.tar> data=...: the encoder the command names is
    evaluated (target by default, context on request); without data=... one line, exit 2, no file."""
    import json
    import shutil

    ckpt = tmp_path / "ijepa.pth.tar"
    shutil.copy(CKPT, ckpt)  # eval writes its JSON beside the checkpoint
    common = [f"ckpt={ckpt}", "data=fake", "data.img_size=64", "data.fake_size=48", "knn.k=[5]"]
    out = {}
    for weights in ("target", "context"):
        r = run_eval(tmp_path, *common, f"weights={weights}", f"hydra.run.dir={tmp_path}/knn_{weights}")
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        name = f"eval_knn{'_context' if weights == 'context' else ''}_on-fake_64px_s*_trained.json"  # s*: knn.k
        (path,) = tmp_path.glob(name)
        out[weights] = json.loads(path.read_text())  # one file each: neither overwrites the other
        assert out[weights]["weights"] == weights and 0 <= out[weights]["knn5_top1"] <= 100
    r = run_eval(tmp_path, *common, "protocol=linear", "probe.max_steps=2", "probe.lrs=[0.01]", "probe.wds=[0.0]",
                 f"hydra.run.dir={tmp_path}/linear")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    linear = json.loads(r.stdout.strip().splitlines()[-1])
    assert 0 <= linear["top1"] <= 100
    r = run_eval(tmp_path, f"ckpt={ckpt}", f"hydra.run.dir={tmp_path}/nodata")
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode == 2 and "data: " in lines[-1] and "official-ijepa weights" in lines[-1], lines
    assert not (tmp_path / "nodata").exists()


@needs_fixture
@torch.no_grad()
def test_export_to_timm_official_and_hugging_face_reload_with_the_same_features(tmp_path, official):
    """python -m jepa_zoo.export <official file> --format timm|official|hf: each file reloads in the
    library it is for and gives the official target encoder's features (1e-5); the official layout
    has the official file's keys and shapes and reads back into jepa_zoo."""
    import shutil

    from jepa_zoo.export import load_timm, main
    from jepa_zoo.weights import read_weights

    _, _, ref = official
    ckpt = tmp_path / "ijepa.pth.tar"
    shutil.copy(CKPT, ckpt)
    x, close = ref["images"], dict(atol=1e-5, rtol=0)
    assert main([str(ckpt), "--format", "timm"]) == 0
    timm_model = load_timm(tmp_path / "ijepa_encoder.safetensors")
    torch.testing.assert_close(timm_model(x), ref["target_encoder_pooled"], **close)

    assert main([str(ckpt), "--format", "official", "--out", str(tmp_path / "back.pth.tar")]) == 0
    written = torch.load(tmp_path / "back.pth.tar", weights_only=True)
    theirs = torch.load(CKPT, weights_only=True)
    for part in ("encoder", "target_encoder", "predictor"):
        assert {k: v.shape for k, v in written[part].items()} == {k: v.shape for k, v in theirs[part].items()}, part
        for k, v in theirs[part].items():
            torch.testing.assert_close(written[part][k], v, atol=1e-6, rtol=0)  # the same weights, stored sin-cos
    back = read_weights(tmp_path / "back.pth.tar", "ckpt")
    assert back.arch == official[1].arch

    from transformers import IJepaModel

    assert main([str(ckpt), "--format", "hf"]) == 0
    hf = IJepaModel.from_pretrained(str(tmp_path / "ijepa_hf")).eval()
    torch.testing.assert_close(hf(pixel_values=x).last_hidden_state, ref["target_encoder_tokens"], **close)
    assert main([str(ckpt), "--format", "hf", "--encoder", "online", "--out", str(tmp_path / "online")]) == 0
    hf = IJepaModel.from_pretrained(str(tmp_path / "online")).eval()
    torch.testing.assert_close(hf(pixel_values=x).last_hidden_state, ref["encoder_tokens"], **close)
    assert main([str(ckpt), "--format", "hf"]) == 0  # an earlier export is replaced
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "mine.txt").write_text("x")
    assert main([str(ckpt), "--format", "hf", "--out", str(keep)]) == 2  # not an export: refused, untouched
    assert main([str(ckpt), "--out", str(keep)]) == 2
    assert (keep / "mine.txt").read_text() == "x"
    assert not list(tmp_path.glob(".*partial")) and not list(tmp_path.glob(".*.old"))  # nothing half-written left


def test_the_official_layout_needs_an_ijepa_family_checkpoint(tmp_path, capsys):
    from jepa_zoo.config import BackboneConfig, TrainConfig
    from jepa_zoo.export import export_official
    from jepa_zoo.methods.lejepa import LeJEPA, LeJEPAConfig

    model = LeJEPA(TrainConfig(method=LeJEPAConfig(proj_hidden_dim=16, proj_dim=8, num_slices=8),
                               backbone=BackboneConfig(img_size=32, patch_size=8, kwargs={"depth": 1})))
    with pytest.raises(ValueError, match="I-JEPA-family .* method=lejepa"):
        export_official(model, tmp_path / "x.pth.tar", None)
    assert not list(tmp_path.iterdir())


@needs_fixture
@pytest.mark.integration
def test_train_init_from_official_weights_takes_three_steps(tmp_path):
    """python -m jepa_zoo.train method=ijepa init_from=<official file>: encoder, target encoder and
    predictor loaded before training (at 96 px: the sin-cos of the 6x6 grid), three steps; an
    architecture that does not fit is refused before training, naming the tensor, no run dir left."""
    from test_train_entry import read_metrics, train

    common = ["method=ijepa", "data=fake", "data.img_size=96", "backbone.patch_size=16", "+backbone.kwargs.depth=2",
              "method.pred_dim=48", "method.pred_depth=2", "trainer.max_steps=3", "trainer.log_every_n_steps=1",
              "trainer.enable_progress_bar=false", f"init_from={CKPT}"]
    r = train(tmp_path / "ok", *common)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "init_from: loaded encoder, target_encoder, predictor from" in out
    losses = [float(row["train/loss"]) for row in read_metrics(tmp_path / "ok") if row.get("train/loss")]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    # the EMA target moved 3 steps at momentum ~0.996 from the file's target encoder: still next to it
    ours = torch.load(tmp_path / "ok" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    theirs = torch.load(CKPT, weights_only=True)["target_encoder"]["module.blocks.1.mlp.fc2.weight"]
    assert (ours["target_encoder.model.blocks.1.mlp.fc2.weight"] - theirs).abs().max() < 1e-3 < theirs.abs().max()
    r = train(tmp_path / "bad", *common[:4], *common[5:])  # depth 12: the file has 2 blocks
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode == 2 and lines[-1].endswith(
        "init_from: encoder: the file has 2 blocks and the model 12: set +backbone.kwargs.depth=2"), lines[-3:]
    assert not (tmp_path / "bad").exists()
    r = train(tmp_path / "deep", *common, "method.pred_depth=3")  # a deeper predictor: its third block is not in the file
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode == 2 and lines[-1].endswith(
        "init_from: predictor: the file has 2 blocks and the model 3: set method.pred_depth=2"), lines[-3:]


def _lejepa(**backbone):
    from jepa_zoo.config import BackboneConfig, TrainConfig
    from jepa_zoo.methods.lejepa import LeJEPA, LeJEPAConfig

    return LeJEPA(TrainConfig(method=LeJEPAConfig(proj_hidden_dim=16, proj_dim=8, num_slices=8),
                              backbone=BackboneConfig(**backbone)))


def test_init_from_timm_weights(tmp_path):
    """init_from=<a timm state dict or safetensors>: jepa_zoo's own timm export into its maskable ViT;
    a stock timm ViT (learned pos_embed at 224 px) into backbone=timm at 64 px, resampled as timm
    does, its classifier dropped; a class token into the maskable ViT is refused by name."""
    import timm
    from safetensors.torch import save_file

    from jepa_zoo.export import timm_export
    from jepa_zoo.pretrained import init_from_

    vit = dict(img_size=32, patch_size=8, kwargs={"depth": 1})
    torch.manual_seed(0)
    source = _lejepa(**vit)
    state, _, _ = timm_export(source.backbone)
    save_file(state, str(tmp_path / "enc.safetensors"))
    torch.manual_seed(1)
    target = _lejepa(**vit)
    assert "encoder from" in init_from_(target, str(tmp_path / "enc.safetensors"))
    for (k, a), b in zip(source.backbone.state_dict().items(), target.backbone.state_dict().values()):
        assert torch.equal(a, b), k

    old = _lejepa(**vit, sincos_order="timm")  # an export of a run from before the official order
    state, _, _ = timm_export(old.backbone)
    save_file(state, str(tmp_path / "old.safetensors"))
    with pytest.raises(ConfigError, match="add backbone.sincos_order=timm"):
        init_from_(_lejepa(**vit), str(tmp_path / "old.safetensors"))

    stock = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, depth=1)
    torch.save(stock.state_dict(), tmp_path / "stock.pth")
    with pytest.raises(ConfigError, match="class token"):
        init_from_(_lejepa(**vit), str(tmp_path / "stock.pth"))
    timm_run = _lejepa(kind="timm", name="vit_tiny_patch16_224", img_size=64, patch_size=16, kwargs={"depth": 1})
    init_from_(timm_run, str(tmp_path / "stock.pth"))
    model = timm_run.backbone.model
    assert torch.equal(model.blocks[0].attn.qkv.weight, stock.blocks[0].attn.qkv.weight)
    assert model.pos_embed.shape[1] == 1 + 16  # 224 px's 14 x 14 grid resampled to 4 x 4, plus the class token
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="init_from: encoder: the weights do not fit the model"):
        init_from_(_lejepa(**vit), str(tmp_path / "bad.pth"))


def test_resuming_a_run_of_the_old_sincos_order_keeps_it(tmp_path, compose_cfg):
    """A checkpoint written before backbone.sincos_order existed was trained with timm's order:
    resuming it under the new default is refused, naming the setting to add."""
    import dataclasses

    from jepa_zoo.checkpointing import check_compatible
    from jepa_zoo.config import validate

    tc = validate(compose_cfg("backbone=vit_t", "data=fake"))
    saved = dataclasses.asdict(tc)
    saved["backbone"].pop("sincos_order")
    ckpt = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": {"cfg": saved}, "state_dict": {}}, ckpt)
    with pytest.raises(ConfigError, match="backbone.sincos_order=timm"):
        check_compatible(str(ckpt), tc)
    tc.backbone.sincos_order = "timm"
    check_compatible(str(ckpt), tc)
