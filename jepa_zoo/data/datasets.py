"""Image datasets: ImageFolder trees, tar archives of them, CIFAR-10, ImageNet, fake.

Every dataset yields ``(image, label)``; unlabelled folders (images directly
under the root) yield label ``-1``, which the online probe ignores.

Archives (``.tar``, ``.tar.gz``, ``.tgz``) are extracted once into a cache
directory (``data.cache_dir``, else ``$JEPA_ZOO_CACHE``, else
``~/.cache/jepa_zoo``): into a temporary folder first, then renamed into
place, so an interrupted extraction never leaves a half-filled tree behind.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets as tvd

from jepa_zoo.errors import ConfigError

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


class DataError(FileNotFoundError):
    """A dataset root is missing, empty or not in a layout we can read."""


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


def default_cache_dir() -> Path:
    return Path(os.environ.get("JEPA_ZOO_CACHE", Path.home() / ".cache" / "jepa_zoo"))


def _safe_extract(tf: tarfile.TarFile, dest: Path, archive: Path) -> None:
    """Extract regular files and folders only, never outside ``dest``.

    Uses tarfile's ``data`` filter where this Python has it (3.11.4+, 3.10.12+),
    else checks each member the same way.
    """
    if hasattr(tarfile, "data_filter"):
        tf.extractall(dest, filter="data")
        return
    members = []
    for m in tf.getmembers():
        if not (m.isfile() or m.isdir()):
            continue  # links and devices have no place in an image dataset
        target = (dest / m.name).resolve()
        if m.name.startswith("/") or not str(target).startswith(str(dest.resolve())):
            raise DataError(f"{archive}: member {m.name!r} would extract outside the cache folder")
        members.append(m)
    tf.extractall(dest, members=members)


def extract_archive(archive: Path, cache_dir: Optional[Path] = None) -> Path:
    """Extract ``archive`` once; return the extracted directory (idempotent, atomic)."""
    archive = archive.resolve()
    st = archive.stat()
    tag = hashlib.sha1(f"{archive}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = archive.name
    for suf in ARCHIVE_SUFFIXES:
        if stem.endswith(suf):
            stem = stem[: -len(suf)]
            break
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / f"{stem}-{tag}"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=cache))
    try:
        with tarfile.open(archive) as tf:
            _safe_extract(tf, tmp, archive)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # lost a race only if the winner finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMG_EXTENSIONS


class FlatImageDataset(Dataset):
    """Images directly under ``root`` (no class folders): label ``-1``."""

    def __init__(self, root: Path, transform: Optional[Callable] = None):
        self.files: List[Path] = sorted(p for p in Path(root).iterdir() if _is_image(p))
        if not self.files:
            raise DataError(f"no images found in {root}")
        self.transform = transform
        self.classes: List[str] = []

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tuple[object, int]:
        with Image.open(self.files[i]) as im:
            img = im.convert("RGB")
        return (self.transform(img) if self.transform else img), -1


@dataclass(frozen=True)
class Unreadable:
    """What :class:`SkipUnreadable` returns under ``policy="drop"`` for a sample it cannot read."""

    path: str
    error: str


def drop_unreadable(batch: List[Any]) -> Tuple[Any, Dict[int, "Unreadable"]]:
    """(the readable samples collated as the default collate does, or None if none is; the
    :class:`Unreadable` ones by their position in ``batch``): a loader's ``collate_fn`` for
    ``policy="drop"`` datasets."""
    from torch.utils.data import default_collate

    dropped = {k: s for k, s in enumerate(batch) if isinstance(s, Unreadable)}
    kept = [s for s in batch if not isinstance(s, Unreadable)]
    return (default_collate(kept) if kept else None), dropped


class SkipUnreadable(Dataset):
    """Wrap an image dataset so that a corrupt, truncated or non-image file is skipped with a
    warning (``policy="skip"``: the next readable index is returned instead, so batches stay full),
    stops the run with the file's path (``policy="fail"``), or is returned as an :class:`Unreadable`
    (``policy="drop"``: evaluation, where a substitute would be a duplicate, possibly from another
    fold, drops it and counts it; :func:`drop_unreadable`).  ``skipped`` counts the skips in this
    process (each loader worker counts its own)."""

    MAX_TRIES = 100
    NAMED = 3  # unreadable files named in the log per process; the others are counted

    def __init__(self, ds: Dataset, policy: str = "skip"):
        if policy not in ("skip", "fail", "drop"):
            raise ValueError(f"policy must be 'skip', 'fail' or 'drop', got {policy!r}")
        self.ds, self.policy, self.skipped = ds, policy, 0
        self.classes = getattr(ds, "classes", [])
        self.kind = getattr(ds, "kind", "image")  # what the messages call a sample (VideoClips: video)

    def __len__(self) -> int:
        return len(self.ds)

    def _path(self, i: int) -> str:
        samples = getattr(self.ds, "samples", None)  # ImageFolder
        if samples is not None:
            return str(samples[i][0])
        files = getattr(self.ds, "files", None)  # FlatImageDataset
        return str(files[i]) if files is not None else f"index {i}"

    def __getitem__(self, i: int):
        for k in range(self.MAX_TRIES):
            j = (i + k) % len(self.ds)
            try:
                return self.ds[j]
            except ConfigError:  # a setting that no image satisfies (views.crops=device on mixed sizes): not a bad file
                raise
            except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for bad image files
                if self.policy == "fail":
                    raise DataError(f"unreadable {self.kind} {self._path(j)}: {e} (data.bad_images=skip skips)") from e
                if self.policy == "drop":
                    return Unreadable(self._path(j), f"{type(e).__name__}: {e}")
                self.skipped += 1
                if self.skipped <= self.NAMED:  # the first ones by name, then a count at 10, 100, ...
                    log.warning("skipped unreadable %s %s (%s: %s); %d skipped so far in this process%s", self.kind,
                                self._path(j), type(e).__name__, e, self.skipped,
                                "; further ones are counted, not named" if self.skipped == self.NAMED else "")
                elif math.log10(self.skipped).is_integer():
                    log.warning("%d unreadable %ss skipped so far in this process", self.skipped, self.kind)
        raise DataError(f"{self.MAX_TRIES} unreadable {self.kind}s in a row from index {i}: is the dataset intact?")


def image_folder(root: Path, transform: Optional[Callable] = None) -> Dataset:
    """``root/<class>/*.jpg`` -> torchvision ImageFolder; ``root/*.jpg`` -> unlabelled."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder does not exist: {root}")
    subdirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if subdirs:
        try:
            return tvd.ImageFolder(str(root), transform=transform, allow_empty=True)
        except FileNotFoundError as e:
            raise DataError(f"{root}: {e}") from e
    return FlatImageDataset(root, transform)


HELD_OUT_SPLITS = ("test", "val", "validation")


def find_held_out(root: Path, preferred: Optional[str]) -> Optional[Tuple[str, Path]]:
    """(name, path) of the held-out split that training validates on and evaluation tests on, one rule
    for both: ``preferred`` (``data.val_split``) if present, else the first of ``test``, ``val``,
    ``validation``; None if there is none."""
    for split in dict.fromkeys(s for s in (preferred, *HELD_OUT_SPLITS) if s):
        path = find_split(root, split)
        if path is not None:
            return split, path
    return None


def find_split(root: Path, split: str) -> Optional[Path]:
    """``root/split`` or ``root/<single top folder>/split`` if present."""
    if (root / split).is_dir():
        return root / split
    tops = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if len(tops) == 1 and (tops[0] / split).is_dir():
        return tops[0] / split
    return None


def resolve_root(root: str, cache_dir: Optional[str] = None) -> Path:
    """A directory as is; an archive extracted to the cache; anything else a clear error."""
    p = Path(root).expanduser()
    if not p.exists():
        raise DataError(f"data.root does not exist: {p}")
    if p.is_dir():
        return p
    if is_archive(p):
        return _descend_wrapper(extract_archive(p, Path(cache_dir) if cache_dir else None))
    raise DataError(f"data.root must be a directory or a .tar/.tar.gz archive, got file {p}")


def _descend_wrapper(root: Path) -> Path:
    """``tar czf x.tgz mydata/`` wraps the tree in one folder: step into it (unless it is a split)."""
    entries = [e for e in root.iterdir() if not e.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in ("train", "val", "test"):
        return entries[0]
    return root


def locate_cifar10(root: str, cache_dir: Optional[str] = None) -> Path:
    """Find a CIFAR-10 ImageFolder tree (``train/`` + ``test/``) under ``root``.

    Looks at, in order: ``root`` itself (directory or archive), then archives
    named ``cifar10*.tar*``/``cifar-10*.tar*`` inside ``root``.  Raises
    :class:`DataError` listing what it looked at.
    """
    p = Path(root).expanduser()
    looked: List[str] = []
    candidates: List[Path] = [p]
    if p.is_dir():
        candidates += sorted(
            q for q in p.iterdir()
            if q.name.lower().startswith(("cifar10", "cifar-10"))
            and not q.name.startswith("cifar-10-python")  # torchvision's pickled batches, not a folder tree
        )
    for c in candidates:
        looked.append(str(c))
        if c.is_dir() and find_split(c, "train") is not None:
            return c
        if is_archive(c):
            d = extract_archive(c, Path(cache_dir) if cache_dir else None)
            if find_split(d, "train") is not None:
                return d
    raise DataError(
        "CIFAR-10 not found. Looked for a folder with train/ and test/ or a cifar10*.tar.gz archive at: "
        + ", ".join(looked)
        + ". Point data.root at the shared archive (e.g. ../shared/data/cifar10-jpg.tar.gz) or its folder."
    )


def fake_dataset(size: int, img_size: int, num_classes: int, transform: Optional[Callable], seed: int) -> Dataset:
    """Random images for unit tests only (torchvision FakeData)."""
    return tvd.FakeData(
        size=size, image_size=(3, img_size, img_size), num_classes=num_classes, transform=transform, random_offset=seed
    )


def fake_split(data: Any, transform: Optional[Callable], seed: int, train: bool) -> Dataset:
    """``data=fake``'s :class:`~jepa_zoo.data.schema.DataSource` build: ``data.fake_size`` random images for
    training; a quarter as many for validation, drawn after them (FakeData draws image i from seed
    offset + i)."""
    n_cls = data.num_classes or 10
    if train:
        return fake_dataset(data.fake_size, data.img_size, n_cls, transform, seed)
    return fake_dataset(max(data.fake_size // 4, 1), data.img_size, n_cls, transform, seed + data.fake_size)


def count_classes(ds: Dataset) -> int:
    classes = getattr(ds, "classes", None)
    if classes is not None:
        return len(classes)
    return int(getattr(ds, "num_classes", 0))
