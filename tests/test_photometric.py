"""Batched photometric ops (views.photometric=device) against torchvision's per-image ops."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import default_collate
from torchvision.transforms.v2 import functional as TF

from jepa_zoo.config import ViewsConfig
from jepa_zoo.data import photometric as P
from jepa_zoo.data.views import MultiView, sigma_kernel

ATOL = 2e-5


def images(n: int = 6, size: int = 20, seed: int = 0) -> torch.Tensor:
    """Random float images in [0, 1] with hard cases: grey pixels, saturated primaries, ties."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    x[0, :, :4] = x[0, :1, :4]  # grey (zero chroma)
    x[1, :, :2, :] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)  # pure red
    x[1, :, 2:4, :] = torch.tensor([1.0, 1.0, 0.0]).view(3, 1, 1)  # R = G = max
    x[1, :, 4:6, :] = torch.tensor([0.0, 0.5, 0.5]).view(3, 1, 1)  # G = B = max
    x[2] = torch.zeros(3, size, size)  # black
    return x


def per_image(fn, x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return torch.stack([fn(xi, float(v)) for xi, v in zip(x, values)])


@pytest.mark.parametrize("ours, theirs, lo, hi", [
    (P.adjust_brightness, TF.adjust_brightness, 0.0, 2.0),
    (P.adjust_contrast, TF.adjust_contrast, 0.0, 2.0),
    (P.adjust_saturation, TF.adjust_saturation, 0.0, 2.0),
    (P.adjust_hue, TF.adjust_hue, -0.5, 0.5),
])
def test_each_jitter_op_matches_torchvision_per_sample(ours, theirs, lo, hi):
    x = images()
    v = torch.linspace(lo, hi, x.shape[0])
    torch.testing.assert_close(ours(x, v), per_image(theirs, x, v), atol=ATOL, rtol=0)


def test_identity_factors_leave_the_images_unchanged():
    """The where-free jitter relies on factor 1 (brightness, contrast, saturation) being exact."""
    x = images()
    one = torch.ones(x.shape[0])
    for op in (P.adjust_brightness, P.adjust_contrast, P.adjust_saturation):
        assert torch.equal(op(x, one), x)
    assert (P.adjust_hue(x, torch.zeros(x.shape[0])) - x).abs().max() < 1e-6


def test_grayscale_blur_solarize_match_torchvision():
    x = images()
    torch.testing.assert_close(P.grayscale(x).expand_as(x), TF.rgb_to_grayscale(x, num_output_channels=3),
                               atol=ATOL, rtol=0)
    sigma = torch.tensor([0.1, 0.3, 0.7, 1.0, 1.4, 2.0])
    ours = P.gaussian_blur(x, sigma, 7)
    for i, s in enumerate(sigma.tolist()):
        k = sigma_kernel(s, 7)  # the loader path's kernel for this σ
        torch.testing.assert_close(ours[i], TF.gaussian_blur(x[i], [k, k], [s, s]), atol=ATOL, rtol=0)
    params = P.PhotometricParams(
        jitter=torch.zeros(6, dtype=torch.bool), factors=torch.ones(6, 4), order=torch.arange(4).repeat(6, 1),
        gray=torch.zeros(6, dtype=torch.bool), blur=torch.zeros(6, dtype=torch.bool), sigma=sigma,
        solarize=torch.ones(6, dtype=torch.bool))
    solarized = P.apply_photometric(x, params, [0.0] * 3, [1.0] * 3, 7)
    torch.testing.assert_close(solarized, TF.solarize(x, P.SOLARIZE_THRESHOLD), atol=ATOL, rtol=0)


def reference(x: torch.Tensor, p: P.PhotometricParams, max_kernel: int, threshold: float) -> torch.Tensor:
    """torchvision's functional ops, one image at a time, in the loader path's order (float
    images, or uint8 ones as the loader sees them); not normalised."""
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    out = []
    for i, xi in enumerate(x):
        if p.jitter[i]:
            for op in p.order[i].tolist():
                xi = ops[op](xi, float(p.factors[i, op]))
        if p.gray[i]:
            xi = TF.rgb_to_grayscale(xi, num_output_channels=3)
        if p.blur[i]:
            k = sigma_kernel(float(p.sigma[i]), max_kernel)
            xi = TF.gaussian_blur(xi, [k, k], [float(p.sigma[i])] * 2)
        if p.solarize[i]:
            xi = TF.solarize(xi, threshold)
        out.append(xi)
    return torch.stack(out)


def test_apply_photometric_matches_torchvision_composition():
    x = images(n=24, seed=1)
    torch.manual_seed(3)
    draws = [P.draw_params([0.4, 0.4, 0.2, 0.1], 0.8, 0.3, 0.5, 0.3) for _ in range(24)]
    p = default_collate(draws)
    assert isinstance(p, P.PhotometricParams) and p.factors.shape == (24, 4)
    assert p.jitter.any() and p.blur.any() and p.solarize.any() and p.gray.any()
    assert len({tuple(o) for o in p.order.tolist()}) > 1  # several orders in one batch
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    want = TF.normalize(reference(x, p, 7, P.SOLARIZE_THRESHOLD), mean, std)
    torch.testing.assert_close(P.apply_photometric(x, p, mean, std, 7), want, atol=1e-4, rtol=0)


def test_uint8_input_agrees_with_the_loader_path_to_a_few_levels():
    """torchvision on uint8 rounds between ops; the device path stays in float."""
    x8 = (images(n=16, seed=2) * 255).round().to(torch.uint8)
    torch.manual_seed(5)
    p = default_collate([P.draw_params([0.4, 0.4, 0.2, 0.1], 0.8, 0.2, 0.5, 0.2) for _ in range(16)])
    ours = P.apply_photometric(x8, p, [0.0] * 3, [1.0] * 3, 7)
    diff = (ours * 255 - reference(x8, p, 7, 128).float()).abs()
    means, worst = diff.mean(dim=(1, 2, 3)), diff.amax(dim=(1, 2, 3))
    assert means.max() < 2.0 and worst.max() <= 6, (means, worst)


def test_draws_follow_the_configured_distributions():
    torch.manual_seed(0)
    n = 4000
    p = default_collate([P.draw_params([0.4, 0.3, 0.2, 0.1], 0.8, 0.2, 0.5, 0.1) for _ in range(n)])
    for field, prob in (("jitter", 0.8), ("gray", 0.2), ("blur", 0.5), ("solarize", 0.1)):
        rate = getattr(p, field).float().mean().item()
        assert abs(rate - prob) < 4 * (prob * (1 - prob) / n) ** 0.5, (field, rate)
    lo = torch.tensor([0.6, 0.7, 0.8, -0.1])
    hi = torch.tensor([1.4, 1.3, 1.2, 0.1])
    assert (p.factors >= lo).all() and (p.factors <= hi).all()
    assert (p.factors.amin(0) - lo).abs().max() < 0.01 and (p.factors.amax(0) - hi).abs().max() < 0.01
    assert (p.sigma >= 0.1).all() and (p.sigma <= 2.0).all()
    assert (p.order.sort(dim=1).values == torch.arange(4)).all()
    first = torch.bincount(p.order[:, 0], minlength=4).float() / n
    assert (first - 0.25).abs().max() < 0.03  # each op first about a quarter of the time


def test_bad_inputs_are_named():
    x = images()[:2]
    p = default_collate([P.draw_params([0.4] * 3 + [0.1], 0.8, 0.2, 0.5, 0.2) for _ in range(3)])
    with pytest.raises(ValueError, match="3 views do not match 2 images"):
        P.apply_photometric(x, p, [0.0] * 3, [1.0] * 3, 3)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        P.apply_photometric(x[:, :1], p, [0.0] * 3, [1.0] * 3, 3)
    with pytest.raises(ValueError, match="hue <= 0.5"):
        P.jitter_ranges([0.4, 0.4, 0.4, 0.7])


def test_multiview_on_device_returns_uint8_crops_and_their_draws():
    from PIL import Image

    img = Image.fromarray((torch.rand(40, 50, 3) * 255).to(torch.uint8).numpy())
    cfg = ViewsConfig(num_global=2, global_size=32, num_local=3, local_size=16, photometric="device")
    views = MultiView(cfg, [0.5] * 3, [0.25] * 3)(img)
    assert len(views) == 5
    assert [tuple(v[0].shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(v[0].dtype == torch.uint8 and isinstance(v[1], P.PhotometricParams) for v in views)
    with pytest.raises(Exception, match="photometric"):
        ViewsConfig(photometric="gpu")


@pytest.mark.integration
def test_compile_true_compiles_the_device_ops_into_one_graph():
    """compile=true: LeJEPA's device photometric ops run compiled by the datamodule (fullgraph: no
    graph break) and give the eager result."""
    from jepa_zoo.config import BackboneConfig, TrainConfig
    from jepa_zoo.methods.lejepa import LeJEPAConfig
    from jepa_zoo.methods.lejepa import LeJEPA

    views = ViewsConfig(global_size=16, local_size=8, num_local=1, photometric="device")
    backbone = BackboneConfig(kind="vit", name="vit_tiny_patch16_224", img_size=16, patch_size=8, kwargs={"depth": 1})
    model = LeJEPA(TrainConfig(method=LeJEPAConfig(proj_hidden_dim=16, proj_dim=8, num_slices=8, views=views),
                               backbone=backbone, compile=True))
    from jepa_zoo.data.batch import Batch
    from jepa_zoo.data.datamodule import JEPADataModule

    dm = JEPADataModule(model.cfg.data, LeJEPA.train_transform(model.cfg), compile_photometric=True)
    assert dm.device_photometric.fn is not P.apply_photometric
    x = (images(n=8, size=16, seed=4) * 255).to(torch.uint8)
    torch.manual_seed(1)
    p = default_collate([P.draw_params([0.4, 0.4, 0.2, 0.1], 0.8, 0.2, 0.5, 0.2) for _ in range(8)])
    eager = P.apply_photometric(x, p, model.cfg.data.mean, model.cfg.data.std, 3)
    views, _ = dm.device_views(Batch([(x, p), (x, p), (x[:, :, :8, :8], p)], torch.arange(8)), torch.float32)
    torch.testing.assert_close(views[0], eager, atol=1e-5, rtol=0)


def test_traffic_benchmark_counts_bytes(capsys, monkeypatch):
    """benchmarks/photometric_traffic.py (the GPU cost estimate in docs/performance.md) runs and
    its count scales with the batch it reports."""
    import json
    import runpy
    import sys

    from conftest import REPO

    script = str(REPO / "benchmarks" / "photometric_traffic.py")
    out = []
    for batch in (64, 128):
        monkeypatch.setattr(sys, "argv", [script, "--sample", "2", "--views", "16x1", "--batch", str(batch),
                                         "--bandwidth", "1e9"])
        runpy.run_path(script, run_name="__main__")
        out.append(json.loads(capsys.readouterr().out))
    assert out[0]["fp32_passes"] == out[1]["fp32_passes"] > 20 and out[0]["kernels_per_batch"] > 50
    assert out[0]["est_ms_per_batch"] > 5
    assert out[1]["est_ms_per_batch"] == pytest.approx(2 * out[0]["est_ms_per_batch"], abs=0.2)


SYNCING_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "item", "_assert_async", "repeat_interleave"}


def test_no_op_would_wait_for_the_device(monkeypatch):
    """The ops run on the meta device (no data) under a dispatch mode: none is an op that reads a
    value back to the host (``.item()``, boolean-mask indexing -> ``nonzero``, a data-dependent
    output size) and no op takes a CPU tensor (a tensor built from host values, copied with a
    blocking transfer).  On CPU, test_host_sync's probe cannot see such copies; this can."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    seen, host = set(), []

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            seen.add(name)
            tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            if any(t.device.type != "meta" for t in tensors) or (kwargs or {}).get("device") not in (None, "meta",
                                                                                                 torch.device("meta")):
                host.append(name)
            return func(*args, **(kwargs or {}))

    from jepa_zoo.data.actions import IWMViews

    lejepa = P.DevicePhotometric(MultiView(ViewsConfig(global_size=24, local_size=12, num_local=1,
                                                       photometric="device"), [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]))
    iwm = P.DevicePhotometric(IWMViews(24, photometric="device"))
    torch.manual_seed(0)
    p = default_collate([P.draw_params([0.4, 0.4, 0.2, 0.1], 0.8, 0.2, 0.5, 0.2) for _ in range(4)])
    p = P.PhotometricParams(*(t.to("meta") for t in p))
    for name in ("tensor", "as_tensor"):  # host data straight to a device: invisible to the mode on meta
        real = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, _real=real, _name=name, **k: host.append(_name) or _real(*a, **k))
    x = torch.empty(4, 3, 24, 24, dtype=torch.uint8, device="meta")
    with Ops():
        y = P.apply_photometric(x, p, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3], 7)
        # the whole device path as the datamodule runs it after the transfer: LeJEPA's views, IWM's pair
        views = lejepa([(x, p), (x, p), (x[..., :12, :12], p)], torch.bfloat16)
        pair = iwm((x, p, p, torch.empty(4, 7, device="meta")), torch.bfloat16)
    assert [tuple(v.shape) for v in views] == [(4, 3, 24, 24)] * 2 + [(4, 3, 12, 12)]
    assert [tuple(v.shape) for v in pair[:2]] == [(4, 3, 24, 24)] * 2
    assert y.device.type == "meta" and y.shape == (4, 3, 24, 24)
    assert {"lerp", "convolution", "aminmax", "sort"} <= seen  # the probe sees the ops
    assert not seen & SYNCING_OPS and not host, (seen & SYNCING_OPS, host)


def test_a_bf16_default_dtype_changes_nothing():
    """Lightning's bf16-true step runs with bf16 as the default dtype: constants stay float32."""
    x = images(n=8, seed=6)
    torch.manual_seed(2)
    p = default_collate([P.draw_params([0.4, 0.4, 0.2, 0.1], 0.8, 0.2, 0.5, 0.2) for _ in range(8)])
    ref = P.apply_photometric(x, p, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3], 7)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        out = P.apply_photometric(x, p, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3], 7)
    finally:
        torch.set_default_dtype(old)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_iwm_views_on_device_equal_the_loader_views():
    """IWM's loader path computes in float too: with the same draws, the source and target made on
    the device from the shared crop are its views (fixed jitter order, solarize at 0.5)."""
    from PIL import Image

    from jepa_zoo.data.actions import IWMViews
    from jepa_zoo.data.views import blur_kernel

    img = Image.fromarray((images(n=3, size=48, seed=7)[0].permute(1, 2, 0) * 255).to(torch.uint8).numpy())
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    kw = dict(jitter_p=0.9, grayscale_p=0.4, blur_p=0.5, solarize_p=0.5, mean=mean, std=std)
    loader = IWMViews(32, **kw, generator=torch.Generator().manual_seed(0))
    device = IWMViews(32, **kw, generator=torch.Generator().manual_seed(0), photometric="device")
    torch.manual_seed(11)
    want = [loader.views(img) for _ in range(12)]
    torch.manual_seed(11)  # the crops come from torch's generator, the draws from `generator`
    got = default_collate([device(img) for _ in range(12)])
    crop, src, tgt, action = got
    assert crop.dtype == torch.uint8 and (src.order == torch.arange(4)).all()  # the fixed order
    assert src.blur.any() and src.solarize.any() and src.gray.any() and not tgt.gray.any()
    both = P.apply_photometric(torch.cat([crop, crop]), P.PhotometricParams(*(torch.cat(f) for f in zip(src, tgt))),
                               mean, std, blur_kernel(32), solarize_threshold=0.5)
    torch.testing.assert_close(both[:12], torch.stack([w[0] for w in want]), atol=1e-5, rtol=0)
    torch.testing.assert_close(both[12:], torch.stack([w[1] for w in want]), atol=1e-5, rtol=0)
    assert torch.equal(action, torch.stack([w[2] for w in want]))
    source, target, actions = device.on_device(got)  # what the training module calls after the transfer
    torch.testing.assert_close(torch.cat([source, target]), both, atol=1e-6, rtol=0)
    assert actions is action
    with pytest.raises(ValueError, match="photometric=device expects"):
        device.on_device((source, target, actions))  # a loader batch, refused by name


def test_the_cpu_shortcuts_give_what_every_op_gives(monkeypatch):
    """On the CPU, ops and jitter passes that no view needs are skipped and only the blurred views are
    blurred, over the taps their σ reach; an accelerator runs every op for every view.  Both give
    the same views (a mix of flags, shuffled and fixed jitter orders)."""
    x = (images(n=12, size=24, seed=9) * 255).to(torch.uint8)
    torch.manual_seed(3)
    p = P.stack_params([P.draw_params([0.4, 0.4, 0.2, 0.1], 0.5, 0.3, 0.4, 0.3, shuffle=i % 2 == 0)
                        for i in range(12)])
    assert p.blur.any() and not p.blur.all() and p.jitter.any() and not p.jitter.all()
    fast = P.apply_photometric(x, p, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3], 7)
    monkeypatch.setattr(P, "_host_free", lambda t: False)
    full = P.apply_photometric(x, p, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3], 7)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)
