"""The LightningDataModule shared by every method.

The method supplies the training transform (multi-view for LeJEPA, ...) and
optionally a collate function (mask collators); the datamodule owns the
datasets, the validation transform and the loaders.  ``prepare_data`` (local
rank 0 only) extracts archives; ``setup`` builds the datasets on every rank.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Optional
from urllib.error import URLError

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from jepa_zoo.config import DataConfig
from jepa_zoo.data.datasets import (
    DataError,
    SkipUnreadable,
    count_classes,
    fake_dataset,
    find_split,
    image_folder,
    locate_cifar10,
    resolve_root,
)
from jepa_zoo.data.views import eval_transform


def _torchvision_cifar10(root: str, train: bool, transform: Optional[Callable], download: bool, looked: str):
    """torchvision's CIFAR-10 (pickled batches) in ``root``, downloading when asked and online."""
    from torchvision.datasets import CIFAR10

    try:
        return CIFAR10(root, train=train, transform=transform, download=download)
    except (URLError, OSError, RuntimeError) as e:
        raise DataError(f"{looked} torchvision's CIFAR-10 in {root} is not usable either ({e}).") from e


class JEPADataModule(L.LightningDataModule):
    def __init__(self, cfg: DataConfig, train_transform: Callable, collate_fn: Optional[Callable] = None, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.train_transform = train_transform
        self.collate_fn = collate_fn
        self.seed = seed
        self.val_transform = eval_transform(cfg.img_size, cfg.eval_crop_ratio, cfg.mean, cfg.std)
        self.train_set: Optional[Dataset] = None
        self.val_set: Optional[Dataset] = None

    # -- datasets -----------------------------------------------------------------
    def _root(self) -> Path:
        if self.cfg.name == "cifar10":
            return locate_cifar10(self.cfg.root, self.cfg.cache_dir)
        return resolve_root(self.cfg.root, self.cfg.cache_dir)

    def _cifar10_fallback(self) -> bool:
        """No JPEG tree found: use torchvision's CIFAR-10 in data.root unless it names a file."""
        return self.cfg.name == "cifar10" and not Path(self.cfg.root).expanduser().is_file()

    def prepare_data(self) -> None:
        """Local rank 0: extract archives once; for CIFAR-10 without a JPEG tree, download it."""
        if self.cfg.name == "fake":
            return
        try:
            self._root()
        except DataError as e:
            if not self._cifar10_fallback():
                raise
            root = Path(self.cfg.root).expanduser().absolute()
            first_new = next((p for p in [*reversed(root.parents), root] if not p.exists()), None)
            try:
                for train in (True, False):
                    _torchvision_cifar10(str(root), train, None, download=True, looked=str(e))
            except DataError:
                if first_new is not None:  # leave no folders behind for a mistyped path
                    shutil.rmtree(first_new, ignore_errors=True)
                raise

    def _split(self, root: Path, split: Optional[str], required: bool) -> Optional[Path]:
        if split is None:
            return None
        path = find_split(root, split)
        if path is None and required:
            if self.cfg.name == "folder":
                return root  # a bare ImageFolder is its own training split
            raise DataError(f"data.root {root} has no '{split}/' folder (data={self.cfg.name})")
        return path

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        c = self.cfg
        if c.name == "fake":
            n_cls = c.num_classes or 10
            self.train_set = fake_dataset(c.fake_size, c.img_size, n_cls, self.train_transform, self.seed)
            self.val_set = fake_dataset(max(c.fake_size // 4, 1), c.img_size, n_cls, self.val_transform, self.seed + 1)
            return
        try:
            root = self._root()
        except DataError as e:
            if not self._cifar10_fallback():
                raise
            self.train_set = _torchvision_cifar10(c.root, True, self.train_transform, False, str(e))
            self.val_set = self._shuffled(_torchvision_cifar10(c.root, False, self.val_transform, False, str(e)))
            return
        train_dir = self._split(root, c.train_split, required=True)
        val_dir = self._split(root, c.val_split, required=False)
        self.train_set = SkipUnreadable(image_folder(train_dir, self.train_transform), c.bad_images)
        if len(self.train_set) == 0:
            raise DataError(f"no images found under {train_dir}")
        self.val_set = (self._shuffled(SkipUnreadable(image_folder(val_dir, self.val_transform), c.bad_images))
                        if val_dir is not None else None)

    def _shuffled(self, ds: Dataset) -> Dataset:
        """Validation set in one fixed random order (seeded): folders are sorted by class, so a
        partial validation (``trainer.limit_val_batches``) would otherwise see only a few classes."""
        perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(self.seed)).tolist()
        shuffled = Subset(ds, perm)
        shuffled.classes = getattr(ds, "classes", [])
        return shuffled

    @property
    def num_classes(self) -> int:
        """Classes for the online probe (0: unlabelled data, probe disabled)."""
        if self.cfg.num_classes is not None:
            return self.cfg.num_classes
        if self.train_set is None:
            raise RuntimeError("call setup() before num_classes")
        return count_classes(self.train_set)

    # -- loaders ----------------------------------------------------------------
    def _loader(self, ds: Dataset, batch_size: int, train: bool) -> DataLoader:
        workers = self.cfg.num_workers
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=workers,
            pin_memory=self.cfg.pin_memory and torch.cuda.is_available(),
            persistent_workers=workers > 0,
            collate_fn=self.collate_fn if train else None,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        if len(self.train_set) < self.cfg.batch_size:
            raise DataError(
                f"data.batch_size={self.cfg.batch_size} is larger than the training set ({len(self.train_set)} images)"
            )
        return self._loader(self.train_set, self.cfg.batch_size, train=True)

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return self._loader(self.val_set, self.cfg.val_batch_size or self.cfg.batch_size, train=False)
