import pytest
import torch
import torch.nn.functional as F

from jepa_zoo.config import BackboneConfig, DataConfig, IWMViewsConfig, TrainConfig, validate
from jepa_zoo.methods.iwm import IWMConfig
from jepa_zoo.data.actions import IDENTITY, IWMViews, action_vector
from jepa_zoo.data.photometric import apply_photometric, draw_params, identity_params, jitter_factors, stack_params
from jepa_zoo.evaluation.mrr import chance_mrr, mean_reciprocal_rank, world_model_mrr
from jepa_zoo.methods.iwm import IWM
from jepa_zoo.models.predictor import Predictor
from jepa_zoo.masks.schema import masking_config

STRENGTH = (0.4, 0.4, 0.2, 0.1)


# -- actions ------------------------------------------------------------------------------
def test_action_vector_known_draws():
    yes = torch.tensor(True)
    src = identity_params((0.8, 1.2, 1.0, 0.05))._replace(gray=yes, solarize=yes)
    tgt = identity_params((1.2, 1.0, 0.9, -0.05))
    a = action_vector(src, tgt, STRENGTH)
    # deltas target − source over the ranges 0.8, 0.8, 0.4, 0.2; then the source's flags
    assert a.tolist() == pytest.approx([0.5, -0.25, -0.25, -0.5, 1.0, 0.0, 1.0])
    assert a.shape == (7,) and a.dtype == torch.float32
    assert action_vector(identity_params(), identity_params(), STRENGTH).tolist() == [0.0] * 7
    blurred = identity_params()._replace(blur=yes, sigma=torch.tensor(1.0))
    assert action_vector(blurred, identity_params(), STRENGTH).tolist() == [0.0] * 5 + [1.0, 0.0]
    batched = action_vector(stack_params([src, blurred]), stack_params([tgt, identity_params()]), STRENGTH)
    assert torch.equal(batched, torch.stack([a, action_vector(blurred, identity_params(), STRENGTH)]))


def test_jitter_draws_stay_in_range_and_skip_to_identity():
    g = torch.Generator().manual_seed(0)
    draws = [draw_params(STRENGTH, 1.0, 0.0, 0.0, 0.0, g, shuffle=False) for _ in range(200)]
    for b, c, s, h in (jitter_factors(d).tolist() for d in draws):
        assert 0.6 <= b <= 1.4 and 0.6 <= c <= 1.4 and 0.8 <= s <= 1.2 and -0.1 <= h <= 0.1
    acts = torch.stack([action_vector(d, e, STRENGTH) for d, e in zip(draws, draws[1:])])
    assert acts[:, :4].abs().max() <= 1.0 and acts[:, :4].abs().max() > 0.8  # normalised to about [-1, 1]
    skipped = draw_params(STRENGTH, 0.0, 0.0, 0.0, 0.0, g, shuffle=False)
    assert tuple(jitter_factors(skipped).tolist()) == IDENTITY


def test_identical_views_give_the_null_action():
    views = IWMViews(16, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
    x, y, a = views(torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8))
    assert torch.equal(x, y) and a.tolist() == [0.0] * 7


def test_action_describes_the_images():
    """Brightness-only jitter: target / source pixel ratio is b_y / b_x and a[0]·0.8 = b_y − b_x."""
    views = IWMViews(16, crop_scale=(1.0, 1.0), jitter=(0.4, 0.0, 0.0, 0.0), jitter_p=1.0, grayscale_p=0.0,
                     blur_p=0.0, solarize_p=0.0, mean=(0, 0, 0), std=(1, 1, 1),
                     generator=torch.Generator().manual_seed(3))
    img = torch.full((3, 16, 16), 100, dtype=torch.uint8)  # 100/255 * 1.4 < 1: never clipped
    torch.manual_seed(0)
    x, y, a = views(img)
    ratio = (y / x).mean().item()
    bx = x.mean().item() / (100 / 255)
    by = y.mean().item() / (100 / 255)
    assert ratio == pytest.approx(by / bx, rel=1e-4)
    assert a[0].item() * 0.8 == pytest.approx(by - bx, abs=1e-4)
    assert a[1:].tolist() == [0.0] * 6


def test_destructive_augmentations_are_source_only_and_flagged():
    views = IWMViews(16, jitter_p=0.0, grayscale_p=1.0, blur_p=1.0, solarize_p=1.0,
                     generator=torch.Generator().manual_seed(0))
    x, y, a = views(torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8))
    assert a.tolist() == [0.0] * 4 + [1.0, 1.0, 1.0]
    assert not torch.equal(x, y)
    xr = x * torch.tensor([0.229, 0.224, 0.225])[:, None, None] + torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    assert torch.allclose(xr[0], xr[1], atol=1e-5) and torch.allclose(xr[1], xr[2], atol=1e-5)  # grayscale
    yr = y * torch.tensor([0.229, 0.224, 0.225])[:, None, None] + torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    assert not torch.allclose(yr[0], yr[1], atol=1e-3)  # the target keeps its colours


# -- predictor conditioning ----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["feature", "sequence"])
def test_conditioned_predictor_shapes_and_action_matters(mode):
    torch.manual_seed(0)
    p = Predictor(16, (4, 4), pred_dim=8, depth=2, num_heads=2, conditioning=mode, action_dim=7).eval()
    z, ctx = torch.randn(2, 5, 16), torch.arange(5).expand(2, 5)
    tgt = torch.tensor([[[10, 11], [12, 13]], [[6, 7], [8, 9]]])
    a = torch.randn(2, 7)
    out = p(z, ctx, tgt, a)
    assert out.shape == (2, 2, 2, 16)
    a2 = a.clone()
    a2[1] += 1.0
    out2 = p(z, ctx, tgt, a2)
    assert torch.allclose(out[0], out2[0], atol=1e-6)  # each sample sees its own action only
    assert not torch.allclose(out[1], out2[1], atol=1e-4)
    with pytest.raises(ValueError, match="needs action"):
        p(z, ctx, tgt)


def test_unconditioned_predictor_ignores_actions_and_checks_mode():
    p = Predictor(16, (4, 4), pred_dim=8, depth=1, num_heads=2, conditioning="none", action_dim=7).eval()
    z, ctx, tgt = torch.randn(2, 5, 16), torch.arange(5).expand(2, 5), torch.tensor([[[9, 10]], [[11, 12]]])
    assert torch.equal(p(z, ctx, tgt, torch.randn(2, 7)), p(z, ctx, tgt, torch.randn(2, 7)))
    with pytest.raises(ValueError, match="conditioning must be"):
        Predictor(16, (4, 4), pred_dim=8, depth=1, num_heads=2, conditioning="film", action_dim=7)


# -- MRR ------------------------------------------------------------------------------------
def test_mrr_perfect_constant_and_worst():
    bank = torch.randn(3, 50, 8)
    assert mean_reciprocal_rank(bank.clone(), bank).item() == pytest.approx(1.0)
    # a constant world model: every query the same, so the true item's rank runs over 1..M
    const = bank.mean(dim=1, keepdim=True).expand_as(bank) + 0.01
    assert mean_reciprocal_rank(const, bank).item() == pytest.approx(chance_mrr(50), rel=1e-5)
    assert chance_mrr(256) == pytest.approx(0.0239, abs=1e-4)
    # a hand-made ranking: query 0 is nearest its own item, query 1 is nearest item 0 -> ranks 1, 2
    b = torch.tensor([[[0.0], [1.0]]])
    q = torch.tensor([[[0.1], [0.2]]])
    assert mean_reciprocal_rank(q, b).item() == pytest.approx((1 + 0.5) / 2)
    assert mean_reciprocal_rank(q, b, "cosine").item() > 0
    with pytest.raises(ValueError, match=r"\[B, M, D\]"):
        mean_reciprocal_rank(q[0], b[0])


class PixelWorld:
    """A world model on raw pixels (4x4 patches of a 3x8x8 image): ``exact`` decodes the action back
    to jitter factors and applies them, otherwise it ignores the action."""

    action_strength = STRENGTH
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def __init__(self, exact: bool):
        self.exact = exact

    def _tokens(self, x):
        return x.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).flatten(1, 2).flatten(2)

    def target_features(self, y):
        t = self._tokens(y)
        return F.layer_norm(t, t.shape[-1:])

    def predict_all(self, x, action):
        if not self.exact:
            return self._tokens(x)
        m, s = torch.tensor(self.mean)[:, None, None], torch.tensor(self.std)[:, None, None]
        draws = stack_params([identity_params((1 + float(a[0]) * 0.8, 1 + float(a[1]) * 0.8, 1 + float(a[2]) * 0.4,
                                               float(a[3]) * 0.2)) for a in action])
        return self._tokens(apply_photometric(x * s + m, draws, self.mean, self.std, 3, 0.5))


def test_world_model_mrr_perfect_and_action_blind():
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(2, 3, 8, 8, generator=g)
    perfect = world_model_mrr(PixelWorld(True), imgs, PixelWorld.mean, PixelWorld.std, 32,
                              generator=torch.Generator().manual_seed(1))
    blind = world_model_mrr(PixelWorld(False), imgs, PixelWorld.mean, PixelWorld.std, 32,
                            generator=torch.Generator().manual_seed(1))
    assert perfect["mrr"] == pytest.approx(1.0)
    assert blind["mrr"] == pytest.approx(chance_mrr(32), rel=1e-4) == pytest.approx(blind["chance"])


# -- the method -----------------------------------------------------------------------------
def tiny_cfg(**method) -> TrainConfig:
    return TrainConfig(
        method=IWMConfig(pred_depth=1, **method),
        backbone=BackboneConfig(img_size=32, patch_size=4, kwargs={"depth": 1}),
        masking=masking_config("multiblock"),
        data=DataConfig(name="fake", img_size=32),
    )


@pytest.mark.parametrize("conditioning", ["feature", "sequence", "none"])
def test_iwm_step_trains_context_encoder_and_predictor_only(conditioning):
    torch.manual_seed(0)
    model = IWM(tiny_cfg(conditioning=conditioning), num_classes=10)
    assert model.predictor.proj.in_features == 96  # half the ViT-tiny width
    tf, collate = IWM.train_transform(model.cfg), IWM.collate_fn(model.cfg)
    batch = collate([(tf(torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)), i) for i in range(4)])
    (src, tgt_img, action), ctx, tgt, labels = batch
    assert src.shape == tgt_img.shape == (4, 3, 32, 32) and action.shape == (4, 7) and tgt.shape[:2] == (4, 4)
    out = model.step(batch)
    assert torch.isfinite(out.loss) and out.features.shape == (4, 192) and "pred_cos" in out.logs
    out.loss.backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert model.backbone.model.patch_embed.proj.weight.grad is not None
    assert model.predictor.mask_token.grad is not None
    if conditioning == "feature":
        assert model.predictor.action_mlp[0].weight.grad is not None
    # the world model on whole images, with and without an action
    model.eval()
    with torch.no_grad():
        null = model.predict_all(src[:2])
        moved = model.predict_all(src[:2], torch.ones(2, 7))
    assert null.shape == (2, 64, 192)
    assert torch.allclose(null, moved) == (conditioning == "none")


def test_iwm_presets_compose(compose_cfg):
    equi = validate(compose_cfg("method=iwm", "data.root=/x"))
    inv = validate(compose_cfg("method=iwm_inv", "data.root=/x"))
    strong = validate(compose_cfg("method=iwm_strong_aug", "data.root=/x"))
    assert isinstance(equi.method, IWMConfig) and equi.masking.name == "multiblock"
    assert (equi.method.pred_depth, inv.method.pred_depth) == (18, 12)
    assert equi.method.loss == "mse" and equi.method.conditioning == "feature" and equi.method.mrr.enabled
    assert equi.method.views == IWMViewsConfig() and strong.method.views.jitter_p == 1.0
    from jepa_zoo.config import ConfigError

    with pytest.raises(ConfigError, match="method.conditioning"):
        validate(compose_cfg("method=iwm", "method.conditioning=film", "data.root=/x"))
