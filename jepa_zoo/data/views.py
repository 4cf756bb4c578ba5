"""Image views built from torchvision transforms v2.

* :func:`view_transform` — one augmented view: RandomResizedCrop, flip,
  ColorJitter (p), grayscale (p), Gaussian blur (p), solarize (p), normalise.
* :class:`MultiView` — LeJEPA's multi-crop: ``V_g`` global + ``V_l`` local views,
  returned as a list (globals first); the default collate stacks each view.  With
  ``photometric=device`` each view is a uint8 crop and its photometric parameters, applied on
  the training device (:mod:`jepa_zoo.data.photometric`); with ``crops=device`` as well, the
  sample is the uint8 image and each view's box, flip and parameters, and the crops too are made
  on the device (:mod:`jepa_zoo.data.device_crops`).
* :func:`eval_transform` — resize + centre crop + normalise for validation.

Blur kernels scale with the view size (at most about 10 % of it, odd), so the
same recipe is sensible at 224 px and at CIFAR's 32 px; within that, a kernel
covers ±3σ of the drawn σ (:class:`GaussianBlur`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from jepa_zoo.data.device_crops import OneSize, crop_views, draw_geometry
from jepa_zoo.data.photometric import PhotometricParams, SOLARIZE_THRESHOLD, apply_photometric, concat_views, draw_params
from jepa_zoo.data.schema import ViewsConfig


def _normalize(mean: Sequence[float], std: Sequence[float]) -> List[Callable]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def blur_kernel(size: int) -> int:
    """Largest blur kernel for a view: odd, about 10 % of the view size, at least 3."""
    return max(3, (size // 10) | 1)


def sigma_kernel(sigma: float, max_size: int) -> int:
    """Taps of a Gaussian kernel covering ±3σ: ``min(2⌈3σ⌉ + 1, max_size)`` (odd when ``max_size`` is)."""
    return min(2 * math.ceil(3 * sigma) + 1, max_size)


class GaussianBlur(v2.GaussianBlur):
    """torchvision's Gaussian blur with a kernel sized to the drawn σ.

    σ ~ U(σ_min, σ_max) as in ``v2.GaussianBlur`` (the same random draw), then
    ``k = min(2⌈3σ⌉ + 1, kernel_size)`` taps: the kernel covers ±3σ, which holds 99.7 % of the
    Gaussian's mass (the taps are renormalised), instead of always ``kernel_size`` taps.  At
    224 px (``kernel_size`` 23) and σ ∈ [0.1, 2] that is 3 to 13 taps: the same image to within
    rounding, at a fraction of the cost (the blur was the most expensive op of a view).
    """

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        params = super().make_params(flat_inputs)
        k = sigma_kernel(params["sigma"][0], self.kernel_size[0])
        return {**params, "kernel_size": [k, k]}

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        return self._call_kernel(F.gaussian_blur, inpt, params["kernel_size"], sigma=params["sigma"])


def view_transform(
    size: int,
    scale: Sequence[float],
    *,
    flip_p: float = 0.5,
    jitter: Sequence[float] = (0.4, 0.4, 0.2, 0.1),
    jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    blur_p: float = 0.5,
    solarize_p: float = 0.2,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
) -> v2.Compose:
    """One stochastic view of a PIL image or uint8 tensor -> normalised float ``[3, size, size]``."""
    ops = crop_transform(size, scale, flip_p).transforms
    if jitter_p > 0:
        ops.append(v2.RandomApply([v2.ColorJitter(*jitter)], p=jitter_p))
    if grayscale_p > 0:
        ops.append(v2.RandomGrayscale(p=grayscale_p))
    if blur_p > 0:
        ops.append(v2.RandomApply([GaussianBlur(blur_kernel(size), sigma=(0.1, 2.0))], p=blur_p))
    if solarize_p > 0:
        ops.append(v2.RandomSolarize(threshold=128, p=solarize_p))
    return v2.Compose(ops + _normalize(mean, std))


def crop_transform(size: int, scale: Sequence[float], flip_p: float = 0.5) -> v2.Compose:
    """The geometric part of a view: PIL image or uint8 tensor -> uint8 ``[3, size, size]``."""
    return v2.Compose([
        v2.ToImage(),
        v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True),
        v2.RandomHorizontalFlip(flip_p),
    ])


class DeviceView:
    """A view whose photometric ops run on the training device: ``(uint8 crop, its parameters)``."""

    def __init__(self, size: int, scale: Sequence[float], cfg: ViewsConfig):
        self.crop = crop_transform(size, scale, cfg.flip_p)
        self.probs = dict(jitter=cfg.jitter, jitter_p=cfg.jitter_p, grayscale_p=cfg.grayscale_p,
                          blur_p=cfg.blur_p, solarize_p=cfg.solarize_p)

    def __call__(self, img) -> Tuple[torch.Tensor, PhotometricParams]:
        return self.crop(img), draw_params(**self.probs)

    def __repr__(self) -> str:
        return f"DeviceView({self.crop}, photometric on the device: {self.probs})"


class MultiView:
    """Apply ``num_global`` global and ``num_local`` local view transforms to one image."""

    def __init__(self, cfg: ViewsConfig, mean: Sequence[float], std: Sequence[float]):
        common = dict(
            flip_p=cfg.flip_p, jitter=cfg.jitter, jitter_p=cfg.jitter_p, grayscale_p=cfg.grayscale_p,
            blur_p=cfg.blur_p, solarize_p=cfg.solarize_p, mean=mean, std=std,
        )
        self.num_global = cfg.num_global
        self.num_local = cfg.num_local
        self.mean, self.std = tuple(mean), tuple(std)
        self.photometric = cfg.photometric  # device: views left to the datamodule's on_after_batch_transfer
        self.crops = cfg.crops
        if cfg.crops == "device":  # the loader draws every view's geometry and parameters; the device cuts them
            self.boxes = [v2.RandomResizedCrop(cfg.global_size, scale=tuple(cfg.global_scale))] * cfg.num_global + [
                v2.RandomResizedCrop(cfg.local_size, scale=tuple(cfg.local_scale))] * cfg.num_local
            self.sizes = (cfg.global_size, cfg.local_size)
            self.flip_p = cfg.flip_p
            self.one_size = OneSize()
        if cfg.photometric == "device":
            self.global_tf: Callable = DeviceView(cfg.global_size, cfg.global_scale, cfg)
            self.local_tf: Callable = DeviceView(cfg.local_size, cfg.local_scale, cfg)
        else:
            self.global_tf = view_transform(cfg.global_size, cfg.global_scale, **common)
            self.local_tf = view_transform(cfg.local_size, cfg.local_scale, **common)
        self.to_image = v2.ToImage()

    def __call__(self, img) -> List[Any]:
        img = self.to_image(img)  # once, not once per view (each view's ToImage then passes it through)
        if self.crops == "device":  # (uint8 image, [(geometry, parameters) per view])
            self.one_size(img)
            draw = self.global_tf.probs
            return img, [(draw_geometry(box, img, self.flip_p), draw_params(**draw)) for box in self.boxes]
        return [self.global_tf(img) for _ in range(self.num_global)] + [
            self.local_tf(img) for _ in range(self.num_local)
        ]

    def on_device(self, inputs: Sequence[Any], fn: Callable = apply_photometric) -> List[torch.Tensor]:
        """``photometric=device``: a batch's views, each ``(uint8 crops (N, 3, H, W), their parameters)``
        -> the normalised views, as the loader path's batch holds them; one ``fn`` call for the global
        views and one for the local views (one size each).  With ``crops=device`` the inputs are
        ``(uint8 images (N, 3, H, W), [(geometry (N, 5), parameters) per view])`` and each group's
        views are first cut from the images (:func:`~jepa_zoo.data.device_crops.crop_views`)."""
        if self.crops == "device":
            images, drawn = inputs
            images = images.float().div(255)
            inputs = []
            for group, size in ((drawn[: self.num_global], self.sizes[0]), (drawn[self.num_global:], self.sizes[1])):
                if group:
                    crops = crop_views(images, torch.stack([g for g, _ in group]), size).chunk(len(group))
                    inputs += [(c, p) for c, (_, p) in zip(crops, group)]
        out: List[torch.Tensor] = []
        for group in (list(inputs[: self.num_global]), list(inputs[self.num_global:])):
            if group:
                x, params = concat_views(group)
                out += fn(x, params, self.mean, self.std, blur_kernel(x.shape[-1]), SOLARIZE_THRESHOLD).chunk(len(group))
        return out

    def __repr__(self) -> str:
        return f"MultiView(global={self.num_global}x{self.global_tf}, local={self.num_local}x{self.local_tf})"


def eval_transform(size: int, crop_ratio: float, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Resize the short side to ``size / crop_ratio`` then centre-crop ``size``."""
    ops: List[Callable] = [v2.ToImage(), v2.Resize(round(size / crop_ratio), antialias=True), v2.CenterCrop(size)]
    return v2.Compose(ops + _normalize(mean, std))
