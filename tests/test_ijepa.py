import pytest
import torch

from jepa_zoo.config import BackboneConfig, DataConfig, TrainConfig
from jepa_zoo.methods.ijepa import IJEPAConfig
from jepa_zoo.losses.jepa import latent_prediction_loss
from jepa_zoo.masks.collator import MaskCollator
from jepa_zoo.methods.ijepa import IJEPA
from jepa_zoo.models.ema import EMATeacher, ema_momentum, ema_update_, make_target
from jepa_zoo.models.predictor import Predictor
from jepa_zoo.masks.schema import masking_config


def test_predictor_shapes_and_block_independence():
    torch.manual_seed(0)
    p = Predictor(embed_dim=16, grid_size=(4, 4), pred_dim=8, depth=2, num_heads=2).eval()
    z = torch.randn(2, 5, 16)
    ctx = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    tgt = torch.tensor([[[10, 11], [12, 13], [14, 15]], [[0, 1], [2, 3], [4, 15]]])
    out = p(z, ctx, tgt)
    assert out.shape == (2, 3, 2, 16)
    # a block's prediction depends on its own positions only, not on the other blocks
    tgt2 = tgt.clone()
    tgt2[:, 2] = torch.tensor([[0, 1], [10, 11]])
    out2 = p(z, ctx, tgt2)
    assert torch.allclose(out[:, :2], out2[:, :2], atol=1e-6) and not torch.allclose(out[:, 2], out2[:, 2])
    with pytest.raises(ValueError, match="tgt must be"):
        p(z, ctx, tgt[0])


def test_ema_momentum_schedule():
    assert ema_momentum(0, 100) == pytest.approx(0.996)
    assert ema_momentum(50, 100) == pytest.approx(0.998)
    assert ema_momentum(100, 100) == pytest.approx(1.0) and ema_momentum(150, 100) == pytest.approx(1.0)


def test_ema_update_is_a_lerp_and_target_is_frozen():
    online = torch.nn.Linear(3, 2)
    target = make_target(online)
    assert not any(p.requires_grad for p in target.parameters())
    with torch.no_grad():
        online.weight.add_(1.0)
    before = target.weight.clone()
    ema_update_(target, online, 0.9)
    assert torch.allclose(target.weight, 0.9 * before + 0.1 * online.weight)


def test_ema_teacher_steps_its_schedule():
    online = torch.nn.Linear(3, 2)
    target = make_target(online)
    with torch.no_grad():
        online.weight.add_(1.0)
    before = target.weight.clone()
    teacher = EMATeacher(0.5, 1.0)
    assert teacher.update_(target, online, 5, 10) == pytest.approx(0.75) == teacher.last_momentum
    assert torch.allclose(target.weight, 0.75 * before + 0.25 * online.weight)
    assert teacher.momentum(10, 10) == 1.0
    with pytest.raises(ValueError, match="start <= end"):
        EMATeacher(1.0, 0.5)


def test_loss_on_hand_made_tensors():
    pred = torch.tensor([0.0, 0.5, 3.0])
    target = torch.zeros(3)
    # smooth L1 (beta 1): 0, 0.5 * 0.25, 3 - 0.5
    assert latent_prediction_loss(pred, target).item() == pytest.approx((0 + 0.125 + 2.5) / 3)
    assert latent_prediction_loss(pred, target, "mse").item() == pytest.approx((0 + 0.25 + 9) / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        latent_prediction_loss(pred, torch.zeros(2))


def tiny_cfg() -> TrainConfig:
    return TrainConfig(
        method=IJEPAConfig(pred_depth=1, pred_dim=24),
        backbone=BackboneConfig(img_size=32, patch_size=4, kwargs={"depth": 1}),
        masking=masking_config("multiblock"),
        data=DataConfig(name="fake", img_size=32),
    )


def test_collator_adds_masks():
    collate = MaskCollator((8, 8), masking_config("multiblock"))
    images, ctx, tgt, labels = collate([(torch.zeros(3, 32, 32), i) for i in range(4)])
    assert images.shape == (4, 3, 32, 32) and labels.tolist() == [0, 1, 2, 3]
    assert ctx.shape[0] == 4 and tgt.shape[:2] == (4, 4)


def test_ijepa_step_trains_context_encoder_and_predictor_only():
    torch.manual_seed(0)
    model = IJEPA(tiny_cfg(), num_classes=10)
    collate = IJEPA.collate_fn(model.cfg)
    batch = collate([(torch.randn(3, 32, 32), i) for i in range(4)])
    out = model.step(batch)
    assert torch.isfinite(out.loss) and out.features.shape == (4, 192)
    assert {"context_size", "target_size", "target_std", "pred_cos"} <= set(out.logs)
    assert -1.0 <= float(out.logs["pred_cos"]) <= 1.0
    out.loss.backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert model.backbone.model.patch_embed.proj.weight.grad is not None
    assert model.predictor.mask_token.grad is not None


def test_ijepa_refuses_cnn_backbones():
    cfg = tiny_cfg()
    cfg.backbone = BackboneConfig(kind="timm", name="resnet18")
    with pytest.raises(TypeError, match="ViT"):
        IJEPA(cfg)


@pytest.mark.integration
def test_masks_reproducible_across_loader_workers():
    from jepa_zoo.data.datamodule import JEPADataModule

    cfg = tiny_cfg()
    cfg.data = DataConfig(name="fake", img_size=32, batch_size=4, num_workers=2, fake_size=16, pin_memory=False)

    def first_masks():
        torch.manual_seed(0)
        dm = JEPADataModule(cfg.data, IJEPA.train_transform(cfg), IJEPA.collate_fn(cfg), seed=0)
        dm.setup("fit")
        return [(b[1], b[2]) for _, b in zip(range(3), dm.train_dataloader())]

    a, b = first_masks(), first_masks()
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not torch.equal(a[0][1], a[1][1])  # the two workers draw different masks
