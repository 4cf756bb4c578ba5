"""Evaluation entry point: ``python -m jepa_zoo.eval ckpt=<path> protocol=knn|linear|attentive|finetune``.

``ckpt``: a jepa_zoo checkpoint (rebuilt from its own validated config), official I-JEPA
weights (:mod:`jepa_zoo.weights`), or ``timm:<model name>`` (a stock timm architecture, with
``timm_file=<weights>`` or at random init). ``init=random`` keeps the run's seeded initialisation
(the baseline). The encoder evaluated is the one each method designates (EMA methods: the target
encoder; ``weights=context``: the online one). ``data=<group> data.root=<path>``: any dataset
(:mod:`jepa_zoo.evaluation.eval_data`), at the checkpoint's resolution and normalisation unless
the command sets ``data.img_size`` / ``data.mean`` / ``data.std`` (a video checkpoint on video data:
its clips too, unless ``data.num_frames`` / ``frame_step`` / ``fps`` are set).

* ``knn``: weighted kNN of pooled test features against the training images (clean centre crops),
  with the RankMe (effective rank) of the training features;
* ``linear``: a grid of heads (lr × wd) on features extracted once
  (:mod:`jepa_zoo.evaluation.linear_cached`; ``probe.copies`` augmented copies added to the
  training features), or with ``probe.cache=false`` on the frozen encoder with augmentation on
  the fly, like ``attentive`` (:mod:`jepa_zoo.evaluation.probes`); ``features=predictor`` puts the
  pretrained predictor between encoder and head and trains it too (IWM's predictor fine-tuning);
* ``finetune``: the encoder and a linear head trained end to end
  (:mod:`jepa_zoo.evaluation.finetune`: layer-wise LR decay, label smoothing).

Cross-validation: ``folds=K`` on a set without a test split (e.g. 72 video clips): stratified folds,
each the test set once, mean ± std over the folds.

Low-shot: ``shots=N`` images per class or ``fraction=f`` of each class, over ``seeds=S`` draws
(mean ± std; :mod:`jepa_zoo.evaluation.lowshot`). Probe heads are chosen on training images held
out before the draw. Features are extracted once for every seed (:mod:`jepa_zoo.evaluation.features`).

Writes ``eval_<protocol>[...]_<init>.json`` next to the checkpoint (for ``timm:`` in the run dir), or
into ``out=<dir>``, one file per result: every setting the command gives that changes it is in the
name (:mod:`jepa_zoo.evaluation.records`); logs its path and a table, and prints it as one JSON line.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset, Subset

from jepa_zoo.config import ConfigError
from jepa_zoo.data.datasets import DataError
from jepa_zoo.evaluation.records import hashed_settings, out_dir, record_path, result_tag, set_by, write_record

log = logging.getLogger("jepa_zoo.eval")


def load_checkpoint(path: Path) -> Dict:
    """The checkpoint at ``ckpt=`` (:func:`jepa_zoo.checkpointing.read_checkpoint`)."""
    from jepa_zoo.checkpointing import read_checkpoint

    return read_checkpoint(path, "ckpt")


def _data(cfg: DictConfig) -> Tuple[Optional[Any], Dict[str, Any]]:
    """The ``data=...`` the command chose (a validated DataConfig) or None, and the ``data.<key>``
    settings given without a ``data=`` group (``{}`` when none): those change the checkpoint's own
    dataset (``+data.img_size=24`` alone evaluates its data at 24 px, not a default dataset)."""
    from omegaconf import OmegaConf

    from jepa_zoo.data.schema import DataConfig
    from jepa_zoo.pretrained import typed_data

    if cfg.get("data") is None:
        return None, {}
    if "name" not in cfg.data:  # every data group names its dataset: these are settings alone
        try:
            return None, OmegaConf.to_container(cfg.data, resolve=True)
        except Exception as e:  # noqa: BLE001 - an interpolation that names nothing: one line
            raise ConfigError(f"data: {str(e).splitlines()[0]}") from None
    return typed_data(DataConfig, cfg.data), {}


# settings that keep a dataset's name in the record file (each its own tag, or the settings hash)
OWN_DATA_KEYS = ("img_size", "mean", "std", "eval_clips", "num_frames", "frame_step", "fps")


def command_overrides() -> List[str]:
    """The command line's overrides (``key=value``), as Hydra recorded them; none outside Hydra."""
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return []
    return OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)  # as typed: ${...} unresolved


def own_fields(overrides: List[str]) -> Tuple[str, ...]:
    """The fields of ``RESOLUTION`` that keep the checkpoint's values: those ``overrides`` do not set.
    A clip's spacing is one choice: setting ``frame_step`` or ``fps`` sets both (``fps`` wins when set)."""
    from jepa_zoo.pretrained import RESOLUTION

    given = set(set_by(overrides, RESOLUTION))
    if given & {"frame_step", "fps"}:
        given |= {"frame_step", "fps"}
    return tuple(k for k in RESOLUTION if k not in given)


def load_model(cfg: DictConfig, overrides: Optional[List[str]] = None) -> Any:
    """The :class:`jepa_zoo.pretrained.Loaded` model of ``ckpt=``: a jepa_zoo checkpoint with its own
    config (its dataset unless ``data=...`` names another, then at the checkpoint's resolution and
    normalisation unless the command sets them), foreign weights (:mod:`jepa_zoo.weights`, e.g. the
    official I-JEPA files), which need ``data=...``, or ``timm:<model name>``. ``data.<key>`` settings
    without a ``data=`` group change a jepa_zoo checkpoint's own dataset before its model is built.
    ``overrides``: the evaluation's overrides (a suite entry's; default: the command line's)."""
    from jepa_zoo.pretrained import TIMM_PREFIX, load_any, load_timm

    trained, (data, patch) = cfg.init == "trained", _data(cfg)
    ckpt = str(cfg.ckpt)
    if ckpt.startswith(TIMM_PREFIX):
        return load_timm(ckpt[len(TIMM_PREFIX):], "ckpt", data, cfg.timm_file, trained)
    if cfg.timm_file:
        raise ConfigError(f"timm_file: loads into ckpt={TIMM_PREFIX}<model name>, not into ckpt={ckpt}")
    own = own_fields(command_overrides() if overrides is None else overrides)
    return load_any(Path(ckpt), "ckpt", data, trained=trained, need_data=True, own_resolution=own,
                    data_settings=patch)


PROTOCOLS = ("knn", "linear", "attentive", "finetune")


INTEGERS = ("train_limit", "test_limit", "shots", "seeds", "folds", "batch_size", "num_workers", "probe.epochs",
            "probe.min_steps", "probe.copies", "probe.max_steps", "finetune.epochs", "finetune.max_steps")
NUMBERS = ("fraction", "probe.select_fraction", "knn.temperature")


def _check_types(cfg: DictConfig) -> None:
    """A key that takes a whole number (or a number) given something else: one line naming it."""
    from omegaconf import OmegaConf

    for keys, kind, ok in ((INTEGERS, "a whole number", lambda v: isinstance(v, int)),
                           (NUMBERS, "a number", lambda v: isinstance(v, (int, float)))):
        for key in keys:
            value = OmegaConf.select(cfg, key, default=None)
            if value is not None and (isinstance(value, bool) or not ok(value)):
                raise ConfigError(f"{key}: must be {kind} or null, got {value!r}")


def _check_args(cfg: DictConfig) -> None:
    _check_types(cfg)
    if cfg.protocol not in PROTOCOLS:
        raise ConfigError(f"protocol: {cfg.protocol!r} is not available; allowed: {', '.join(PROTOCOLS)}")
    if cfg.weights not in ("target", "context"):
        raise ConfigError(f"weights: {cfg.weights!r}; allowed: target (the EMA target encoder) or context (the online one)")
    if cfg.init not in ("trained", "random"):
        raise ConfigError(f"init: must be 'trained' or 'random', got {cfg.init!r}")
    if cfg.features not in ("encoder", "predictor"):
        raise ConfigError(f"features: must be 'encoder' or 'predictor', got {cfg.features!r}")
    if cfg.features == "predictor" and cfg.protocol in ("knn", "finetune"):
        raise ConfigError("features: 'predictor' trains the predictor; use protocol=linear or attentive")
    for key in ("train_limit", "test_limit"):
        if cfg[key] is not None and cfg[key] < 1:
            raise ConfigError(f"{key}: must be >= 1 or null, got {cfg[key]}")
    if not 0 < cfg.probe.select_fraction < 1:
        raise ConfigError(f"probe.select_fraction: must be in (0, 1), got {cfg.probe.select_fraction}")
    if cfg.protocol in ("linear", "attentive") and not (cfg.probe.lrs and cfg.probe.wds):
        raise ConfigError("probe.lrs / probe.wds: give at least one value each")
    if cfg.shots is not None and cfg.fraction is not None:
        raise ConfigError("shots / fraction: give one of them (images per class, or a fraction of each class)")
    if cfg.shots is not None and cfg.shots < 1:
        raise ConfigError(f"shots: must be >= 1 images per class, got {cfg.shots}")
    if cfg.fraction is not None and not 0 < cfg.fraction <= 1:
        raise ConfigError(f"fraction: must be in (0, 1], got {cfg.fraction}")
    if cfg.seeds < 1:
        raise ConfigError(f"seeds: must be >= 1, got {cfg.seeds}")
    if cfg.folds is not None and cfg.folds < 2:
        raise ConfigError(f"folds: must be >= 2 (or null: the test split), got {cfg.folds}")
    if cfg.folds is not None and (cfg.seeds > 1 or cfg.test_limit is not None):
        raise ConfigError("folds: the folds are the repeats and the test sets; leave seeds and test_limit unset")
    if cfg.probe.copies < 0:
        raise ConfigError(f"probe.copies: must be >= 0, got {cfg.probe.copies}")
    if cfg.probe.copies and not (cfg.protocol == "linear" and cfg.probe.cache):
        raise ConfigError("probe.copies: augmented feature copies are for the cached linear probe (protocol=linear, "
                          "probe.cache=true)")


def _subset(ds: Dataset, limit: Optional[int], seed: int) -> List[int]:
    """Indices of a seeded subset of at most ``limit`` images (all, in order, with no limit)."""
    if limit is None or limit >= len(ds):
        return list(range(len(ds)))
    return torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:limit].tolist()


def holdout(indices: List[int], fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """(fit, select): a seeded ``fraction`` of ``indices`` (at least one) held out to select a probe head."""
    n_select = max(1, round(fraction * len(indices)))
    if n_select >= len(indices):
        raise ConfigError(f"probe.select_fraction: holding out {n_select} of {len(indices)} training images "
                          f"leaves none to train on; use more images (train_limit) or a smaller fraction")
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed + 1)).tolist()
    return [indices[i] for i in sorted(order[n_select:])], [indices[i] for i in sorted(order[:n_select])]


def run_knn(cfg: DictConfig, cache, sets, train_idx: List[int], test_idx: List[int]) -> Dict[str, Any]:
    from jepa_zoo.evaluation.knn import knn_accuracy
    from jepa_zoo.evaluation.rankme import rankme

    bank, bank_y = cache.get("train", sets.train, train_idx, "training images (the bank)")
    queries, query_y = cache.get("test", sets.test, test_idx, "test images (the queries)")
    result = knn_accuracy(bank, bank_y, queries, query_y, ks=list(cfg.knn.k), temperature=cfg.knn.temperature)
    # the effective rank of the bank's features (a collapse check beside the accuracy)
    return {**result, "rankme": rankme(bank.float())}


def run_cached_linear(cfg: DictConfig, cache, sets, augmented: Optional[Dataset], fit_idx: List[int],
                      select_idx: List[int], test_idx: List[int], seed: int) -> Dict[str, Any]:
    """The linear grid on cached features: clean training features plus ``probe.copies`` augmented copies."""
    from jepa_zoo.evaluation.linear_cached import fit_linear_grid

    x, y = cache.get("train", sets.train, fit_idx, "training images")
    xs, ys = [x], [y]
    for c in range(cfg.probe.copies):
        torch.manual_seed(seed + 7919 * (c + 1))  # each copy its own crops and flips, reproducibly
        xc, yc = cache.get(("augmented", c, tuple(cfg.probe.crop_scale)), augmented, fit_idx,
                           f"training images (augmented copy {c + 1})")
        xs.append(xc)
        ys.append(yc)
    p = cfg.probe
    select = cache.get("train", sets.train, select_idx, "held-out training images (head selection)")
    test = cache.get("test", sets.test, test_idx, "test images")
    start = time.perf_counter()
    result = fit_linear_grid((torch.cat(xs), torch.cat(ys)), select, test, sets.num_classes, list(p.lrs),
                             list(p.wds), p.epochs, cfg.batch_size, seed=seed,
                             min_steps=p.min_steps)
    log.info("linear heads (%d) trained on %d cached features (%d steps) in %.1f s", len(p.lrs) * len(p.wds),
             sum(map(len, xs)), result["steps"], time.perf_counter() - start)
    return result


def _draw(cfg: DictConfig, sets, pool: List[int], seed: int) -> List[int]:
    from jepa_zoo.evaluation.lowshot import draw

    if cfg.shots is None and cfg.fraction is None:
        return pool
    return draw(sets.labels, pool, seed, shots=cfg.shots, fraction=cfg.fraction, class_names=sets.classes)


def readable(cache, key: str, indices: List[int]) -> int:
    """How many of ``indices`` the feature cache could read (after it has extracted them)."""
    return len(indices) - len(set(indices) & cache.unreadable.get(key, {}).keys())


def run_once(cfg: DictConfig, model: Any, encoder: torch.nn.Module, cache, sets, augmented_set: Callable[[], Dataset],
             pool: List[int], test_idx: List[int], seed: int) -> Tuple[Dict[str, Any], Dict[str, int]]:
    """One evaluation (one seed's draw): (its result, the image counts). ``augmented_set()``: the
    training images with crop + flip, built on first use (its randomness is the global RNG's)."""
    from jepa_zoo.evaluation.trained import run_finetune, run_probe

    if cfg.protocol == "knn":  # the bank: clean, centre-cropped training images
        train_idx = _draw(cfg, sets, pool, seed)
        result = run_knn(cfg, cache, sets, train_idx, test_idx)
        return result, {"train_images": readable(cache, "train", train_idx)}
    if cfg.protocol == "finetune":
        train_idx = _draw(cfg, sets, pool, seed)
        train_set = Subset(augmented_set(), train_idx)
        test = {"test": Subset(sets.test, test_idx)}
        # each seed or fold fine-tunes its own copy: none starts from another's training (or its test images)
        tuned = copy.deepcopy(encoder)
        return run_finetune(cfg, tuned, train_set, test, sets.num_classes), {"train_images": len(train_idx)}
    fit_pool, select_idx = holdout(pool, cfg.probe.select_fraction, seed)  # held out before a low-shot draw
    fit_idx = _draw(cfg, sets, fit_pool, seed)
    counts = {"train_images": len(fit_idx), "select_images": len(select_idx)}
    if cfg.protocol == "linear" and cfg.probe.cache and cfg.features == "encoder":
        augmented = augmented_set() if cfg.probe.copies else None
        result = run_cached_linear(cfg, cache, sets, augmented, fit_idx, select_idx, test_idx, seed)
        return result, {"train_images": readable(cache, "train", fit_idx),
                        "select_images": readable(cache, "train", select_idx)}
    torch.manual_seed(seed)
    probe_sets = {"select": Subset(sets.train, select_idx), "test": Subset(sets.test, test_idx)}
    return run_probe(cfg, model, encoder, Subset(augmented_set(), fit_idx), probe_sets,
                     sets.num_classes), counts


def evaluate(cfg: DictConfig, caches: Optional[Dict[Any, Any]] = None,
             overrides: Optional[List[str]] = None) -> Dict[str, Any]:
    """Evaluate ``cfg.ckpt`` as ``cfg`` says; write and print the record; return it. ``caches``: the
    :class:`FeatureCache` of each encoder and dataset seen so far (a suite's entries share them);
    ``overrides``: those that made ``cfg`` (a suite entry's; default: the command line's)."""
    from jepa_zoo.evaluation.eval_data import (augmented_set, build_sets, cv_folds, drop_unreadable_first,
                                               duplicate_groups, root_name, skipped)
    from jepa_zoo.evaluation.features import FeatureCache
    from jepa_zoo.evaluation.lowshot import summarize
    from jepa_zoo.loggers import quiet_logs
    from jepa_zoo.pretrained import TIMM_PREFIX

    import lightning  # noqa: F401 - before quiet_logs: its import adds the console handlers quiet_logs removes
    quiet_logs()
    _check_args(cfg)
    out_dir(cfg)  # out=<dir> made (or refused) before any work
    overrides = command_overrides() if overrides is None else overrides
    loaded = load_model(cfg, overrides)
    model, tc, step = loaded.model, loaded.config, loaded.step
    if cfg.data_root:
        tc.data.root = str(cfg.data_root)
    if tc.data.video and not tc.backbone.video:
        raise ConfigError(f"data: data={tc.data.name} gives clips, and this checkpoint's encoder takes images "
                          f"(method={tc.method.name}); evaluate it on an image dataset")
    # weights=context: the online encoder instead of the EMA target (one and the same for LeJEPA)
    encoder = (model.backbone if cfg.weights == "context" else model.eval_encoder).eval()
    data, sets = build_sets(tc.data, tc.seed, cfg.folds)
    ckpt = str(cfg.ckpt)
    timm = ckpt.startswith(TIMM_PREFIX)
    init = "random" if timm and not cfg.timm_file else cfg.init  # a stock timm model without weights
    log.info("evaluating at %d px (mean %s, std %s) on %d training and %d test images, %d classes", data.img_size,
             list(data.mean), list(data.std), len(sets.train), len(sets.test), sets.num_classes)
    # the random init of a jepa_zoo checkpoint is its method, backbone and seed: one key for the baseline
    init_key = hashlib.sha1(json.dumps([tc.method.name, asdict(tc.backbone), tc.seed, cfg.weights, init],
                                       sort_keys=True, default=str).encode()).hexdigest()[:16]
    same_images = (data.name, data.root, data.train_split, data.val_split, data.img_size, tuple(data.mean),
                   tuple(data.std), data.eval_crop_ratio, data.num_frames, data.frame_step, data.fps, data.eval_clips,
                   data.short_clips)
    key = (init_key if init == "random" else (ckpt, cfg.weights), same_images)
    caches = {} if caches is None or cfg.protocol == "finetune" else caches  # fine-tuning changes the encoder
    cache = caches.setdefault(key, FeatureCache(encoder, cfg.batch_size, cfg.num_workers))
    pool = _subset(sets.train, cfg.train_limit, tc.seed)
    test_idx = _subset(sets.test, cfg.test_limit, tc.seed + 2)
    pool, test_idx, dropped = drop_unreadable_first(cfg, sets, pool, test_idx)  # dropped, never replaced
    augmented = functools.lru_cache(maxsize=None)(lambda: augmented_set(data, cfg.probe.crop_scale, tc.seed))
    if cfg.folds:  # cross-validation: each fold is the test set once, the others train
        groups = duplicate_groups(sets.train, pool)
        log.info("cross-validation: %d samples in %d groups (near-duplicate or mirrored samples share a fold)",
                 len(pool), len(set(groups.values())))
        folds = cv_folds(sets.labels, pool, cfg.folds, tc.seed + 2, groups)
        runs = [run_once(cfg, model, encoder, cache, sets, augmented, sorted(set(pool) - set(fold)), fold,
                         tc.seed + 1000 * k) for k, fold in enumerate(folds)]
        test_idx = [i for fold in folds for i in fold]
    else:
        runs = [run_once(cfg, model, encoder, cache, sets, augmented, pool, test_idx, tc.seed + 1000 * s)
                for s in range(cfg.seeds)]
    result = runs[0][0] if len(runs) == 1 else summarize([r for r, _ in runs])
    if cfg.folds:
        result["per_fold"] = result.pop("per_seed")
    chosen_data = cfg.get("data") or {}  # a data=<group>, or settings that change the checkpoint's own dataset
    other = "name" in chosen_data or any(k not in OWN_DATA_KEYS for k in chosen_data)
    tag = result_tag(cfg, data, root_name(data) if other else None, overrides)
    record = {"ckpt": ckpt, "protocol": cfg.protocol, "features": cfg.features, "init": init,
              "weights": cfg.weights, "step": step, **runs[0][1],
              "queries": readable(cache, "test", test_idx),
              "data": root_name(data), "split": sets.split, "img_size": data.img_size,
              **({"num_frames": data.num_frames, "frame_step": data.frame_step, "fps": data.fps,
                  "clips": data.eval_clips} if data.video else {}),
              **({"shots": cfg.shots} if cfg.shots is not None else {}),
              **({"fraction": cfg.fraction} if cfg.fraction is not None else {}),
              **({"seeds": cfg.seeds} if cfg.seeds > 1 else {}), **({"folds": cfg.folds} if cfg.folds else {}),
              **({"train_limit": cfg.train_limit} if cfg.train_limit is not None else {}),
              **({"test_limit": cfg.test_limit} if cfg.test_limit is not None else {}),
              **({"settings": hashed_settings(overrides)} if hashed_settings(overrides) else {}),
              "skipped": skipped(dropped, cache, pool, test_idx), "init_key": init_key, "unit": "percent", **result}
    where = Path(HydraConfig.get().runtime.output_dir) if timm and HydraConfig.initialized() else Path(ckpt).parent
    try:
        out = record_path(cfg, tag, init, where)
    except ConfigError:
        print(json.dumps(record))  # the result is not lost
        raise
    record["file"] = str(out)
    write_record(record, out)
    return record


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from jepa_zoo.runs import is_fresh, remove_launch

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    fresh = is_fresh(out_dir)
    try:
        if cfg.get("suite") is None and OmegaConf.is_missing(cfg, "ckpt"):
            raise ConfigError("ckpt: which weights to evaluate? ckpt=<run dir>/checkpoints/last.ckpt, an official "
                              "or Hugging Face file, or timm:<model name> (docs/evaluation.md)")
        if cfg.get("suite") is not None:
            from jepa_zoo.suite import run_suite

            run_suite(cfg, evaluate)
        else:
            evaluate(cfg)
    except (ConfigError, DataError) as e:
        log.error("%s: %s", type(e).__name__, e)
        if fresh:  # a refused evaluation leaves no run dir behind
            remove_launch(out_dir, f"{hc.job.name}.log")
        sys.exit(2)


if __name__ == "__main__":
    from jepa_zoo.cli import check_keys, check_paths

    check_paths(sys.argv[1:])
    check_keys(sys.argv[1:], Path(__file__).parent / "conf", "eval")
    main()
