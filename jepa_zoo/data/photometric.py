"""Photometric view ops (LeJEPA, IWM) on a whole batch, on the training device.

``method.views.photometric=loader`` (the default) builds every view in a loader worker with
:func:`jepa_zoo.data.views.view_transform`.  With ``photometric=device`` the worker only decodes,
crops and flips (uint8 views) and draws each view's photometric parameters with
:func:`draw_params` (a dozen numbers, under the sample's seed like every other draw of the
loader); the training step then applies them to the batch at once with
:func:`apply_photometric`.  That moves the costliest part of multi-crop (colour jitter and blur)
from the loader's CPU cores to the accelerator.

The recipe and the parameter distributions are those of ``view_transform`` (torchvision's
``ColorJitter``, ``RandomGrayscale``, ``GaussianBlur``, ``RandomSolarize``), per sample:

* with probability ``jitter_p``, in a random order of the four: brightness ``b``, contrast
  ``c``, saturation ``s`` ~ U[max(0, 1 − v), 1 + v] and hue ``h`` ~ U[−v_h, v_h];
* with probability ``grayscale_p``, grey ``Y = 0.2989 R + 0.587 G + 0.114 B`` on all channels;
* with probability ``blur_p``, a Gaussian blur with σ ~ U[0.1, 2] over ±3σ taps (at most the
  view's kernel), reflect padding;
* with probability ``solarize_p``, ``x ← 1 − x`` where ``x ≥ 128/255``;
* then ``(x − mean) / std``.

IWM (``jepa_zoo.data.actions``) uses these functions for both of its paths, with its own draws: a
fixed jitter order (brightness, contrast, saturation, hue), solarize at 0.5, and the source and
target views of one shared crop, made in one call (in the loader worker, or batched on the device).
The MRR's bank of target views (``jepa_zoo.evaluation.mrr``) is one call too.

Everything is computed in float32 in [0, 1], without the uint8 rounding that torchvision applies
between ops on uint8 images (it truncates after each op), so LeJEPA's two paths differ by one or
two intensity levels on average, a few at most, not bit for bit.  Each op equals torchvision's
functional op on a float image with the same parameters (``tests/test_photometric.py``).  No op reads a tensor on the host: per-sample choices are
``torch.where`` selections, so the step has no host synchronisation.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
SOLARIZE_THRESHOLD = 128 / 255  # RandomSolarize(threshold=128) of the loader path, in [0, 1]
BLUR_SIGMA = (0.1, 2.0)
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
IDENTITY = (1.0, 1.0, 1.0, 0.0)  # jitter factors that change nothing: brightness, contrast, saturation, hue


class PhotometricParams(NamedTuple):
    """One view's photometric draw (shapes below), or a batch of them (a leading ``N``).

    ``default_collate`` and Lightning's device transfer keep the named fields."""

    jitter: Tensor  # () bool: colour jitter applied
    factors: Tensor  # (4,) float: brightness, contrast, saturation, hue
    order: Tensor  # (4,) long: a permutation of the four jitter ops, applied first to last
    gray: Tensor  # () bool
    blur: Tensor  # () bool
    sigma: Tensor  # () float: the blur's σ
    solarize: Tensor  # () bool


def jitter_ranges(jitter: Sequence[float]) -> Tuple[Tuple[float, float], ...]:
    """``ColorJitter``'s ranges for ``[brightness, contrast, saturation, hue]`` strengths."""
    b, c, s, h = (float(v) for v in jitter)
    if min(b, c, s, h) < 0 or h > 0.5:
        raise ValueError(f"jitter strengths must be >= 0 and hue <= 0.5, got {list(jitter)}")
    return (max(0.0, 1 - b), 1 + b), (max(0.0, 1 - c), 1 + c), (max(0.0, 1 - s), 1 + s), (-h, h)


def draw_params(jitter: Sequence[float], jitter_p: float, grayscale_p: float, blur_p: float,
                solarize_p: float, generator: torch.Generator | None = None, shuffle: bool = True) -> PhotometricParams:
    """One view's parameters, drawn from ``generator`` (default: torch's CPU generator).  ``shuffle``:
    the jitter ops in a random order (``ColorJitter``), else brightness, contrast, saturation, hue
    (IWM, whose action names the factors)."""
    u = torch.rand(8, generator=generator)
    lo, hi = torch.tensor(jitter_ranges(jitter)).unbind(1)
    return PhotometricParams(
        jitter=u[0] < jitter_p,
        factors=lo + (hi - lo) * u[4:8],
        order=torch.randperm(4, generator=generator) if shuffle else torch.arange(4),
        gray=u[1] < grayscale_p,
        blur=u[2] < blur_p,
        sigma=BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * torch.rand((), generator=generator),
        solarize=u[3] < solarize_p,
    )


def identity_params(factors: Sequence[float] = IDENTITY) -> PhotometricParams:
    """A view with no photometric op; with ``factors``, only the jitter ``factors`` in the fixed order."""
    return PhotometricParams(
        jitter=torch.tensor(tuple(factors) != IDENTITY), factors=torch.tensor(factors, dtype=torch.float32),
        order=torch.arange(4), gray=torch.tensor(False), blur=torch.tensor(False),
        sigma=torch.tensor(BLUR_SIGMA[0]), solarize=torch.tensor(False))


def stack_params(params: Sequence[PhotometricParams]) -> PhotometricParams:
    """Single views' parameters -> one batch of them (what ``default_collate`` does)."""
    return PhotometricParams(*(torch.stack(field) for field in zip(*params)))


def jitter_factors(p: PhotometricParams) -> Tensor:
    """The jitter factors a view was given, ``(..., 4)``: the identity ``(1, 1, 1, 0)`` where its
    jitter was skipped."""
    identity = torch.tensor(IDENTITY, dtype=p.factors.dtype, device=p.factors.device)
    return torch.where(p.jitter[..., None], p.factors, identity)


def concat_views(views: Sequence[Tuple[Tensor, PhotometricParams]]) -> Tuple[Tensor, PhotometricParams]:
    """Batched views of one size, each ``(crops (N, 3, H, W), parameters)`` -> one batch of ``V·N``,
    view-major (the order in which the step concatenates views for the backbone)."""
    if not all(isinstance(v, (tuple, list)) and len(v) == 2 for v in views):
        raise ValueError("method.views.photometric=device expects each view as (uint8 crops, parameters) from "
                         f"the method's own training transform, got {[type(v).__name__ for v in views]}")
    params = PhotometricParams(*(torch.cat(field) for field in zip(*(v[1] for v in views))))
    return torch.cat([v[0] for v in views]), params


def _host_free(x: Tensor) -> bool:
    """Whether reading a value of ``x`` back to the host is free (the CPU, not compiling): then ops
    and passes that no view needs are skipped.  On an accelerator every op runs and each view
    selects its own result, so the step never waits for the device."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def _per_sample(v: Tensor) -> Tensor:
    """``(N,)`` -> ``(N, 1, 1, 1)`` for broadcasting over ``(N, C, H, W)``."""
    return v.view(-1, 1, 1, 1)


def grayscale(x: Tensor) -> Tensor:
    """``(N, 3, H, W) -> (N, 1, H, W)``: ``Y = 0.2989 R + 0.587 G + 0.114 B``."""
    r, g, b = x.unbind(1)
    return r.mul(GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(1)


def blend(x: Tensor, target: Tensor, ratio: Tensor) -> Tensor:
    """``clamp(r·x + (1 − r)·target, 0, 1)`` with one ratio ``r`` per sample (``(N,)``).  A ratio
    of exactly 1 returns ``x`` unchanged (for ``x`` in [0, 1]).  Computed as
    ``target + r·(x − target)`` (``torch.lerp``, one pass)."""
    return torch.lerp(target.expand_as(x), x, _per_sample(ratio)).clamp_(0, 1)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """``clamp(b·x, 0, 1)`` per sample."""
    return (x * _per_sample(factor)).clamp_(0, 1)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the sample's mean grey level."""
    return blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the sample's grey image."""
    return blend(x, grayscale(x), factor)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue by ``shift`` (a fraction of the circle, per sample) keeping S and V.

    With ``V = max(R, G, B)``, chroma ``C = V − min(R, G, B)`` and the hexcone hue
    ``H ∈ [0, 1)`` (0 red, 1/3 green, 2/3 blue; 0 where ``C = 0``), the rotated hue ``H' = H + shift
    mod 1`` gives each channel ``n ∈ {R: 5, G: 3, B: 1}`` as
    ``V − C · clamp(min(k, 4 − k), 0, 1)`` with ``k = (n + 6H') mod 6``.
    """
    r, g, b = x.unbind(1)
    lo, v = torch.aminmax(x, dim=1)
    c = v - lo
    red, green = v == r, v == g
    num = torch.where(red, g - b, torch.where(green, b - r, r - g))  # hue sector offset 0, 2 or 4 below
    offset = torch.where(red, 0.0, torch.where(green, 2.0, torch.full_like(num, 4.0)))
    h6 = torch.where(c > 0, num.div_(torch.where(c > 0, c, 1.0)).add_(offset), 0.0)  # 6H in [-1, 5]
    h6 = h6.add_(6 * shift.view(-1, 1, 1))  # 6H', taken mod 6 below
    k = torch.stack([(n + h6).remainder_(6.0) for n in (5.0, 3.0, 1.0)], dim=1)  # no host-to-device copy
    t = torch.minimum(k, 4 - k).clamp_(0, 1)
    return torch.addcmul(v.unsqueeze(1), c.unsqueeze(1), t, value=-1)


def jitter_blend(x: Tensor, op: Tensor, factor: Tensor, active: Tensor) -> Tensor:
    """Brightness, contrast or saturation, one per sample (``op (N,)`` ∈ {0, 1, 2}), as one blend
    ``clamp(r·x + (1 − r)·t, 0, 1)`` with ``t`` = 0, the mean grey level or the grey image; the
    identity (``r = 1``) where not ``active``."""
    gray = grayscale(x)
    target = torch.where(_per_sample(op == CONTRAST), gray.mean(dim=(1, 2, 3), keepdim=True), gray)
    target = target * _per_sample(op != BRIGHTNESS)
    return blend(x, target, torch.where(active, factor, torch.ones_like(factor)))


def color_jitter(x: Tensor, on: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """``ColorJitter`` per sample: where ``on``, the four ops in the sample's ``order``.

    ``on (N,)`` bool, ``factors (N, 4)``, ``order (N, 4)``.  A sample's sequence is its three
    blends (brightness, contrast, saturation) in their order with the hue rotation somewhere among
    them, so the batch runs the three blend slots with the slots after the hue as the identity,
    the hue rotation once, then the three slots again with those before the hue as the identity:
    seven passes of static shape, the same result as each sample's own sequence."""
    position = torch.arange(4, device=order.device).expand_as(order)
    hue_at = (order == HUE).int().argmax(dim=1)  # (N,)
    slot_pos = torch.where(order == HUE, 4, position).argsort(dim=1)[:, :3]  # blend positions, in order
    slot_op = order.gather(1, slot_pos)
    slot_factor = factors.gather(1, slot_op)
    for before_hue in (True, False):
        for j in range(3):
            active = on & ((slot_pos[:, j] < hue_at) == before_hue)
            if _host_free(x) and not bool(active.any()):
                continue  # an identity pass for every view (on the CPU, where the check is free)
            x = jitter_blend(x, slot_op[:, j], slot_factor[:, j], active)
        if before_hue:
            x = torch.where(_per_sample(on), adjust_hue(x, factors[:, HUE]), x)
    return x


def gaussian_blur(x: Tensor, sigma: Tensor, max_kernel: int) -> Tensor:
    """Separable Gaussian blur with one σ per sample over ``±min(⌈3σ⌉, max_kernel // 2)`` taps
    (the loader path's ``sigma_kernel``): weights ``∝ exp(−t² / 2σ²)`` for ``|t| ≤ ⌈3σ⌉``, zero beyond,
    summing to 1; reflect padding of ``max_kernel // 2``."""
    n, ch, hgt, wid = x.shape
    half = max_kernel // 2
    t = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).view(-1, 1)
    reach = torch.ceil(3 * sigma.double()).view(-1, 1)  # ⌈3σ⌉ in double, as sigma_kernel computes it
    w = torch.exp(-0.5 * (t / s) ** 2) * (t.abs() <= reach)
    w = (w / w.sum(dim=1, keepdim=True)).repeat_interleave(ch, dim=0)  # (N·C, K)
    y = F.pad(x.reshape(1, n * ch, hgt, wid), (half, half, half, half), mode="reflect")
    y = F.conv2d(y, w.view(n * ch, 1, -1, 1), groups=n * ch)
    y = F.conv2d(y, w.view(n * ch, 1, 1, -1), groups=n * ch)
    return y.view(n, ch, hgt, wid)


def apply_photometric(x: Tensor, p: PhotometricParams, mean: Sequence[float], std: Sequence[float],
                      max_kernel: int, solarize_threshold: float = SOLARIZE_THRESHOLD) -> Tensor:
    """uint8 (or float in [0, 1]) views ``(N, 3, H, W)`` and their batched parameters ->
    normalised float32 views: jitter, grey, blur, solarize (``x ≥ solarize_threshold``), normalise
    (the module docstring)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected views of shape (N, 3, H, W), got {tuple(x.shape)}")
    n = x.shape[0]
    if p.factors.shape != (n, 4) or p.order.shape != (n, 4) or p.jitter.shape != (n,):
        raise ValueError(f"parameters for {p.factors.shape[0]} views do not match {n} images")
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    # on the CPU (a loader worker) reading a flag costs nothing: ops no view needs are skipped; on an
    # accelerator, or compiled, every op runs and each view selects its own (no host synchronisation)
    skip = _host_free(x)
    if not skip or bool(p.jitter.any()):
        x = color_jitter(x, p.jitter, p.factors.float(), p.order)
    if not skip or bool(p.gray.any()):
        x = torch.where(_per_sample(p.gray), grayscale(x).expand_as(x), x)
    if not skip:
        x = torch.where(_per_sample(p.blur), gaussian_blur(x, p.sigma, max_kernel), x)
    elif bool(p.blur.any()):  # only the blurred views, over the taps their σ reach (the same values)
        idx = p.blur.nonzero().flatten()
        reach = min(max_kernel // 2, math.ceil(3 * float(p.sigma[idx].double().max())))
        x = x.index_copy(0, idx, gaussian_blur(x[idx], p.sigma[idx], 2 * reach + 1))
    if not skip or bool(p.solarize.any()):
        x = torch.where(_per_sample(p.solarize) & (x >= solarize_threshold), 1 - x, x)
    # (x − mean) / std as x·(1/std) + (−mean/std); the per-channel constants are filled on the
    # device, as a tensor built from host values would be a synchronous copy
    f32 = dict(device=x.device, dtype=torch.float32)  # not the default dtype (bf16 under bf16-true)
    scale = torch.stack([torch.full((), 1 / s, **f32) for s in std]).view(1, 3, 1, 1)
    shift = torch.stack([torch.full((), -m / s, **f32) for m, s in zip(mean, std)]).view(1, 3, 1, 1)
    return torch.addcmul(shift, x, scale)


class DevicePhotometric:
    """``views.photometric=device``: a training batch's photometric ops, batched on its device.

    ``transform`` is the method's training transform, which returned uint8 crops and parameters
    and knows its batch's layout: its ``on_device(inputs, fn)`` makes from them the inputs the
    loader path would have given (LeJEPA: the list of views; IWM: source, target, action), with
    ``fn`` (:func:`apply_photometric`, one call per view size).  Called on the batch after its
    transfer to the device (``JEPADataModule.on_after_batch_transfer``), so a method's step has one path."""

    def __init__(self, transform: Any):
        if not callable(getattr(transform, "on_device", None)):
            raise TypeError(f"{type(transform).__name__} has no on_device(inputs, fn): it cannot leave its "
                            "photometric ops to the device")
        self.transform = transform
        self.fn: Callable[..., Tensor] = apply_photometric

    def compile_(self) -> None:
        """``torch.compile`` the ops: one graph per view size, no graph break (their element-wise passes fuse)."""
        self.fn = torch.compile(apply_photometric, dynamic=False, fullgraph=True)

    def __call__(self, inputs: Any, dtype: torch.dtype) -> Any:
        """The batch's inputs with the views made: float32 maths outside autocast, then views cast to
        ``dtype`` (the backbone's: bf16 under bf16-true).  Under bf16-true Lightning has already cast
        the batch's float tensors to bf16 before the transfer hooks, the drawn factors and σ
        included, so the views follow bf16-rounded parameters there."""
        def fn(*args: Any) -> Tensor:
            return self.fn(*args).to(dtype)

        device = next(t for t in _tensors(inputs)).device
        if not torch.amp.is_autocast_available(device.type):  # e.g. the meta device of a test
            return self.transform.on_device(inputs, fn)
        with torch.autocast(device.type, enabled=False):
            return self.transform.on_device(inputs, fn)


def _tensors(x: Any):
    if isinstance(x, Tensor):
        yield x
    elif isinstance(x, (tuple, list)):
        for v in x:
            yield from _tensors(v)
