"""IWM views and the action that maps the source view to the target view.

One crop + flip is shared by source ``x`` and target ``y`` (masking is the
only geometric difference).  Both get their own colour-jitter draw; the
source alone gets the destructive augmentations.  The action is::

    a_{x→y} = [ (b_y − b_x)/r_b, (c_y − c_x)/r_c, (s_y − s_x)/r_s, (h_y − h_x)/r_h,
                gray(x), blur(x), solarize(x) ]                          (7 numbers)

with jitter factors ``b, c, s`` (identity 1) and hue shift ``h`` (identity 0),
ranges ``r = 2·strength`` (0.8, 0.8, 0.4, 0.2 for the default strengths
0.4, 0.4, 0.2, 0.1) so every delta lies in [−1, 1], and 0/1 flags.  A jitter
that is skipped (probability ``1 − jitter_p``) has identity factors, so
identical views give the zero ("null") action.  Jitter is applied in the
fixed order brightness, contrast, saturation, hue (torchvision's ColorJitter
shuffles the order, which would make the numbers mean different things).

All photometric operations run on float images in [0, 1], before normalising.  With
``method.views.photometric=device`` the loader returns the shared uint8 crop and both views'
parameters (:func:`device_params`), and the step makes the two views on the device
(:mod:`jepa_zoo.data.photometric`, the same ops batched).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from jepa_zoo.data.photometric import BLUR_SIGMA, PhotometricParams
from jepa_zoo.data.views import blur_kernel, sigma_kernel


ACTION_DIM = 7
IDENTITY = (1.0, 1.0, 1.0, 0.0)


@dataclass(frozen=True)
class Photometric:
    """The photometric parameters of one view: jitter factors and destructive flags."""

    jitter: Tuple[float, float, float, float] = IDENTITY  # brightness, contrast, saturation, hue
    grayscale: bool = False
    blur_sigma: Optional[float] = None  # None: no blur
    solarize: bool = False


def _uniform(lo: float, hi: float, gen: Optional[torch.Generator]) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def draw_jitter(strength: Sequence[float], p: float, gen: Optional[torch.Generator] = None) -> Tuple[float, ...]:
    """ColorJitter factors: ``b, c, s ~ U[1 − σ, 1 + σ]``, ``h ~ U[−σ_h, σ_h]`` with probability ``p``,
    else the identity ``(1, 1, 1, 0)``."""
    if float(torch.rand((), generator=gen)) >= p:
        return IDENTITY
    sb, sc, ss, sh = strength
    return (_uniform(max(0.0, 1 - sb), 1 + sb, gen), _uniform(max(0.0, 1 - sc), 1 + sc, gen),
            _uniform(max(0.0, 1 - ss), 1 + ss, gen), _uniform(-sh, sh, gen))


def apply_photometric(img: Tensor, ph: Photometric, blur_size: int) -> Tensor:
    """``img`` float ``[3, H, W]`` (or batched) in [0, 1] -> the view, in the fixed order
    brightness, contrast, saturation, hue, grayscale, blur, solarize.  The blur's kernel covers
    ±3σ, at most ``blur_size`` taps (:func:`jepa_zoo.data.views.sigma_kernel`)."""
    b, c, s, h = ph.jitter
    if ph.jitter != IDENTITY:
        img = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(img, b), c), s), h)
    if ph.grayscale:
        img = TF.rgb_to_grayscale(img, num_output_channels=3)
    if ph.blur_sigma is not None:
        k = sigma_kernel(ph.blur_sigma, blur_size)
        img = TF.gaussian_blur(img, [k, k], [ph.blur_sigma, ph.blur_sigma])
    if ph.solarize:
        img = TF.solarize(img, threshold=0.5)
    return img


def device_params(ph: Photometric) -> PhotometricParams:
    """``ph`` for the batched ops: jitter in the fixed order brightness, contrast, saturation, hue
    (applied when not the identity, as :func:`apply_photometric` does)."""
    return PhotometricParams(
        jitter=torch.tensor(ph.jitter != IDENTITY), factors=torch.tensor(ph.jitter, dtype=torch.float32),
        order=torch.arange(4), gray=torch.tensor(ph.grayscale), blur=torch.tensor(ph.blur_sigma is not None),
        sigma=torch.tensor(BLUR_SIGMA[0] if ph.blur_sigma is None else ph.blur_sigma, dtype=torch.float32),
        solarize=torch.tensor(ph.solarize),
    )


def action_vector(source: Photometric, target: Photometric, strength: Sequence[float]) -> Tensor:
    """The 7-number action ``a_{x→y}`` (see the module docstring); float32 ``[7]``."""
    if len(strength) != 4:
        raise ValueError(f"strength must be [brightness, contrast, saturation, hue], got {list(strength)}")
    ranges = [max(2.0 * float(s), 1e-8) for s in strength]
    deltas = [(t - s) / r for t, s, r in zip(target.jitter, source.jitter, ranges)]
    flags = [float(source.grayscale), float(source.blur_sigma is not None), float(source.solarize)]
    return torch.tensor(deltas + flags, dtype=torch.float32)


class IWMViews:
    """PIL image (or uint8 tensor) -> ``(source, target, action)``: normalised ``[3, S, S]`` views and
    the ``[7]`` action.  Random draws use torch's global generator (seeded per sample by the
    training loader) unless ``generator`` is given.  With ``photometric="device"``:
    ``(crop, source parameters, target parameters, action)``, the crop uint8 ``[3, S, S]``."""

    def __init__(
        self,
        size: int,
        crop_scale: Sequence[float] = (0.3, 1.0),
        *,
        flip_p: float = 0.5,
        jitter: Sequence[float] = (0.4, 0.4, 0.2, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: float = 0.2,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        solarize_p: float = 0.1,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        generator: Optional[torch.Generator] = None,
        photometric: str = "loader",
    ):
        if photometric not in ("loader", "device"):
            raise ValueError(f"photometric must be 'loader' or 'device', got {photometric!r}")
        self.photometric = photometric
        self.geometric = v2.Compose([
            v2.ToImage(),
            v2.RandomResizedCrop(size, scale=tuple(crop_scale), antialias=True),
            v2.RandomHorizontalFlip(flip_p),
        ])
        self.to_float = v2.ToDtype(torch.float32, scale=True)
        self.normalize = v2.Normalize(mean=list(mean), std=list(std))
        self.jitter, self.jitter_p = tuple(jitter), jitter_p
        self.grayscale_p, self.blur_p, self.solarize_p = grayscale_p, blur_p, solarize_p
        self.blur_sigma = tuple(blur_sigma)
        self.blur_size = blur_kernel(size)
        self.generator = generator

    def draw(self) -> Tuple[Photometric, Photometric]:
        """One (source, target) parameter draw."""
        g = self.generator
        target = Photometric(draw_jitter(self.jitter, self.jitter_p, g))
        src_jitter = draw_jitter(self.jitter, self.jitter_p, g)
        gray = float(torch.rand((), generator=g)) < self.grayscale_p
        blur = _uniform(*self.blur_sigma, g) if float(torch.rand((), generator=g)) < self.blur_p else None
        sol = float(torch.rand((), generator=g)) < self.solarize_p
        return Photometric(src_jitter, gray, blur, sol), target

    def views(self, img) -> Tuple[Tensor, Tensor, Tensor]:
        """``(source, target, action)`` made here, whatever ``photometric`` says (image panels)."""
        base = self.to_float(self.geometric(img))
        source, target = self.draw()
        x = self.normalize(apply_photometric(base, source, self.blur_size))
        y = self.normalize(apply_photometric(base, target, self.blur_size))
        return x, y, action_vector(source, target, self.jitter)

    def __call__(self, img) -> Tuple[Tensor, ...]:
        if self.photometric == "loader":
            return self.views(img)
        base = self.geometric(img)
        source, target = self.draw()
        return base, device_params(source), device_params(target), action_vector(source, target, self.jitter)

    def __repr__(self) -> str:
        return (f"IWMViews(jitter={self.jitter} p={self.jitter_p}, source-only: grayscale p={self.grayscale_p}, "
                f"blur p={self.blur_p}, solarize p={self.solarize_p}, photometric on the {self.photometric}; "
                f"{self.geometric})")
