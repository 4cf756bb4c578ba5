"""The datasets of one evaluation: clean training images, augmented ones, the test split.

Any data group of training works (folder, tar archives, CIFAR-10, ImageNet
layout). The test split is ``data.val_split`` when the dataset has it, else the
first of ``test``, ``val``, ``validation`` that it has (logged: "evaluating on
split ..."). Images are converted to RGB by the loaders (greyscale, RGBA,
palette) and resized to the evaluation resolution (the short side to
``img_size / eval_crop_ratio``, then a centre crop).

With ``folds=K`` (cross-validation, :func:`cv_folds`) the training split is the test set too, its
folds taking turns, near-duplicate and mirrored samples kept together (:func:`duplicate_groups`).
Clips are sampled the evaluation way in every split (``data.eval_clips`` fixed clips per video).

An unreadable sample (a corrupt file) is dropped, not replaced by the next one as training does: a
substitute would be a duplicate, and under ``folds=K`` possibly a sample of another fold; the record
lists it under ``skipped`` and counts only readable queries (:func:`drop_unreadable_first`,
:class:`jepa_zoo.evaluation.features.FeatureCache`).

Refused, each in one line (``DataError``, exit 2): unlabelled images, fewer
than two classes, an empty split, a test split whose class folders differ from
the training split's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from torch.utils.data import Dataset, Subset

from jepa_zoo.data.datasets import HELD_OUT_SPLITS as TEST_SPLITS
from jepa_zoo.data.datasets import DataError, find_held_out, resolve_root
from jepa_zoo.data.schema import DataConfig

log = logging.getLogger("jepa_zoo.eval")


def find_test_split(data: DataConfig) -> DataConfig:
    """``data`` with ``val_split`` set to the split this evaluation reports on (logged)."""
    if not data.source.held_out:
        return data
    root = resolve_root(data.root, data.cache_dir)
    wanted = [s for s in (data.val_split, *TEST_SPLITS) if s]
    held_out = find_held_out(root, data.val_split)
    found = held_out[0] if held_out else None
    if found is None:
        raise DataError(f"data.root {root} has no test split: looked for {', '.join(dict.fromkeys(wanted))}/ "
                        "(data.val_split=<folder> names another one; folds=<K> cross-validates on the training split)")
    log.info("evaluating on split '%s' of %s%s", found, root,
             "" if found == data.val_split else f" (data.val_split={data.val_split} is not there)")
    return replace(data, val_split=found)


def labels_of(ds: Dataset) -> List[int]:
    """Every label of ``ds`` without decoding its images where the dataset lists them (ImageFolder,
    torchvision's CIFAR-10; through ``Subset`` and the unreadable-image wrapper); else read."""
    if isinstance(ds, Subset):
        inner = labels_of(ds.dataset)
        return [inner[i] for i in ds.indices]
    inner = getattr(ds, "ds", None)  # SkipUnreadable
    if isinstance(inner, Dataset):
        return labels_of(inner)
    targets = getattr(ds, "targets", None)
    if targets is not None:
        return [int(t) for t in targets]
    if hasattr(ds, "files"):  # FlatImageDataset: no class folders
        return [-1] * len(ds)
    return [int(ds[i][1]) for i in range(len(ds))]


@dataclass
class EvalSets:
    train: Dataset              # clean centre crops (the kNN bank, cached probe features, head selection)
    test: Dataset               # the test split, clean (a seeded subset with test_limit)
    labels: List[int]           # of every training image
    num_classes: int
    classes: Sequence[str]
    split: Optional[str]        # the test split's folder name (None: CIFAR-10 / fake)


def check_labels(train: Dataset, test: Dataset, labels: Sequence[int], root: Optional[str],
                 test_labels: Sequence[int] = ()) -> int:
    """The number of classes; refuses unlabelled data, one class, an empty split, differing class folders."""
    where = root or "the dataset"
    if len(train) == 0:
        raise DataError(f"{where}: the training split is empty")
    if len(test) == 0:
        raise DataError(f"{where}: the test split is empty")
    for split, ys in (("training", labels), ("test", test_labels)):
        if any(y < 0 for y in ys):
            raise DataError(f"{where}: the {split} images are not in class folders (<split>/<class>/*.jpg); "
                            "evaluation needs labels")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(f"{where}: the training split has {len(classes)} class; classification needs at least 2")
    a, b = list(getattr(train, "classes", []) or []), list(getattr(test, "classes", []) or [])
    if a and b and a != b:
        only_train, only_test = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise DataError(f"{where}: the training and test splits have different classes (only in training: "
                        f"{only_train or '-'}; only in test: {only_test or '-'})")
    return len(a) if a else max(classes) + 1


def root_name(data: DataConfig) -> str:
    """A short name of the dataset for file names and tables: a folder's (or archive's) name, else the
    group name (cifar10, imagenet, fake)."""
    if not data.source.named_by_root or not data.root:
        return data.name
    stem = Path(str(data.root)).name
    for ext in (".tar.gz", ".tgz", ".tar"):
        stem = stem[: -len(ext)] if stem.endswith(ext) else stem
    return stem


def build_sets(data: DataConfig, seed: int, folds: Optional[int] = None) -> Tuple[DataConfig, EvalSets]:
    """(``data`` with its test split found, the clean training and test sets with their labels).
    With ``folds`` (cross-validation) there is no test split: the test set is the training set,
    whose folds take turns (:func:`cv_folds`)."""
    from jepa_zoo.data.datamodule import JEPADataModule

    data = replace(data, val_split=None) if folds else find_test_split(data)
    clean = JEPADataModule(data, train_transform=None, seed=seed, evaluation=True)  # centre crops of every split
    clean.prepare_data()
    clean.setup("validate")
    if folds:
        clean.val_set = clean.train_set
    if clean.val_set is None:
        raise DataError(f"data.root {data.root} has no test split '{data.val_split}' (folds=<K> cross-validates "
                        "on the training split instead)")
    labels = labels_of(clean.train_set)
    test_labels = labels_of(clean.val_set) if data.source.held_out else ()
    num_classes = check_labels(clean.train_set, clean.val_set, labels, data.root, test_labels)
    num_classes = data.num_classes or num_classes
    return data, EvalSets(clean.train_set, clean.val_set, labels, num_classes,
                          list(getattr(clean.train_set, "classes", []) or []), data.val_split)


def cv_folds(labels: Sequence[int], pool: Sequence[int], folds: int, seed: int,
             groups: Optional[Dict[int, int]] = None) -> List[List[int]]:
    """``folds`` stratified folds of the indices ``pool``: each class's groups (``groups``: index ->
    group, :func:`duplicate_groups`; default one group per index) dealt round the folds in a seeded
    order, so a group never spans two folds."""
    import torch

    groups = groups or {i: i for i in pool}
    members: Dict[int, List[int]] = {}
    for i in pool:
        members.setdefault(groups[i], []).append(i)
    if folds > len(members):
        raise DataError(f"folds: {folds} folds of {len(members)} groups of training samples leave some empty")
    g = torch.Generator().manual_seed(seed)
    out: List[List[int]] = [[] for _ in range(folds)]
    slot = 0
    for c in sorted({labels[i] for i in pool}):
        ids = [k for k, m in sorted(members.items()) if labels[m[0]] == c]
        for j in torch.randperm(len(ids), generator=g).tolist():
            out[slot % folds].extend(members[ids[j]])
            slot += 1
    return [sorted(f) for f in out]


def thumbnail(x: Any, size: int = 16) -> Any:
    """A ``size`` x ``size`` grey thumbnail of a sample (an image, or a clip's middle frame)."""
    import torch.nn.functional as F

    if x.dim() == 5:  # several clips: the first
        x = x[0]
    if x.dim() == 4:  # [C, T, H, W]: the middle frame
        x = x[:, x.shape[1] // 2]
    return F.adaptive_avg_pool2d(x.float().mean(0, keepdim=True)[None], size)[0, 0]


def duplicate_groups(ds: Dataset, pool: Sequence[int], ratio: float = 0.2) -> Dict[int, int]:
    """Groups of near-duplicate samples among ``pool``: two samples whose thumbnails (or one's and
    the other's mirror image) are closer than ``ratio`` x the median distance between thumbnails
    share a group (transitively).  Cross-validation keeps a group in one fold, so a clip and its
    mirrored copy (the Weizmann set holds each video twice, once flipped) never test each other."""
    import torch

    thumbs = torch.stack([thumbnail(ds[i][0]) for i in pool])
    x, flipped = thumbs.flatten(1), thumbs.flip(-1).flatten(1)
    d = torch.minimum(torch.cdist(x, x), torch.cdist(x, flipped))
    off = d[~torch.eye(len(pool), dtype=torch.bool)]
    threshold = ratio * float(off.median()) if len(off) else 0.0
    parent = list(range(len(pool)))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in torch.nonzero(torch.triu(d < threshold, diagonal=1)).tolist():
        parent[root(a)] = root(b)
    return {i: pool[root(k)] for k, i in enumerate(pool)}


def augmented_set(data: DataConfig, crop_scale: Sequence[float], seed: int) -> Dataset:
    """The training images with the probes' light augmentation (random-resized crop + flip; clips:
    one crop and flip for the whole clip)."""
    from jepa_zoo.data.datamodule import JEPADataModule
    from jepa_zoo.data.video_views import video_train_transform
    from jepa_zoo.data.views import view_transform

    if data.video:
        transform = video_train_transform(data.img_size, list(crop_scale), (3 / 4, 4 / 3), 0.5, data.mean, data.std)
    else:
        transform = view_transform(data.img_size, list(crop_scale), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0,
                                   solarize_p=0.0, mean=data.mean, std=data.std)
    dm = JEPADataModule(data, train_transform=transform, seed=seed, drop_unreadable=True)
    dm.prepare_data()
    dm.setup("fit")
    return dm.train_set


def cached(cfg: Any) -> bool:
    """Whether the protocol reads features extracted once (:class:`FeatureCache`), which drops
    unreadable samples as it meets them; the others train on the fly."""
    return cfg.protocol == "knn" or (cfg.protocol == "linear" and cfg.probe.cache and cfg.features == "encoder")


def drop_unreadable_first(cfg: Any, sets, pool: List[int], test_idx: List[int]):
    """(pool, test indices, {index: path} dropped) with the unreadable samples found by one decoding
    pass taken out, where the feature cache would not drop them itself: under ``folds`` (folds are
    drawn from readable samples) and for the protocols that train on the fly."""
    from jepa_zoo.evaluation.features import unreadable_in

    if not cfg.folds and cached(cfg):
        return pool, test_idx, {}
    dropped = unreadable_in(sets.train, pool, cfg.batch_size, cfg.num_workers)
    pool = [i for i in pool if i not in dropped]
    if not cfg.folds:
        bad_test = unreadable_in(sets.test, test_idx, cfg.batch_size, cfg.num_workers)
        test_idx = [i for i in test_idx if i not in bad_test]
        dropped = {**dropped, **{("test", i): p for i, p in bad_test.items()}}
    return pool, test_idx, dropped


def skipped(dropped: Dict[Any, str], cache, pool: List[int], test_idx: List[int]) -> List[str]:
    """The unreadable samples this evaluation dropped (paths, sorted), logged in one line."""
    seen = {p for k, p in cache.unreadable.get("train", {}).items() if k in set(pool)}
    seen |= {p for k, p in cache.unreadable.get("test", {}).items() if k in set(test_idx)}
    paths = sorted(seen | set(dropped.values()))
    if paths:
        log.warning("%d unreadable sample%s dropped (not replaced), listed in the record's 'skipped': %s%s",
                    len(paths), "s" * (len(paths) > 1), ", ".join(paths[:3]), ", ..." if len(paths) > 3 else "")
    return paths
