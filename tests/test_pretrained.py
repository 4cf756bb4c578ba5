"""Official I-JEPA weights in jepa_zoo: the fixture written by the official training code
(../shared/fixtures/ijepa) reproduces the official modules' outputs."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from jepa_zoo.errors import ConfigError
from jepa_zoo.models.backbones import gather_tokens
from jepa_zoo.models.posembed import sincos_2d

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
