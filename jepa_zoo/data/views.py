"""Image views built from torchvision transforms v2.

* :func:`view_transform` — one augmented view: RandomResizedCrop, flip,
  ColorJitter (p), grayscale (p), Gaussian blur (p), solarize (p), normalise.
* :class:`MultiView` — LeJEPA's multi-crop: ``V_g`` global + ``V_l`` local views,
  returned as a list (globals first); the default collate stacks each view.
* :func:`eval_transform` — resize + centre crop + normalise for validation.

Blur kernels scale with the view size (about 10 % of it, odd), so the same
recipe is sensible at 224 px and at CIFAR's 32 px.
"""

from __future__ import annotations

from typing import Callable, List, Sequence

import torch
from torchvision.transforms import v2

from jepa_zoo.config import ViewsConfig


def _normalize(mean: Sequence[float], std: Sequence[float]) -> List[Callable]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def blur_kernel(size: int) -> int:
    """Odd kernel of about 10 % of the view size, at least 3."""
    return max(3, (size // 10) | 1)


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
    ops: List[Callable] = [
        v2.ToImage(),
        v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True),
        v2.RandomHorizontalFlip(flip_p),
    ]
    if jitter_p > 0:
        ops.append(v2.RandomApply([v2.ColorJitter(*jitter)], p=jitter_p))
    if grayscale_p > 0:
        ops.append(v2.RandomGrayscale(p=grayscale_p))
    if blur_p > 0:
        ops.append(v2.RandomApply([v2.GaussianBlur(blur_kernel(size), sigma=(0.1, 2.0))], p=blur_p))
    if solarize_p > 0:
        ops.append(v2.RandomSolarize(threshold=128, p=solarize_p))
    return v2.Compose(ops + _normalize(mean, std))


class MultiView:
    """Apply ``num_global`` global and ``num_local`` local view transforms to one image."""

    def __init__(self, cfg: ViewsConfig, mean: Sequence[float], std: Sequence[float]):
        common = dict(
            flip_p=cfg.flip_p, jitter=cfg.jitter, jitter_p=cfg.jitter_p, grayscale_p=cfg.grayscale_p,
            blur_p=cfg.blur_p, solarize_p=cfg.solarize_p, mean=mean, std=std,
        )
        self.num_global = cfg.num_global
        self.num_local = cfg.num_local
        self.global_tf = view_transform(cfg.global_size, cfg.global_scale, **common)
        self.local_tf = view_transform(cfg.local_size, cfg.local_scale, **common)

    def __call__(self, img) -> List[torch.Tensor]:
        return [self.global_tf(img) for _ in range(self.num_global)] + [
            self.local_tf(img) for _ in range(self.num_local)
        ]

    def __repr__(self) -> str:
        return f"MultiView(global={self.num_global}x{self.global_tf}, local={self.num_local}x{self.local_tf})"


def eval_transform(size: int, crop_ratio: float, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Resize the short side to ``size / crop_ratio`` then centre-crop ``size``."""
    ops: List[Callable] = [v2.ToImage(), v2.Resize(round(size / crop_ratio), antialias=True), v2.CenterCrop(size)]
    return v2.Compose(ops + _normalize(mean, std))
