"""LeJEPA's crops on the device (method.views.crops=device) against the loader's resized crops."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import default_collate
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from jepa_zoo.config import ViewsConfig
from jepa_zoo.data.device_crops import OneSize, crop_views, draw_geometry
from jepa_zoo.data.photometric import apply_photometric
from jepa_zoo.data.views import MultiView, blur_kernel

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def inside(t: float, length: float, size: int) -> torch.Tensor:
    """Which of a view's ``size`` sample coordinates ``t + (i + ½)·length/size − ½`` lie in the box's
    pixels ``[t, t + length − 1]`` (where the loader's resize of the cut crop needs no edge clamp)."""
    c = t + (torch.arange(size) + 0.5) * length / size - 0.5
    return (c >= t) & (c <= t + length - 1)


@pytest.mark.parametrize("size, scale", [(32, (0.3, 1.0)), (16, (0.05, 0.25))])
def test_device_crops_are_the_loaders_resize_of_each_box(size, scale):
    """Inside each box (all but a view's outer half-pixel band) a device crop equals
    ``resized_crop`` of the loader path, flipped where drawn; boxes larger than the view (none at
    these scales of a 32 px image, but for their upper end) are downscales: close, not equal."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    rrc = v2.RandomResizedCrop(size, scale=scale)
    geometry = torch.stack([torch.stack([draw_geometry(rrc, im, 0.5) for im in images]) for _ in range(3)])
    out = crop_views(images.float() / 255, geometry, size).view(3, 6, 3, size, size)
    assert {bool(f) for f in geometry[..., 4].flatten()} == {True, False}
    compared = 0
    for k in range(3):
        for i in range(6):
            t, l, h, w, flip = geometry[k, i].tolist()
            ref = TF.resized_crop(images[i].float() / 255, int(t), int(l), int(h), int(w), [size, size], antialias=False)
            ref = ref.flip(-1) if flip else ref
            if h > size or w > size:
                assert (out[k, i] - ref).abs().mean() < 0.05  # area filter against plain bilinear
                continue
            rows, cols = inside(t, h, size), inside(l, w, size)
            cols = cols.flip(0) if flip else cols
            keep = rows[:, None] & cols[None, :]
            assert keep.sum() >= size * size // 2
            torch.testing.assert_close(out[k, i][:, keep], ref[:, keep], atol=1e-5, rtol=0)
            compared += 1
    assert compared >= 12


def test_the_whole_box_at_the_views_size_is_the_image_itself():
    images = torch.rand(2, 3, 16, 16)
    full = torch.tensor([0.0, 0.0, 16.0, 16.0, 0.0]).expand(1, 2, 5)
    torch.testing.assert_close(crop_views(images, full, 16), images, atol=1e-6, rtol=0)
    flipped = full.clone()
    flipped[..., 4] = 1.0
    torch.testing.assert_close(crop_views(images, flipped, 16), images.flip(-1), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"expected float images"):
        crop_views(images.to(torch.uint8), full, 16)
    with pytest.raises(ValueError, match=r"does not match 2 images"):
        crop_views(images, full[:, :1], 16)


def test_multiview_with_crops_on_device_makes_the_views_of_its_draws():
    """The loader sample is the uint8 image and each view's geometry and parameters; the device
    makes globals and locals each in one crop and one photometric call, as drawn."""
    from PIL import Image

    cfg = ViewsConfig(num_global=2, global_size=32, num_local=3, local_size=16, photometric="device", crops="device")
    mv = MultiView(cfg, MEAN, STD)
    torch.manual_seed(0)
    pil = [Image.fromarray((torch.rand(32, 32, 3) * 255).to(torch.uint8).numpy()) for _ in range(4)]
    samples = [mv(p) for p in pil]
    img, drawn = samples[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 32, 32) and len(drawn) == 5
    images, drawn = default_collate(samples)
    views = mv.on_device((images, drawn))
    assert [tuple(v.shape) for v in views] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 3
    floats = images.float() / 255
    for v, (geometry, params), size in zip(views, drawn, [32, 32, 16, 16, 16]):
        crops = crop_views(floats, geometry[None], size)
        torch.testing.assert_close(v, apply_photometric(crops, params, MEAN, STD, blur_kernel(size)), atol=1e-6, rtol=0)


def test_crops_on_device_are_refused_without_device_photometric_and_for_mixed_sizes():
    with pytest.raises(ValueError, match=r"^method.views.crops: device needs method.views.photometric=device"):
        ViewsConfig(crops="device")
    with pytest.raises(ValueError, match=r"^method.views.crops: must be 'loader' or 'device', got 'gpu'"):
        ViewsConfig(crops="gpu", photometric="device")
    one = OneSize()
    one(torch.zeros(3, 32, 32))
    one(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"needs images of one size .* got 40x30 after 32x32; use method.views.crops=loader"):
        one(torch.zeros(3, 40, 30))


def test_mixed_sizes_stop_the_run_instead_of_being_skipped_as_bad_images():
    """The size refusal is a setting no image satisfies, not an unreadable file: data.bad_images=skip
    must not skip past it (it once silently skipped most of a folder of photos)."""
    from jepa_zoo.data.datasets import SkipUnreadable
    from jepa_zoo.errors import ConfigError

    one = OneSize()

    class Sized(torch.utils.data.Dataset):
        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            one(self.items[i])
            return self.items[i]

    ds = SkipUnreadable(Sized([torch.zeros(3, 32, 32), torch.zeros(3, 40, 30), torch.zeros(3, 32, 32)]), "skip")
    ds[0]
    with pytest.raises(ConfigError, match="needs images of one size"):
        ds[1]
    assert ds.skipped == 0
