"""Evaluation entry point: ``python -m jepa_zoo.eval ckpt=<path> protocol=knn|linear|attentive|finetune``.

Rebuilds the model from the checkpoint's own (validated) config, loads its
weights (``init=trained``) or keeps the run's seeded initialisation
(``init=random``, the baseline) and evaluates the encoder each method
designates (EMA methods: the target encoder):

* ``knn``: weighted kNN of pooled validation features against the training
  split (clean centre crops);
* ``linear`` / ``attentive``: a grid of heads on the frozen encoder trained in
  one pass (:mod:`jepa_zoo.evaluation.probes`); ``features=predictor`` puts the
  pretrained predictor (null action, mask tokens everywhere) between encoder
  and head and trains it too — IWM's predictor fine-tuning;
* ``finetune``: the encoder and a linear head trained end to end
  (:mod:`jepa_zoo.evaluation.finetune`: layer-wise LR decay, label smoothing).

Prints and writes ``eval_<protocol>[_predictor][_context][_on-<data>]_<init>.json`` next to the
checkpoint (``_context``: ``weights=context``; ``_on-<data>``: a dataset chosen with ``data=...``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
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


@torch.no_grad()
def extract(encoder: torch.nn.Module, ds: Dataset, batch_size: int, num_workers: int,
            name: str = "images") -> Tuple[torch.Tensor, torch.Tensor]:
    """Pooled features ``[M, D]`` and labels ``[M]`` of a dataset, in order (progress logged about
    every 10 % and at the end)."""
    feats, labels = [], []
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers)
    every, start = max(1, len(loader) // 10), time.perf_counter()
    log.info("features of %d %s (%d batches) ...", len(ds), name, len(loader))
    for i, (x, y) in enumerate(loader):
        feats.append(encoder(x).float())
        labels.append(y)
        if (i + 1) % every == 0 and i + 1 < len(loader):
            log.info("  %d/%d batches, %.0f images/s", i + 1, len(loader),
                     sum(map(len, labels)) / (time.perf_counter() - start))
    log.info("features of %d %s: done in %.1f s", len(ds), name, time.perf_counter() - start)
    return torch.cat(feats), torch.cat(labels)


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


def load_model(cfg: DictConfig) -> Tuple[Any, Any, Optional[int]]:
    """(model, its TrainConfig, its step) for ``ckpt=``: a jepa_zoo checkpoint with its own config (its
    dataset unless ``data=...`` names another), or foreign weights (:mod:`jepa_zoo.weights`, e.g. the
    official I-JEPA files), which need ``data=...`` (:func:`jepa_zoo.pretrained.load_any`)."""
    from jepa_zoo.pretrained import load_any

    loaded = load_any(Path(cfg.ckpt), "ckpt", _data(cfg), trained=cfg.init == "trained", need_data=True)
    return loaded.model, loaded.config, loaded.step


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


def run_knn(cfg: DictConfig, encoder: torch.nn.Module, bank_set: Dataset, val_set: Dataset) -> Dict[str, Any]:
    from jepa_zoo.evaluation.knn import knn_accuracy

    bank, bank_y = extract(encoder, bank_set, cfg.batch_size, cfg.num_workers, "training images (the bank)")
    queries, query_y = extract(encoder, val_set, cfg.batch_size, cfg.num_workers, "test images (the queries)")
    return knn_accuracy(bank, bank_y, queries, query_y, ks=list(cfg.knn.k), temperature=cfg.knn.temperature)


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


def evaluate(cfg: DictConfig) -> Dict[str, Any]:
    from jepa_zoo.data.datamodule import JEPADataModule
    from jepa_zoo.data.views import view_transform
    from jepa_zoo.loggers import quiet_logs

    quiet_logs()
    _check_args(cfg)
    ckpt = Path(cfg.ckpt)
    model, tc, step = load_model(cfg)
    if cfg.data_root:
        tc.data.root = str(cfg.data_root)
    # weights=context: the online encoder instead of the EMA target (one and the same for LeJEPA)
    encoder = (model.backbone if cfg.weights == "context" else model.eval_encoder).eval()

    d = tc.data
    clean = JEPADataModule(tc.data, train_transform=None, seed=tc.seed)  # centre crops of every split
    clean.train_transform = clean.val_transform
    clean.prepare_data()
    clean.setup("validate")
    if clean.val_set is None:
        raise DataError(f"data.root {tc.data.root} has no validation split '{tc.data.val_split}'")
    test_set = _subset(clean.val_set, cfg.test_limit, tc.seed + 2)
    test_set = Subset(clean.val_set, test_set) if len(test_set) < len(clean.val_set) else clean.val_set
    indices = _subset(clean.train_set, cfg.train_limit, tc.seed)
    sets: Dict[str, Dataset] = {"test": test_set}
    if cfg.protocol == "knn":  # the bank: clean, centre-cropped training images
        train_set = Subset(clean.train_set, indices)
        result = run_knn(cfg, encoder, train_set, test_set)
    else:  # heads train on light augmentation (crop + flip) of the images not held out for selection
        dm = JEPADataModule(tc.data, train_transform=view_transform(
            d.img_size, list(cfg.probe.crop_scale), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0,
            mean=d.mean, std=d.std), seed=tc.seed)
        dm.prepare_data()
        dm.setup("fit")
        if cfg.protocol == "finetune":
            train_set = Subset(dm.train_set, indices)
            result = run_finetune(cfg, encoder, train_set, sets, clean.num_classes)
        else:
            fit_idx, select_idx = holdout(indices, cfg.probe.select_fraction, tc.seed)
            train_set, sets = Subset(dm.train_set, fit_idx), {"select": Subset(clean.train_set, select_idx), **sets}
            result = run_probe(cfg, model, encoder, train_set, sets, clean.num_classes)
    # one file per evaluation: the encoder (weights=context) and another dataset (data=...) are in the name
    tag = "_".join([cfg.protocol, *(["predictor"] if cfg.features == "predictor" else []),
                    *(["context"] if cfg.weights == "context" else []),
                    *([f"on-{tc.data.name}"] if cfg.get("data") is not None else [])])
    record = {"ckpt": str(ckpt), "protocol": cfg.protocol, "features": cfg.features, "init": cfg.init,
              "weights": cfg.weights, "step": step, "train_images": len(train_set), "queries": len(test_set),
              **({"select_images": len(sets["select"])} if "select" in sets else {}), "unit": "percent", **result}
    out = ckpt.parent / f"eval_{tag}_{cfg.init}.json"
    try:
        out.write_text(json.dumps(record, indent=2) + "\n")
    except OSError as e:
        print(json.dumps(record))
        raise ConfigError(f"ckpt: cannot write {out} beside the checkpoint ({e.strerror}); the result is printed "
                          "above") from None
    print(json.dumps(record))
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from jepa_zoo.runs import is_fresh, remove_launch

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    fresh = is_fresh(out_dir)
    try:
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
