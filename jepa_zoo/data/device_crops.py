"""Crops and flips of a whole batch on the training device (LeJEPA's ``method.views.crops=device``).

On small images the loader's cost is not decoding but making the views: each of LeJEPA's
``V_g + V_l`` views is a ``RandomResizedCrop`` and a flip in Python, about 0.1 ms each, which on a
2-core machine is CPU time taken from the training step.  With ``crops=device`` the loader worker
only decodes an image and draws, for each view, its box with torchvision's own sampler
(``v2.RandomResizedCrop.make_params``: the distribution of the loader path), its flip and its
photometric parameters (:func:`jepa_zoo.data.photometric.draw_params`).  On the device all views of
one size are then cut at once by :func:`crop_views`, and the batched photometric ops follow.

For a box ``(top, left, h, w)`` and an ``S x S`` view, output pixel ``(i, j)`` is the bilinear
sample of the image at::

    y = top  + (i + 1/2) · h / S − 1/2
    x = left + (j + 1/2) · w / S − 1/2

the resize of ``torchvision.transforms.v2.functional.resized_crop`` (half-pixel centres,
``align_corners=False``), computed by ``torchvision.ops.roi_align`` with ``aligned=True``, which
takes one such sample per output pixel for a box no larger than the view (adaptive
``sampling_ratio``).  Two differences from the loader path, both small:

* in the outer band of a view whose samples fall less than half a pixel outside the box, the
  loader path repeats the crop's edge pixel, ``roi_align`` reads the image beyond the box (the
  same image, as if the crop were cut from it continuously);
* a box larger than the view (a downscale) averages ``ceil(box / S)`` samples per output pixel in
  each direction, an area filter where the loader path uses an antialiased resize.

The flip then mirrors the view (``x ↦ S − 1 − x``).

The images of a batch are stacked, so they must share one size (CIFAR-10, or any folder of
equal-size images); :class:`OneSize` says so in one line otherwise.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torchvision.ops import roi_align
from torchvision.transforms import v2

from jepa_zoo.errors import ConfigError


def draw_geometry(crop: v2.RandomResizedCrop, img: Tensor, flip_p: float) -> Tensor:
    """One view's geometry for ``img`` ``(3, H, W)``: ``(top, left, height, width, flip)``, float.

    The box is torchvision's own draw (``crop.make_params``), the flip a Bernoulli(``flip_p``);
    both from torch's generator, seeded per sample by the loader like every other draw."""
    box = crop.make_params([img])
    flip = float(torch.rand(()) < flip_p)
    return torch.tensor([box["top"], box["left"], box["height"], box["width"], flip], dtype=torch.float32)


def crop_views(images: Tensor, geometry: Tensor, size: int) -> Tensor:
    """Cut ``K`` views of ``size x size`` from ``images`` ``(N, C, H, W)`` (float) with
    ``geometry`` ``(K, N, 5)`` (``draw_geometry`` per view and image) -> ``(K·N, C, size, size)``,
    view-major (the order in which the step concatenates views for the backbone)."""
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"expected float images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    k, n = geometry.shape[:2]
    if geometry.shape != (k, images.shape[0], 5):
        raise ValueError(f"geometry {tuple(geometry.shape)} does not match {images.shape[0]} images: expected (K, N, 5)")
    g = geometry.to(device=images.device, dtype=torch.float32).reshape(k * n, 5)
    top, left, h, w, flip = g.unbind(1)
    index = torch.arange(n, device=images.device, dtype=torch.float32).repeat(k)
    boxes = torch.stack([index, left, top, left + w, top + h], dim=1)  # (idx, x1, y1, x2, y2)
    out = roi_align(images.float(), boxes, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return torch.where(flip.bool().view(-1, 1, 1, 1), out.flip(-1), out)


class OneSize:
    """Remember the first image size a loader worker sees and refuse any other, in one line."""

    def __init__(self) -> None:
        self.size: Optional[Tuple[int, int]] = None

    def __call__(self, img: Tensor) -> None:
        size = tuple(img.shape[-2:])
        if self.size is None:
            self.size = size
        elif size != self.size:
            raise ConfigError(f"method.views.crops=device needs images of one size (they are stacked before "
                             f"cropping): got {size[0]}x{size[1]} after {self.size[0]}x{self.size[1]}; use "
                             "method.views.crops=loader for this dataset")
