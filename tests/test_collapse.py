"""``collapse=ema|frozen|sigreg|vicreg`` (jepa_zoo/methods/collapse.py): the target part and the regulariser
follow the group, not the method; the old keys (method.ema, method.lambd) keep their meaning."""

import dataclasses

import pytest
import torch

from jepa_zoo.config import ConfigError, validate, validate_saved
from jepa_zoo.losses.vicreg import covariance_loss, variance_loss, vicreg_terms
from jepa_zoo.masks.collator import MaskCollator, VideoMaskCollator
from jepa_zoo.masks.schema import masking_config
from jepa_zoo.methods import build_model

IJEPA = ("method=ijepa", "data=fake", "+backbone.kwargs.depth=1", "method.pred_depth=1", "data.img_size=32",
         "backbone.patch_size=4")
VJEPA = ("method=vjepa", "data=moving_shapes", "+backbone.kwargs.depth=1", "method.pred_depth=1")


def ijepa_batch(model, n=4):
    torch.manual_seed(1)
    return MaskCollator(model.backbone.grid_size, model.cfg.masking)([(torch.randn(3, 32, 32), i) for i in range(n)])


@pytest.mark.parametrize("method", ["ijepa", "vjepa"])
def test_sigreg_replaces_the_ema_teacher_and_trains_through_the_targets(compose_cfg, method):
    args = IJEPA if method == "ijepa" else VJEPA
    tc = validate(compose_cfg(*args, "collapse=sigreg"))
    assert tc.collapse.name == "sigreg" and tc.collapse.weight == 0.05 and tc.collapse.mix == "convex"
    model = build_model(tc)
    parts = model.parts()
    assert model.target_encoder is None and model.collapse.ema is None and parts.target == "none"
    assert parts.regulariser == "sigreg" and parts.eval_encoder is model.backbone
    assert not any(k.startswith("target_encoder.") for k in model.state_dict())
    if method == "ijepa":
        batch = ijepa_batch(model)
    else:
        batch = VideoMaskCollator(model.backbone.grid_size, tc.masking)([(torch.randn(3, 8, 32, 32), 0)] * 4)
    out = model.step(batch)
    logs = out.logs
    assert {"pred_loss", "sigreg_loss"} <= set(logs)
    torch.testing.assert_close(out.loss.detach(), 0.95 * logs["pred_loss"] + 0.05 * logs["sigreg_loss"])
    # the targets come from the online encoder with gradients: the patch embedding, which only the
    # target pass sees for masked-out patches, gets a gradient from SIGReg alone too
    sig = model.collapse.regularise(model.sigreg, torch.randn(4, model.backbone.embed_dim, requires_grad=True), 0)
    assert sig["sigreg_loss"].requires_grad
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.backbone.named_parameters() if p.requires_grad)


def test_the_default_is_each_papers_and_the_old_keys_keep_their_meaning(compose_cfg):
    ijepa = validate(compose_cfg(*IJEPA))
    assert ijepa.collapse.name == "ema" and ijepa.collapse.momentum == [0.996, 1.0]
    assert validate(compose_cfg(*IJEPA, "method.ema=[0.9,0.99]")).collapse.momentum == [0.9, 0.99]
    assert validate(compose_cfg(*IJEPA, "method.ema=[0.9,0.99]", "collapse.momentum=[0.5,0.6]")).collapse.momentum \
        == [0.5, 0.6]  # the group's key wins
    assert validate(compose_cfg(*VJEPA)).collapse.momentum == [0.998, 1.0]
    assert validate(compose_cfg("method=vjepa2", "data=moving_shapes")).collapse.momentum == [0.99925, 0.99925]
    lejepa = validate(compose_cfg("method=lejepa", "data=fake", "method.lambd=0.02"))
    assert (lejepa.collapse.name, lejepa.collapse.weight, lejepa.collapse.num_slices) == ("sigreg", 0.02, 1024)
    assert validate(compose_cfg("method=lejepa", "data=fake", "collapse.weight=0.1")).collapse.weight == 0.1


@pytest.mark.parametrize("overrides, message", [
    (("method=lejepa", "data=fake", "collapse=ema"), "collapse: method=lejepa takes collapse=sigreg|vicreg, got ema"),
    ((*IJEPA, "collapse=ema", "collapse.weight=0.1"), "collapse.weight: is not a key of collapse=ema"),
    ((*IJEPA, "collapse=vicreg", "collapse.idm_weight=1"), "collapse.idm_weight: the inverse-dynamics term needs"),
    ((*IJEPA, "collapse=sigreg", "collapse.weight=2"), "collapse.weight: must be in [0, 1] with collapse.mix=convex"),
])
def test_a_combination_that_cannot_work_is_one_line_naming_the_key(compose_cfg, overrides, message):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(*overrides))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_a_checkpoint_written_before_the_group_loads_with_its_ema(compose_cfg):
    saved = dataclasses.asdict(validate(compose_cfg(*IJEPA, "method.ema=[0.9,0.95]")))
    del saved["collapse"]
    tc = validate_saved(saved)
    assert tc.collapse.name == "ema" and tc.collapse.momentum == [0.9, 0.95]


def test_frozen_keeps_its_target_and_vicreg_adds_its_terms(compose_cfg):
    frozen = build_model(validate(compose_cfg(*IJEPA, "collapse=frozen")))
    before = [p.clone() for p in frozen.target_encoder.parameters()]
    with torch.no_grad():
        for p in frozen.backbone.parameters():
            p.add_(1.0)
    frozen.fixed_schedule = (10, 0)  # (total, warm-up) steps without a Trainer
    frozen.after_optimizer_step()  # an EMA would move the target towards the changed encoder
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.target_encoder.parameters()))
    # the probe trains on the frozen encoder's pooled features, and validation reads the same encoder
    assert frozen.eval_encoder is frozen.target_encoder and frozen.parts().target == "frozen"
    batch = ijepa_batch(frozen)
    with torch.no_grad():
        torch.testing.assert_close(frozen.step(batch).features, frozen.eval_encoder(batch.inputs))

    vic = build_model(validate(compose_cfg(*IJEPA, "collapse=vicreg")))
    out = vic.step(ijepa_batch(vic))
    c = vic.cfg.collapse
    expected = out.logs["pred_loss"] + c.var_weight * out.logs["var_loss"] + c.cov_weight * out.logs["cov_loss"]
    torch.testing.assert_close(out.loss.detach(), expected)


def test_vicreg_terms():
    torch.manual_seed(0)
    assert variance_loss(torch.ones(64, 8)).item() == pytest.approx(1 - 1e-2)  # collapsed: γ − sqrt(ε)
    assert variance_loss(2 * torch.randn(4096, 8)).item() == 0.0
    assert covariance_loss(torch.randn(4096, 8)).item() < 0.01
    x = torch.randn(4096, 1)
    assert covariance_loss(torch.cat([x, x], dim=1)).item() == pytest.approx(1.0, rel=0.1)  # 2·C_01² / D = 1
    both = vicreg_terms(torch.stack([torch.ones(16, 4), torch.randn(16, 4)]))
    assert set(both) == {"var_loss", "cov_loss"}


def test_lejepa_default_loss_is_unchanged():
    """The SIGReg part gives LeJEPA's loss exactly as the pure function does: (1 − λ)·pred + λ·SIGReg."""
    from jepa_zoo.losses.jepa import lejepa_loss
    from jepa_zoo.losses.sigreg import SIGReg
    from jepa_zoo.methods.collapse import Collapse
    from jepa_zoo.models.parts import CollapseConfig

    torch.manual_seed(0)
    proj = torch.randn(4, 16, 8)
    sigreg = SIGReg(32, seed=3)
    ref = lejepa_loss(proj, 2, lambda z: sigreg(z, 5), 0.05)
    c = Collapse(CollapseConfig(name="sigreg", weight=0.05, mix="convex", num_slices=32, t_max=3.0, num_points=17))
    from jepa_zoo.losses.jepa import multiview_prediction_loss

    terms = c.regularise(sigreg, proj, 5)
    assert torch.equal(c.loss(multiview_prediction_loss(proj, 2), terms), ref["loss"])


@pytest.mark.integration
def test_ijepa_with_sigreg_trains_and_saves_no_teacher(compose_cfg, tmp_path):
    """``method=ijepa collapse=sigreg`` through ``jepa_zoo.train.run``: the SIGReg term is logged, the
    checkpoint holds no target encoder and says which collapse it was trained with."""
    import jepa_zoo.train as train
    from test_train_entry import read_metrics

    train.run(compose_cfg(*IJEPA, "collapse=sigreg", "trainer.max_steps=2", "trainer.log_every_n_steps=1",
                          "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                          "monitors.knn=false", "monitors.rankme=false", "images.enabled=false"))
    rows = [r for r in read_metrics(tmp_path) if r.get("train/sigreg_loss")]
    assert len(rows) == 2 and all(float(r["train/sigreg_loss"]) > 0 for r in rows)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("target_encoder.") for k in ckpt["state_dict"])
    assert ckpt["hyper_parameters"]["cfg"]["collapse"]["name"] == "sigreg"


def test_a_method_that_declares_no_collapse_gets_none(monkeypatch):
    """A method of one's own (tests/toy) that prevents collapse itself is given no EMA teacher."""
    from conftest import REPO
    from jepa_zoo.config import TrainConfig
    from jepa_zoo.models.schema import BackboneConfig

    monkeypatch.syspath_prepend(str(REPO / "tests" / "toy"))
    from toy_method import ToyConfig

    model = build_model(TrainConfig(method=ToyConfig(module="toy_method"),
                                    backbone=BackboneConfig(img_size=32, patch_size=8, kwargs={"depth": 1})))
    assert model.cfg.collapse.name == "none" and model.target_encoder is None and model.sigreg is None
    assert model.parts().target == "none" and model.eval_encoder is model.backbone


def test_a_method_builds_its_own_encoder_and_the_target_follows(compose_cfg):
    """``build_encoder``: the hook a method with another shape of encoder overrides; the EMA target copies it."""
    from jepa_zoo.methods.ijepa import IJEPA as IJEPAModule
    from jepa_zoo.models.backbones import build_backbone

    built = []

    class Mine(IJEPAModule):
        def build_encoder(self, cfg):
            built.append(build_backbone(cfg.backbone))
            return built[-1]

    model = Mine(validate(compose_cfg(*IJEPA)))
    assert model.backbone is built[0] and model.parts().encoder is built[0]
    assert type(model.target_encoder) is type(built[0]) and model.target_encoder is not built[0]


def test_a_config_made_in_code_with_a_named_collapse_gets_its_paper_values():
    """``TrainConfig(collapse=CollapseConfig(name=...))`` without validate: the null keys are filled as
    validation fills them (the module resolves them itself)."""
    from jepa_zoo.config import TrainConfig
    from jepa_zoo.methods.ijepa import IJEPAConfig
    from jepa_zoo.models.parts import CollapseConfig
    from jepa_zoo.models.schema import BackboneConfig

    backbone = BackboneConfig(img_size=32, patch_size=4, kwargs={"depth": 1})
    for name in ("ema", "sigreg"):
        model = build_model(TrainConfig(method=IJEPAConfig(pred_depth=1, pred_dim=24), backbone=backbone,
                                        masking=masking_config("multiblock"), collapse=CollapseConfig(name=name)))
        assert model.cfg.collapse.momentum == ([0.996, 1.0] if name == "ema" else None)
        assert model.cfg.collapse.weight == (0.05 if name == "sigreg" else None)


def test_a_video_method_declared_the_old_way_takes_clips():
    from jepa_zoo.config import MethodConfig
    from jepa_zoo.registry import MethodSpec

    spec = MethodSpec("myvid", object, MethodConfig, video=True)
    assert spec.inputs == "clip" and MethodSpec("v", object, MethodConfig, inputs="clip").video


def test_a_method_keeping_its_own_ema_target_under_collapse_none_still_builds(monkeypatch):
    """The pattern methods of one's own used before collapse= (models/ema.py): a target encoder of its own."""
    from conftest import REPO
    from jepa_zoo.config import TrainConfig
    from jepa_zoo.models.ema import EMATeacher, make_target
    from jepa_zoo.models.schema import BackboneConfig

    monkeypatch.syspath_prepend(str(REPO / "tests" / "toy"))
    from toy_method import Toy, ToyConfig

    class WithTarget(Toy):
        def __init__(self, cfg, num_classes=None):
            super().__init__(cfg, num_classes)
            self.target_encoder = make_target(self.backbone)
            self.ema = EMATeacher(0.99, 1.0)

    model = WithTarget(TrainConfig(method=ToyConfig(module="toy_method"),
                                   backbone=BackboneConfig(img_size=32, patch_size=8, kwargs={"depth": 1})))
    assert model.parts().named(model)["target_encoder"] == "target_encoder"
    assert model.parts().predictor is model._modules.get("predictor")  # an undeclared predictor is still seen
