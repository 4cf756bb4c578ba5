import pytest
import torch

from jepa_zoo.config import BackboneConfig, TrainConfig, ViewsConfig
from jepa_zoo.data.batch import Batch
from jepa_zoo.methods.lejepa import LeJEPAConfig
from jepa_zoo.losses.jepa import lejepa_loss
from jepa_zoo.methods.lejepa import LeJEPA


def test_lejepa_loss_on_hand_made_tensors():
    # 3 views (2 global), 2 samples, 1 dim
    proj = torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]], [[0.0], [0.0]]])
    out = lejepa_loss(proj, num_global=2, sigreg=lambda z: torch.tensor(7.0), lambd=0.25)
    # centres = [2, 3]; squared errors: v0 (1, 1), v1 (1, 1), v2 (4, 9) -> mean 17/6
    assert out["pred_loss"].item() == pytest.approx(17 / 6)
    assert out["sigreg_loss"].item() == 7.0
    assert out["loss"].item() == pytest.approx(0.75 * 17 / 6 + 0.25 * 7.0)


def test_lejepa_loss_shape_errors():
    with pytest.raises(ValueError, match="V, N, K"):
        lejepa_loss(torch.zeros(4, 3), 1, lambda z: z.sum(), 0.1)
    with pytest.raises(ValueError, match="num_global"):
        lejepa_loss(torch.zeros(2, 4, 3), 3, lambda z: z.sum(), 0.1)


def tiny_cfg(backbone: BackboneConfig) -> TrainConfig:
    views = ViewsConfig(num_global=2, global_size=32, num_local=2, local_size=16)
    method = LeJEPAConfig(proj_hidden_dim=32, proj_dim=8, num_slices=16, views=views)
    return TrainConfig(method=method, backbone=backbone)


BACKBONES = {
    "vit": BackboneConfig(kind="vit", name="vit_tiny_patch16_224", img_size=32, patch_size=8, kwargs={"depth": 2}),
    "resnet": BackboneConfig(kind="timm", name="resnet18", img_size=32, cifar_stem=True),
}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_step_trains_every_backbone(name):
    torch.manual_seed(0)
    model = LeJEPA(tiny_cfg(BACKBONES[name]), num_classes=10)
    views = [torch.randn(4, 3, 32, 32) for _ in range(2)] + [torch.randn(4, 3, 16, 16) for _ in range(2)]
    labels = torch.arange(4)
    out = model.step(Batch(views, labels))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert set(out.logs) == {"loss", "pred_loss", "sigreg_loss"}
    assert out.features.shape == (8, model.backbone.embed_dim) and not out.features.requires_grad
    assert torch.equal(out.labels, labels.repeat(2))
    out.loss.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def _fit_two_steps(probe: bool, clip: float, init: dict) -> dict:
    import lightning as L

    from jepa_zoo.config import DataConfig
    from jepa_zoo.data.datamodule import JEPADataModule

    cfg = tiny_cfg(BACKBONES["vit"])
    cfg.method.probe.enabled = probe
    cfg.method.optim.warmup_steps = 0
    cfg.data = DataConfig(name="fake", img_size=32, batch_size=8, num_workers=0, fake_size=16, num_classes=10)
    model = LeJEPA(cfg, num_classes=10)
    model.load_state_dict(init, strict=probe)  # same starting weights (probe weights dropped without it)
    L.seed_everything(0)
    dm = JEPADataModule(cfg.data, LeJEPA.train_transform(cfg), seed=0)
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, gradient_clip_val=clip,
                        accelerator="cpu", deterministic=True)
    trainer.fit(model, datamodule=dm)
    assert (model.probe is not None) == probe
    return {k: v.clone() for k, v in model.backbone.state_dict().items()}


@pytest.mark.integration
def test_probe_never_changes_the_encoder_update():
    # same weights, seed and data with and without the probe, gradient clipping on: identical encoders
    init = LeJEPA(tiny_cfg(BACKBONES["vit"]), num_classes=10).state_dict()
    with_probe, without = _fit_two_steps(True, 0.05, init), _fit_two_steps(False, 0.05, init)
    assert all(torch.equal(with_probe[k], without[k]) for k in without)
    assert not torch.equal(with_probe["model.patch_embed.proj.weight"], init["backbone.model.patch_embed.proj.weight"])


def test_lejepa_loss_is_fp32_under_bf16():
    proj = torch.randn(3, 4, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lejepa_loss(proj, 2, lambda z: z.float().mean(), 0.1)
    assert out["pred_loss"].dtype == torch.float32


def test_wrong_number_of_views_is_an_error():
    model = LeJEPA(tiny_cfg(BACKBONES["vit"]))
    with pytest.raises(ValueError, match="expected 4 views"):
        model.step(Batch([torch.randn(2, 3, 32, 32)], torch.arange(2)))


def test_photometric_on_device_is_the_step_on_the_transformed_views():
    """views.photometric=device: the datamodule makes the views after the transfer (one batched call
    per view size), in float32 even under bf16 autocast, cast to the module's dtype; the step on
    them is the step on the views the batched ops make; a loader batch is refused by name."""
    from torch.utils.data import default_collate

    from jepa_zoo.data.datamodule import JEPADataModule
    from jepa_zoo.data.photometric import apply_photometric, draw_params
    from jepa_zoo.data.views import blur_kernel

    cfg = tiny_cfg(BACKBONES["vit"])
    cfg.method.views.photometric = "device"
    torch.manual_seed(0)
    model = LeJEPA(cfg)
    dm = JEPADataModule(cfg.data, LeJEPA.train_transform(cfg))
    crops = [torch.randint(0, 256, (4, 3, s, s), dtype=torch.uint8) for s in (32, 32, 16, 16)]
    draws = [default_collate([draw_params([0.4, 0.4, 0.2, 0.1], 0.8, 0.2, 0.5, 0.9) for _ in range(4)])
             for _ in crops]
    done = [apply_photometric(c, d, cfg.data.mean, cfg.data.std, blur_kernel(c.shape[-1])) for c, d in zip(crops, draws)]
    assert any(d.blur.any() for d in draws)  # the blur is a convolution: bf16 under autocast if not guarded
    with torch.autocast("cpu", dtype=torch.bfloat16):
        views, labels = dm.device_views(Batch(list(zip(crops, draws)), torch.arange(4)), torch.float32)
    assert [v.dtype for v in views] == [torch.float32] * 4 and [v.shape[-1] for v in views] == [32, 32, 16, 16]
    for v, d in zip(views, done):
        torch.testing.assert_close(v, d, atol=1e-6, rtol=0)
    assert torch.equal(model.step(Batch(views, labels)).loss, model.step(Batch(done, labels)).loss)
    with pytest.raises(ValueError, match="photometric=device expects each view as"):
        dm.device_views(Batch(done, labels), torch.float32)
    views, _ = dm.device_views(Batch(list(zip(crops, draws)), labels), torch.bfloat16)  # bf16-true's backbone
    assert {v.dtype for v in views} == {torch.bfloat16}
    cfg.method.views.photometric = "loader"
    loader_dm = JEPADataModule(cfg.data, LeJEPA.train_transform(cfg))
    assert loader_dm.device_views(Batch(done, labels), torch.float32)[0] is done  # the loader path's batch passes
