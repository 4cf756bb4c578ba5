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

The parameters are :class:`~jepa_zoo.data.photometric.PhotometricParams` drawn with
:func:`~jepa_zoo.data.photometric.draw_params` (fixed order), and both views are made by one
call of :func:`~jepa_zoo.data.photometric.apply_photometric` on the shared crop, in float in
[0, 1] before normalising: in the loader worker (``method.views.photometric=loader``) or, with
``photometric=device``, batched on the training device (the loader then returns the uint8 crop,
both draws and the action).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor
from torchvision.transforms import v2

from jepa_zoo.data.photometric import (IDENTITY, PhotometricParams, apply_photometric, draw_params, jitter_factors,
                                       stack_params)
from jepa_zoo.data.views import blur_kernel, crop_transform

ACTION_DIM = 7
SOLARIZE_THRESHOLD = 0.5  # IWM solarizes float images at 0.5
__all__ = ["ACTION_DIM", "IDENTITY", "IWMViews", "SOLARIZE_THRESHOLD", "action_vector"]


def action_vector(source: PhotometricParams, target: PhotometricParams, strength: Sequence[float]) -> Tensor:
    """The 7-number action ``a_{x→y}`` (see the module docstring), float32 ``[7]`` for one view's
    parameters or ``[N, 7]`` for a batch of them."""
    if len(strength) != 4:
        raise ValueError(f"strength must be [brightness, contrast, saturation, hue], got {list(strength)}")
    ranges = torch.tensor([max(2.0 * float(s), 1e-8) for s in strength])
    deltas = (jitter_factors(target).float() - jitter_factors(source).float()) / ranges.to(source.factors.device)
    flags = torch.stack([source.gray, source.blur, source.solarize], dim=-1).float()
    return torch.cat([deltas, flags], dim=-1)


class IWMViews:
    """PIL image (or uint8 tensor) -> ``(source, target, action)``: normalised ``[3, S, S]`` views and
    the ``[7]`` action.  Random draws use torch's global generator (seeded per sample by the
    training loader) unless ``generator`` is given.  With ``photometric="device"``:
    ``(crop, source parameters, target parameters, action)``, the crop uint8 ``[3, S, S]``, and
    :meth:`on_device` makes the views from a batch of them."""

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
        solarize_p: float = 0.1,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        generator: Optional[torch.Generator] = None,
        photometric: str = "loader",
    ):
        if photometric not in ("loader", "device"):
            raise ValueError(f"photometric must be 'loader' or 'device', got {photometric!r}")
        self.photometric = photometric
        self.geometric: v2.Compose = crop_transform(size, crop_scale, flip_p)
        self.mean, self.std = tuple(mean), tuple(std)
        self.jitter, self.jitter_p = tuple(jitter), jitter_p
        self.grayscale_p, self.blur_p, self.solarize_p = grayscale_p, blur_p, solarize_p
        self.blur_size = blur_kernel(size)
        self.generator = generator

    def draw(self) -> Tuple[PhotometricParams, PhotometricParams]:
        """One (source, target) parameter draw: both jittered, the source alone grey / blurred / solarized."""
        g = self.generator
        target = draw_params(self.jitter, self.jitter_p, 0.0, 0.0, 0.0, g, shuffle=False)
        source = draw_params(self.jitter, self.jitter_p, self.grayscale_p, self.blur_p, self.solarize_p, g,
                             shuffle=False)
        return source, target

    def make(self, crops: Tensor, source: PhotometricParams, target: PhotometricParams,
             fn=apply_photometric) -> Tuple[Tensor, Tensor]:
        """Batched uint8 crops ``(N, 3, S, S)`` and both views' parameters -> (source, target) views,
        normalised float32, made in one ``fn`` call (``apply_photometric``, or its compiled form)."""
        both = fn(torch.cat([crops, crops]), PhotometricParams(*(torch.cat(f) for f in zip(source, target))),
                  self.mean, self.std, self.blur_size, SOLARIZE_THRESHOLD)
        return both[: crops.shape[0]], both[crops.shape[0]:]

    def views(self, img) -> Tuple[Tensor, Tensor, Tensor]:
        """``(source, target, action)`` made here, whatever ``photometric`` says (image panels)."""
        crop = self.geometric(img)
        source, target = self.draw()
        x, y = self.make(crop[None], stack_params([source]), stack_params([target]))
        return x[0], y[0], action_vector(source, target, self.jitter)

    def __call__(self, img) -> Tuple[Tensor, ...]:
        if self.photometric == "loader":
            return self.views(img)
        crop = self.geometric(img)
        source, target = self.draw()
        return crop, source, target, action_vector(source, target, self.jitter)

    def on_device(self, inputs, fn=apply_photometric) -> Tuple[Tensor, Tensor, Tensor]:
        """A device batch ``(crops, source parameters, target parameters, actions)`` -> ``(source,
        target, actions)``, what the loader path's batch holds."""
        if len(inputs) != 4:
            raise ValueError("method.views.photometric=device expects (crops, source parameters, target parameters, "
                             f"actions) from the method's own training transform, got {len(inputs)} items")
        crops, source, target, actions = inputs
        return (*self.make(crops, source, target, fn), actions)

    def __repr__(self) -> str:
        return (f"IWMViews(jitter={self.jitter} p={self.jitter_p}, source-only: grayscale p={self.grayscale_p}, "
                f"blur p={self.blur_p}, solarize p={self.solarize_p}, photometric on the {self.photometric}; "
                f"{self.geometric})")
