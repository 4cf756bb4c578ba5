"""Evaluation entry point: ``python -m jepa_zoo.eval ckpt=<path> protocol=knn|linear|attentive|finetune``.

``ckpt``: a jepa_zoo checkpoint (rebuilt from its own validated config), official I-JEPA
weights (:mod:`jepa_zoo.weights`), or ``timm:<model name>`` (a stock timm architecture, with
``timm_file=<weights>`` or at random init). ``init=random`` keeps the run's seeded initialisation
(the baseline). The encoder evaluated is the one each method designates (EMA methods: the target
encoder; ``weights=context``: the online one). ``data=<group> data.root=<path>``: any dataset
(:mod:`jepa_zoo.evaluation.eval_data`), at the checkpoint's resolution and normalisation unless
the command sets ``data.img_size`` / ``data.mean`` / ``data.std``.

* ``knn``: weighted kNN of pooled test features against the training images (clean centre crops);
* ``linear``: a grid of heads (lr × wd) on features extracted once
  (:mod:`jepa_zoo.evaluation.linear_cached`; ``probe.copies`` augmented copies added to the
  training features), or with ``probe.cache=false`` on the frozen encoder with augmentation on
  the fly, like ``attentive`` (:mod:`jepa_zoo.evaluation.probes`); ``features=predictor`` puts the
  pretrained predictor between encoder and head and trains it too (IWM's predictor fine-tuning);
* ``finetune``: the encoder and a linear head trained end to end
  (:mod:`jepa_zoo.evaluation.finetune`: layer-wise LR decay, label smoothing).

Low-shot: ``shots=N`` images per class or ``fraction=f`` of each class, over ``seeds=S`` draws
(mean ± std; :mod:`jepa_zoo.evaluation.lowshot`). Probe heads are chosen on training images held
out before the draw. Features are extracted once for every seed (:mod:`jepa_zoo.evaluation.features`).

Prints and writes ``eval_<protocol>[_predictor][_context][_<N>shot|_frac<f>][_on-<data>]_<init>.json``
next to the checkpoint (for ``timm:`` in the run dir); ``<data>``: the name of ``data.root``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch import Callback
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Subset

from jepa_zoo.config import ConfigError
from jepa_zoo.data.datasets import DataError

log = logging.getLogger("jepa_zoo.eval")


def load_checkpoint(path: Path) -> Dict:
    """The checkpoint at ``ckpt=`` (:func:`jepa_zoo.checkpointing.read_checkpoint`)."""
    from jepa_zoo.checkpointing import read_checkpoint

    return read_checkpoint(path, "ckpt")


def _data(cfg: DictConfig) -> Optional[Any]:
    """The ``data=...`` the command chose (a validated DataConfig), or None."""
    from omegaconf import OmegaConf

    from jepa_zoo.data.schema import DataConfig

    if cfg.get("data") is None:
        return None
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), cfg.data))
    except Exception as e:  # noqa: BLE001 - OmegaConf's type and key errors: one line naming the key
        raise ConfigError(f"data.{getattr(e, 'full_key', '') or ''}: {str(e).splitlines()[0]}") from None


def _set_on_command_line(keys: Tuple[str, ...]) -> List[str]:
    """Those of ``keys`` (``data.<key>``) that the command line sets."""
    if not HydraConfig.initialized():
        return []
    task = [o.lstrip("+~") for o in HydraConfig.get().overrides.task]
    return [k for k in keys if any(o.split("=", 1)[0] == f"data.{k}" for o in task)]


def load_model(cfg: DictConfig) -> Any:
    """The :class:`jepa_zoo.pretrained.Loaded` model of ``ckpt=``: a jepa_zoo checkpoint with its own
    config (its dataset unless ``data=...`` names another, then at the checkpoint's resolution and
    normalisation unless the command sets them), foreign weights (:mod:`jepa_zoo.weights`, e.g. the
    official I-JEPA files), which need ``data=...``, or ``timm:<model name>``."""
    from jepa_zoo.pretrained import RESOLUTION, TIMM_PREFIX, load_any, load_timm

    trained, data = cfg.init == "trained", _data(cfg)
    ckpt = str(cfg.ckpt)
    if ckpt.startswith(TIMM_PREFIX):
        return load_timm(ckpt[len(TIMM_PREFIX):], "ckpt", data, cfg.timm_file, trained)
    if cfg.timm_file:
        raise ConfigError(f"timm_file: loads into ckpt={TIMM_PREFIX}<model name>, not into ckpt={ckpt}")
    own = tuple(k for k in RESOLUTION if k not in _set_on_command_line(RESOLUTION))
    return load_any(Path(ckpt), "ckpt", data, trained=trained, need_data=True, own_resolution=own)


PROTOCOLS = ("knn", "linear", "attentive", "finetune")


def _check_args(cfg: DictConfig) -> None:
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

    bank, bank_y = cache.get("train", sets.train, train_idx, "training images (the bank)")
    queries, query_y = cache.get("test", sets.test, test_idx, "test images (the queries)")
    return knn_accuracy(bank, bank_y, queries, query_y, ks=list(cfg.knn.k), temperature=cfg.knn.temperature)


def run_cached_linear(cfg: DictConfig, cache, sets, augmented: Optional[Dataset], fit_idx: List[int],
                      select_idx: List[int], test_idx: List[int], seed: int) -> Dict[str, Any]:
    """The linear grid on cached features: clean training features plus ``probe.copies`` augmented copies."""
    from jepa_zoo.evaluation.linear_cached import fit_linear_grid

    x, y = cache.get("train", sets.train, fit_idx, "training images")
    xs, ys = [x], [y]
    for c in range(cfg.probe.copies):
        torch.manual_seed(seed + 7919 * (c + 1))  # each copy its own crops and flips, reproducibly
        xc, yc = cache.get(("augmented", c), augmented, fit_idx, f"training images (augmented copy {c + 1})")
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


def run_probe(cfg: DictConfig, model, encoder: torch.nn.Module, train_set: Dataset, sets: Dict[str, Dataset],
              num_classes: int) -> Dict[str, Any]:
    """Train a grid of linear / attentive heads (and, with ``features=predictor``, the predictor);
    the head is chosen on ``sets["select"]`` (held out from the training images) and reported on
    ``sets["test"]``."""
    from jepa_zoo.evaluation.probes import ProbeModule

    predictor = None
    if cfg.features == "predictor":
        from jepa_zoo.models.predictor import Predictor

        predictor = getattr(model, "predictor", None)
        if not isinstance(predictor, Predictor):
            raise ConfigError(f"features: method {model.cfg.method.name} has no JEPA predictor "
                              f"(jepa_zoo.models.predictor.Predictor) to put before the head")
        predictor.train()
    p = cfg.probe
    probe = ProbeModule(encoder, num_classes, cfg.protocol, lrs=list(p.lrs), wds=list(p.wds),
                        predictor=predictor, predictor_lr=p.predictor_lr, num_heads=p.num_heads)
    scores = _fit(cfg, p, probe, train_set, sets)
    return probe.results(scores["select"], scores["test"])


class EpochLog(Callback):
    """One log line per training epoch of a head / fine-tuning (the bar is off by default)."""

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        log.info("  epoch %d/%d: %d steps, train/loss %s, %.1f s", trainer.current_epoch + 1, trainer.max_epochs,
                 trainer.global_step, f"{float(loss):.4f}" if loss is not None else "-", time.perf_counter() - self.start)


def _fit(cfg: DictConfig, schedule: DictConfig, module, train_set: Dataset, sets: Dict[str, Dataset]) -> Dict:
    """Train ``module`` (``schedule``: epochs, max_steps, precision), then validate it on each of
    ``sets``; ``{name: the metrics logged on it}``.  The batch is at most the training set's size
    (the loader drops a last partial batch), and a fit in which no step ran is refused."""
    import warnings

    import lightning as L

    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # the frozen encoder, on purpose
    warnings.filterwarnings("ignore", message=r"You defined a `validation_step` but have no `val_dataloader`")
    batch = min(cfg.batch_size, len(train_set))
    if batch < cfg.batch_size:
        log.info("batch_size: %d training images, so batches of %d (not %d)", len(train_set), batch, cfg.batch_size)
    loader = dict(batch_size=batch, num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0)
    trainer = L.Trainer(
        max_epochs=schedule.epochs, max_steps=schedule.max_steps if schedule.max_steps is not None else -1,
        precision=schedule.precision, logger=False, enable_checkpointing=False, enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, callbacks=[EpochLog()],
        default_root_dir=str(Path(HydraConfig.get().runtime.output_dir)) if HydraConfig.initialized() else None,
    )
    log.info("training for %d epoch(s) of %d batches on %d images%s ...", schedule.epochs, len(train_set) // batch,
             len(train_set), "" if cfg.progress_bar else " (progress_bar=true shows a bar)")
    trainer.fit(module, DataLoader(train_set, shuffle=True, drop_last=True, **loader))
    if trainer.global_step == 0:
        raise DataError(f"no training step ran ({len(train_set)} training images, batch {batch}): no result written")
    log.info("trained %d steps on %d images; validating on %s", trainer.global_step, len(train_set),
             ", ".join(f"{k} ({len(v)} images)" for k, v in sets.items()))
    out = {}
    trainer.limit_val_batches = 1.0  # off during fit: the sets are validated once, here
    for name, ds in sets.items():
        (out[name],) = trainer.validate(module, DataLoader(ds, **{**loader, "batch_size": cfg.batch_size}),
                                        verbose=False)
    return out


def run_finetune(cfg: DictConfig, encoder: torch.nn.Module, train_set: Dataset, sets: Dict[str, Dataset],
                 num_classes: int) -> Dict[str, Any]:
    """Fine-tune the evaluation encoder end to end with a linear head."""
    from jepa_zoo.evaluation.finetune import FinetuneModule

    f = cfg.finetune
    try:
        module = FinetuneModule(encoder, num_classes, lr=f.lr, weight_decay=f.weight_decay,
                                layer_decay=f.layer_decay, label_smoothing=f.label_smoothing)
    except ValueError as e:
        raise ConfigError(f"finetune: {e}") from None
    return module.results(_fit(cfg, f, module, train_set, sets)["test"])


def _draw(cfg: DictConfig, sets, pool: List[int], seed: int) -> List[int]:
    from jepa_zoo.evaluation.lowshot import draw

    if cfg.shots is None and cfg.fraction is None:
        return pool
    return draw(sets.labels, pool, seed, shots=cfg.shots, fraction=cfg.fraction, class_names=sets.classes)


def run_once(cfg: DictConfig, model: Any, encoder: torch.nn.Module, cache, sets, data: Any, pool: List[int],
             test_idx: List[int], seed: int) -> Tuple[Dict[str, Any], Dict[str, int]]:
    """One evaluation (one seed's draw): (its result, the image counts)."""
    from jepa_zoo.evaluation.eval_data import augmented_set

    if cfg.protocol == "knn":  # the bank: clean, centre-cropped training images
        train_idx = _draw(cfg, sets, pool, seed)
        return run_knn(cfg, cache, sets, train_idx, test_idx), {"train_images": len(train_idx)}
    if cfg.protocol == "finetune":
        train_idx = _draw(cfg, sets, pool, seed)
        train_set = Subset(augmented_set(data, cfg.probe.crop_scale, seed), train_idx)
        test = {"test": Subset(sets.test, test_idx)}
        return run_finetune(cfg, encoder, train_set, test, sets.num_classes), {"train_images": len(train_idx)}
    fit_pool, select_idx = holdout(pool, cfg.probe.select_fraction, seed)  # held out before a low-shot draw
    fit_idx = _draw(cfg, sets, fit_pool, seed)
    counts = {"train_images": len(fit_idx), "select_images": len(select_idx)}
    if cfg.protocol == "linear" and cfg.probe.cache and cfg.features == "encoder":
        augmented = augmented_set(data, cfg.probe.crop_scale, seed) if cfg.probe.copies else None
        return run_cached_linear(cfg, cache, sets, augmented, fit_idx, select_idx, test_idx, seed), counts
    torch.manual_seed(seed)
    probe_sets = {"select": Subset(sets.train, select_idx), "test": Subset(sets.test, test_idx)}
    return run_probe(cfg, model, encoder, Subset(augmented_set(data, cfg.probe.crop_scale, seed), fit_idx), probe_sets,
                     sets.num_classes), counts


def result_tag(cfg: DictConfig, data_name: Optional[str]) -> str:
    """``<protocol>[_predictor][_context][_<N>shot|_frac<f>][_on-<data>]``: one file per evaluation."""
    return "_".join([cfg.protocol, *(["predictor"] if cfg.features == "predictor" else []),
                     *(["context"] if cfg.weights == "context" else []),
                     *([f"{cfg.shots}shot"] if cfg.shots is not None else []),
                     *([f"frac{cfg.fraction:g}"] if cfg.fraction is not None else []),
                     *([f"on-{data_name}"] if data_name else [])])


def evaluate(cfg: DictConfig, caches: Optional[Dict[Any, Any]] = None) -> Dict[str, Any]:
    """Evaluate ``cfg.ckpt`` as ``cfg`` says; write and print the record; return it. ``caches``: the
    :class:`FeatureCache` of each encoder and dataset seen so far (a suite's entries share them)."""
    from jepa_zoo.evaluation.eval_data import build_sets, root_name
    from jepa_zoo.evaluation.features import FeatureCache
    from jepa_zoo.evaluation.lowshot import summarize
    from jepa_zoo.loggers import quiet_logs
    from jepa_zoo.pretrained import TIMM_PREFIX

    quiet_logs()
    _check_args(cfg)
    loaded = load_model(cfg)
    model, tc, step = loaded.model, loaded.config, loaded.step
    if cfg.data_root:
        tc.data.root = str(cfg.data_root)
    # weights=context: the online encoder instead of the EMA target (one and the same for LeJEPA)
    encoder = (model.backbone if cfg.weights == "context" else model.eval_encoder).eval()
    data, sets = build_sets(tc.data, tc.seed)
    ckpt = str(cfg.ckpt)
    timm = ckpt.startswith(TIMM_PREFIX)
    init = "random" if timm and not cfg.timm_file else cfg.init  # a stock timm model without weights
    log.info("evaluating at %d px (mean %s, std %s) on %d training and %d test images, %d classes", data.img_size,
             list(data.mean), list(data.std), len(sets.train), len(sets.test), sets.num_classes)
    # the random init of a jepa_zoo checkpoint is its method, backbone and seed: one key for the baseline
    init_key = hashlib.sha1(json.dumps([tc.method.name, asdict(tc.backbone), tc.seed, cfg.weights, init],
                                       sort_keys=True, default=str).encode()).hexdigest()[:16]
    same_images = (data.name, data.root, data.train_split, data.val_split, data.img_size, tuple(data.mean),
                   tuple(data.std), data.eval_crop_ratio)
    key = (init_key if init == "random" else (ckpt, cfg.weights), same_images)
    caches = {} if caches is None else caches
    cache = caches.setdefault(key, FeatureCache(encoder, cfg.batch_size, cfg.num_workers))
    pool = _subset(sets.train, cfg.train_limit, tc.seed)
    test_idx = _subset(sets.test, cfg.test_limit, tc.seed + 2)
    runs = [run_once(cfg, model, encoder, cache, sets, data, pool, test_idx, tc.seed + 1000 * s)
            for s in range(cfg.seeds)]
    result = runs[0][0] if cfg.seeds == 1 else summarize([r for r, _ in runs])
    tag = result_tag(cfg, root_name(data) if cfg.get("data") is not None else None)
    record = {"ckpt": ckpt, "protocol": cfg.protocol, "features": cfg.features, "init": init,
              "weights": cfg.weights, "step": step, **runs[0][1], "queries": len(test_idx),
              "data": root_name(data), "split": sets.split, "img_size": data.img_size,
              **({"shots": cfg.shots} if cfg.shots is not None else {}),
              **({"fraction": cfg.fraction} if cfg.fraction is not None else {}),
              **({"seeds": cfg.seeds} if cfg.seeds > 1 else {}), "init_key": init_key, "unit": "percent", **result}
    where = Path(HydraConfig.get().runtime.output_dir) if timm and HydraConfig.initialized() else Path(ckpt).parent
    out = where / f"eval_{tag}_{init}.json"
    try:
        out.write_text(json.dumps(record, indent=2) + "\n")
    except OSError as e:
        print(json.dumps(record))
        raise ConfigError(f"ckpt: cannot write {out} beside the checkpoint ({e.strerror}); the result is printed "
                          "above") from None
    print(json.dumps(record))
    record["file"] = str(out)
    return record


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from jepa_zoo.runs import is_fresh, remove_launch

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    fresh = is_fresh(out_dir)
    try:
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
