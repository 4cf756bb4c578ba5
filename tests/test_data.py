import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from jepa_zoo.config import DataConfig, ViewsConfig
from jepa_zoo.data.datamodule import JEPADataModule
from jepa_zoo.data.datasets import DataError, extract_archive, image_folder, locate_cifar10, resolve_root
from jepa_zoo.data.views import MultiView, eval_transform


def make_folder(root: Path, classes=("cat", "dog"), per_class=3, size=40) -> Path:
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (size, size + 8), color=(40 * ci, 10 * i, 100)).save(root / c / f"{i}.jpg")
    return root


def test_image_folder_labels(tmp_path):
    ds = image_folder(make_folder(tmp_path / "train"))
    assert len(ds) == 6 and ds.classes == ["cat", "dog"]
    assert sorted({ds[i][1] for i in range(6)}) == [0, 1]


def test_unlabelled_folder_gives_minus_one(tmp_path):
    for i in range(3):
        Image.new("RGB", (20, 20)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = image_folder(tmp_path)
    assert len(ds) == 3 and ds[0][1] == -1


def test_missing_or_empty_roots_are_clear(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        resolve_root(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="no images"):
        image_folder(tmp_path)
    with pytest.raises(DataError, match="CIFAR-10 not found"):
        locate_cifar10(str(tmp_path))


def test_tar_extracted_once_atomically(tmp_path):
    src = make_folder(tmp_path / "src" / "train")
    archive = tmp_path / "ds.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname="train")
    cache = tmp_path / "cache"
    out = extract_archive(archive, cache)
    assert (out / "train" / "cat" / "0.jpg").exists()
    marker = out / "marker"
    marker.write_text("x")
    assert extract_archive(archive, cache) == out and marker.exists()  # not extracted twice
    assert [p.name for p in cache.iterdir()] == [out.name]  # no temporary leftovers


def test_datamodule_folder_archive_with_multiview(tmp_path):
    make_folder(tmp_path / "src" / "train", per_class=4)
    make_folder(tmp_path / "src" / "val", per_class=2)
    archive = tmp_path / "ds.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(tmp_path / "src" / "train", arcname="train")
        tf.add(tmp_path / "src" / "val", arcname="val")
    cfg = DataConfig(name="folder", root=str(archive), cache_dir=str(tmp_path / "c"), img_size=32,
                     batch_size=4, num_workers=0, pin_memory=False)
    views = ViewsConfig(num_global=2, global_size=32, num_local=3, local_size=16)
    dm = JEPADataModule(cfg, MultiView(views, cfg.mean, cfg.std))
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == 2
    batch_views, labels = next(iter(dm.train_dataloader()))
    assert [tuple(v.shape) for v in batch_views] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 3
    assert labels.shape == (4,)
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 32, 32)


def test_batch_larger_than_dataset_is_clear(tmp_path):
    make_folder(tmp_path / "train")
    cfg = DataConfig(name="folder", root=str(tmp_path), batch_size=64, num_workers=0)
    dm = JEPADataModule(cfg, eval_transform(32, 1.0, cfg.mean, cfg.std))
    dm.setup("fit")
    with pytest.raises(DataError, match="batch_size=64"):
        dm.train_dataloader()


def test_views_are_random_and_normalised():
    views = ViewsConfig(num_global=2, global_size=32, num_local=2, local_size=16)
    img = Image.new("RGB", (64, 64))
    img.putdata([(x % 256, (x * 7) % 256, (x * 13) % 256) for x in range(64 * 64)])
    out = MultiView(views, [0.5] * 3, [0.25] * 3)(img)
    assert len(out) == 4 and out[0].dtype == torch.float32
    assert not torch.equal(out[0], out[1])
    assert -2.1 <= out[0].min() and out[0].max() <= 2.1


def test_cifar10_from_shared_archive(shared_data, tmp_path):
    root = locate_cifar10(str(shared_data), str(tmp_path))
    ds = image_folder(root / "test")
    assert len(ds) == 10_000 and len(ds.classes) == 10
    img, label = ds[0]
    assert img.size == (32, 32)


def test_validation_order_is_a_fixed_mix_of_classes(tmp_path):
    make_folder(tmp_path / "train")
    make_folder(tmp_path / "val", classes=[f"c{i}" for i in range(4)], per_class=8)
    cfg = DataConfig(name="folder", root=str(tmp_path), batch_size=2, val_batch_size=8, num_workers=0)
    views = ViewsConfig(num_global=1, global_size=32, num_local=0, local_size=16)
    labels = []
    for _ in range(2):
        dm = JEPADataModule(cfg, MultiView(views, cfg.mean, cfg.std), seed=3)
        dm.setup("fit")
        labels.append(next(iter(dm.val_dataloader()))[1])
    assert torch.equal(labels[0], labels[1])  # same subset every time
    assert len(set(labels[0].tolist())) > 1  # not just the first class of a sorted folder


def test_archive_with_a_wrapper_folder_keeps_its_classes(tmp_path):
    src = make_folder(tmp_path / "src" / "mydata")
    archive = tmp_path / "wrapped.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname="mydata")
    root = resolve_root(str(archive), str(tmp_path / "cache"))
    assert image_folder(root).classes == ["cat", "dog"]


def test_corrupt_and_truncated_images_are_skipped_or_fail_by_name(tmp_path, caplog):
    from jepa_zoo.data.datasets import SkipUnreadable

    root = make_folder(tmp_path / "imgs", per_class=4)
    (root / "cat" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    good = (root / "dog").glob("*.jpg").__next__().read_bytes()
    (root / "dog" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "cat" / "notes.txt").write_text("not an image: ignored by extension")
    (root / "empty").mkdir()  # an empty class folder: no samples, no crash
    ds = SkipUnreadable(image_folder(root, eval_transform(32, 1.0, (0.5,) * 3, (0.5,) * 3)))
    assert len(ds) == 10
    samples = [ds[i] for i in range(len(ds))]
    assert ds.skipped == 2 and all(x.shape == (3, 32, 32) for x, _ in samples)
    named = [r.getMessage() for r in caplog.records if "skipped unreadable image" in r.getMessage()]
    assert len(named) == 2 and "garbage.jpg" in named[0]  # a log line each (no Python warning, no source line)
    caplog.clear()
    strict = SkipUnreadable(image_folder(root), "fail")
    bad = next(i for i, (p, _) in enumerate(strict.ds.samples) if p.endswith("garbage.jpg"))
    with pytest.raises(DataError, match="unreadable image .*garbage.jpg"):
        strict[bad]
    # through the datamodule: every batch is full
    cfg = DataConfig(name="folder", root=str(root), val_split=None, img_size=32, batch_size=5, num_workers=0,
                     pin_memory=False)
    dm = JEPADataModule(cfg, eval_transform(32, 1.0, cfg.mean, cfg.std))
    dm.setup("fit")
    assert [b[0].shape[0] for b in dm.train_dataloader()] == [5, 5]
    assert any("skipped unreadable image" in r.getMessage() for r in caplog.records)


def test_unreadable_files_beyond_the_first_three_are_counted_not_named(caplog):
    from jepa_zoo.data.datasets import SkipUnreadable

    class Broken:
        def __len__(self):
            return 200

        def __getitem__(self, i):
            if i % 2:
                return i
            raise OSError(f"bad {i}")

    ds = SkipUnreadable(Broken())
    assert [ds[2 * i] for i in range(100)] == [2 * i + 1 for i in range(100)]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5 and lines[2].endswith("further ones are counted, not named")
    assert lines[3:] == ["10 unreadable images skipped so far in this process",
                         "100 unreadable images skipped so far in this process"]


def test_blur_kernel_covers_three_sigma_and_matches_the_full_kernel():
    from torchvision.transforms.v2 import functional as F

    from jepa_zoo.data.views import GaussianBlur, sigma_kernel

    assert [sigma_kernel(s, 23) for s in (0.1, 1.0, 1.5, 2.0)] == [3, 7, 11, 13]
    assert sigma_kernel(2.0, 9) == 9  # capped by the view's largest kernel
    x = (torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    blur = GaussianBlur(23, sigma=(1.5, 1.5))
    assert blur.make_params([x])["kernel_size"] == [11, 11]
    out, full = blur(x), F.gaussian_blur(x, [23, 23], [1.5, 1.5])
    assert out.dtype == torch.uint8 and not torch.equal(out, x)
    assert (out.int() - full.int()).abs().max() <= 1  # the same image to within rounding
