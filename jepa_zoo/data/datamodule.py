"""The LightningDataModule shared by every method.

The method supplies the training transform (multi-view for LeJEPA, ...) and
optionally a collate function (mask collators); the datamodule owns the
datasets, the validation transform and the loaders.  ``prepare_data`` (local
rank 0 only) extracts archives; ``setup`` builds the datasets on every rank.

The training loader's order and randomness come from
:mod:`jepa_zoo.data.sampling`; a callback that every method installs
(:class:`TookBatch`) tells the datamodule when a training step has used its
batch, and the datamodule saves
the loader's position in checkpoints, so ``resume`` continues mid-epoch with
the very next batch.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional
from urllib.error import URLError

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from jepa_zoo.data.datasets import (
    DataError,
    SkipUnreadable,
    count_classes,
    HELD_OUT_SPLITS,
    find_held_out,
    find_split,
    image_folder,
    locate_cifar10,
    resolve_root,
)
from jepa_zoo.data.batch import collate
from jepa_zoo.data.photometric import DevicePhotometric
from jepa_zoo.data.sampling import ResumableLoader, ResumableSampler
from jepa_zoo.data.video import VideoClips
from jepa_zoo.data.video_views import video_eval_transform
from jepa_zoo.data.views import eval_transform
from jepa_zoo.data.schema import DataConfig

log = logging.getLogger(__name__)


def _torchvision_cifar10(root: str, train: bool, transform: Optional[Callable], download: bool, looked: str):
    """torchvision's CIFAR-10 (pickled batches) in ``root``, downloading when asked and online."""
    from torchvision.datasets import CIFAR10

    try:
        return CIFAR10(root, train=train, transform=transform, download=download)
    except (URLError, OSError, RuntimeError) as e:
        raise DataError(f"{looked} torchvision's CIFAR-10 in {root} is not usable either ({e}).") from e


class TookBatch(L.Callback):
    """After each training step, tell the datamodule its batch was used (``took_batch``).  A
    callback, not a module hook: Lightning runs callbacks' ``on_train_batch_end`` before the
    module's, and puts ``ModelCheckpoint`` last among callbacks, so a step checkpoint written
    there already counts the step.  A checkpoint written while a step runs (SLURM's requeue
    signal) does not count it, and the resumed run repeats it, as Lightning's loops do."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        took = getattr(trainer.datamodule, "took_batch", None)
        if callable(took):
            took()


class JEPADataModule(L.LightningDataModule):
    def __init__(self, cfg: DataConfig, train_transform: Optional[Callable], collate_fn: Optional[Callable] = None,
                 seed: int = 0, compile_photometric: bool = False, evaluation: bool = False,
                 drop_unreadable: bool = False, val_transform: Optional[Callable] = None):
        """``train_transform`` with ``photometric == "device"`` (LeJEPA, IWM under
        ``views.photometric=device``) leaves its photometric ops to :meth:`on_after_batch_transfer`,
        compiled with ``compile_photometric`` (``compile=true``).  ``evaluation``: every split as
        evaluation sees it (the evaluation transform, and for clips the evaluation sampling:
        ``data.eval_clips`` fixed clips per video), whatever ``train_transform`` is.  ``evaluation``
        or ``drop_unreadable``: under ``data.bad_images=skip`` an unreadable sample is returned as
        :class:`jepa_zoo.data.datasets.Unreadable` (dropped and counted) instead of being replaced.
        ``val_transform``: the validation transform (default: the evaluation transform of the data
        source's samples, centre crops of images or clips).  The data source (``data.name``, or
        ``data.module``'s) is read from :data:`jepa_zoo.data.schema.DATA_SOURCES`."""
        super().__init__()
        self.evaluation = evaluation
        self.unreadable = "drop" if (evaluation or drop_unreadable) and cfg.bad_images == "skip" else cfg.bad_images
        self.cfg = cfg
        self.train_transform = train_transform
        self.device_photometric: Optional[DevicePhotometric] = None
        if getattr(train_transform, "photometric", "loader") == "device":
            self.device_photometric = DevicePhotometric(train_transform)
            if compile_photometric:
                self.device_photometric.compile_()
        self.collate_fn = collate_fn
        self.seed = seed
        self.source = cfg.source  # its jepa_zoo.data.schema.DataSource
        if val_transform is None:  # the evaluation transform of the source's samples (a method may give its own)
            make_eval = video_eval_transform if self.source.sample == "clip" else eval_transform
            val_transform = make_eval(cfg.img_size, cfg.eval_crop_ratio, cfg.mean, cfg.std)
        self.val_transform = val_transform
        if evaluation:
            self.train_transform = self.val_transform
        self.train_set: Optional[Dataset] = None
        self.val_set: Optional[Dataset] = None
        self.train_loader: Optional[ResumableLoader] = None
        self.train_sampler: Optional[ResumableSampler] = None
        self._resume_at: Optional[Dict[str, int]] = None

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
        if self.source.build is not None:  # no folders to find
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
            if self.source.bare_root:
                return root  # a bare folder of class folders is its own training split
            raise DataError(f"data.root {root} has no '{split}/' folder (data={self.cfg.name})")
        return path

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        c = self.cfg
        if self.source.build is not None:  # a source without folders: its build makes both splits
            module, _, fn = self.source.build.partition(":")
            build = getattr(importlib.import_module(module), fn)
            self.train_set = build(c, self.train_transform, self.seed, True)
            self.val_set = build(c, self.val_transform, self.seed, False)
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
        held_out = find_held_out(root, c.val_split) if c.val_split is not None else None
        val_dir = held_out[1] if held_out else None
        if held_out and held_out[0] != c.val_split and not self.evaluation:
            log.info("validating on split '%s/' of %s (data.val_split=%s is not there)", held_out[0], root, c.val_split)
        self.train_set = SkipUnreadable(self._folder(train_dir, self.train_transform, not self.evaluation),
                                        self.unreadable)
        if len(self.train_set) == 0:
            raise DataError(f"no images found under {train_dir}")
        self.val_set = (self._shuffled(SkipUnreadable(self._folder(val_dir, self.val_transform, False), self.unreadable))
                        if val_dir is not None else None)
        if val_dir is None and c.val_split is not None and stage in (None, "fit"):
            log.warning("data.root %s has no validation split (looked for %s): validation is off (no probe/val_acc, "
                        "val/ monitors or image panels); data.val_split=<folder> names another one", root,
                        ", ".join(f"{s}/" for s in dict.fromkeys((c.val_split, *HELD_OUT_SPLITS))))

    def _folder(self, path: Path, transform: Optional[Callable], train: bool) -> Dataset:
        """The images (or, for video data, the clips) under ``path``."""
        c = self.cfg
        if self.source.sample != "clip":
            return image_folder(path, transform)
        return VideoClips(path, c.num_frames, c.frame_step, c.fps, clips=1 if train else c.eval_clips, train=train,
                          short=c.short_clips, transform=transform)

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
        common = dict(
            num_workers=workers,
            pin_memory=self.cfg.pin_memory and torch.cuda.is_available(),
            persistent_workers=workers > 0,
        )
        if not train:
            return DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate, **common)
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        sampler = self.train_sampler
        if sampler is None or (sampler.num_replicas, sampler.rank, sampler.batch_size) != (replicas, rank, batch_size):
            sampler = self.train_sampler = ResumableSampler(ds, batch_size, replicas, rank, seed=self.seed)
        # a reloaded loader (reload_dataloaders_every_n_epochs) keeps the sampler, so its epochs go on
        self.train_loader = ResumableLoader(ds, batch_size, sampler, self.collate_fn or collate, **common)
        if self._resume_at is not None:
            self.train_loader.load_state_dict(self._resume_at)
            self._resume_at = None
        return self.train_loader

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        world = self.trainer.world_size if self.trainer is not None else 1
        if len(self.train_set) < self.cfg.batch_size * world:
            raise DataError(
                f"data.batch_size={self.cfg.batch_size} per process x {world} process(es) is larger than the "
                f"training set ({len(self.train_set)} images)"
            )
        return self._loader(self.train_set, self.cfg.batch_size, train=True)

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return self._loader(self.val_set, self.cfg.val_batch_size or self.cfg.batch_size, train=False)

    def device_views(self, batch: Any, dtype: torch.dtype) -> Any:
        """A training batch whose views are left to the device -> the batch with its views made, cast
        to ``dtype`` (:class:`~jepa_zoo.data.photometric.DevicePhotometric`); any other batch as it is."""
        if self.device_photometric is None:
            return batch
        return batch._replace(inputs=self.device_photometric(batch.inputs, dtype))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``views.photometric=device``: each training batch's photometric ops, batched on its device
        in the module's dtype (bf16 under bf16-true), so that the step gets what the loader path
        gives.  Validation batches pass unchanged."""
        trainer = self.trainer  # None outside a Trainer
        if trainer is None or not trainer.training:
            return batch
        return self.device_views(batch, next(trainer.lightning_module.parameters()).dtype)

    def took_batch(self) -> None:
        """A training step has used its batch (called by :class:`TookBatch`)."""
        if self.train_loader is not None:
            trainer = self.trainer
            self.train_loader.took_batch(trainer.num_training_batches if trainer is not None else None)

    # The loader's position is saved and restored here rather than by Lightning's fit loop (which
    # also sees it, the loader being stateful): the schedules ask for ``estimated_stepping_batches``
    # in ``configure_optimizers``, which builds and starts the training loader before the fit
    # loop's state is restored, whereas the datamodule's state is restored before that.
    def state_dict(self) -> Dict[str, int]:
        return self.train_loader.state_dict() if self.train_loader is not None else {}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        if state and self.train_loader is not None:
            # strategies that restore after setup (fsdp) come here after the loader was built for
            # ``estimated_stepping_batches``; its sampler takes the position if no pass has begun
            if not self.train_loader.sampler.started:
                self.train_loader.load_state_dict(state)
                return
            warnings.warn("the training loader started before its checkpointed position was restored (a strategy "
                          "that restores after setup, e.g. FSDP or DeepSpeed): this epoch starts from its first "
                          "batch; resume is not exact", stacklevel=2)
        self._resume_at = dict(state) if state else None
