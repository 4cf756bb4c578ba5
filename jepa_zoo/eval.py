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

Prints and writes ``eval_<protocol>[_predictor]_<init>.json`` next to the checkpoint.
"""

from __future__ import annotations

import json
import logging
import pickle
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import hydra
from hydra.core.hydra_config import HydraConfig
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, Subset

from jepa_zoo.config import ConfigError, validate
from jepa_zoo.data.datasets import DataError

log = logging.getLogger("jepa_zoo.eval")


@torch.no_grad()
def extract(encoder: torch.nn.Module, ds: Dataset, batch_size: int, num_workers: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pooled features ``[M, D]`` and labels ``[M]`` of a dataset, in order."""
    feats, labels = [], []
    for x, y in DataLoader(ds, batch_size=batch_size, num_workers=num_workers):
        feats.append(encoder(x).float())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def load_checkpoint(path: Path) -> Dict:
    if not path.is_file():
        raise DataError(f"ckpt: no such checkpoint file: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ConfigError(f"ckpt: {path} is not a readable PyTorch checkpoint ({type(e).__name__})") from e
    if not isinstance(state, dict) or "hyper_parameters" not in state or "cfg" not in state["hyper_parameters"]:
        raise ConfigError(f"ckpt: {path} is not a jepa_zoo checkpoint (no hyper_parameters.cfg)")
    return state


PROTOCOLS = ("knn", "linear", "attentive", "finetune")


def _check_args(cfg: DictConfig) -> None:
    if cfg.protocol not in PROTOCOLS:
        raise ConfigError(f"protocol: {cfg.protocol!r} is not available; allowed: {', '.join(PROTOCOLS)}")
    if cfg.init not in ("trained", "random"):
        raise ConfigError(f"init: must be 'trained' or 'random', got {cfg.init!r}")
    if cfg.features not in ("encoder", "predictor"):
        raise ConfigError(f"features: must be 'encoder' or 'predictor', got {cfg.features!r}")
    if cfg.features == "predictor" and cfg.protocol in ("knn", "finetune"):
        raise ConfigError("features: 'predictor' trains the predictor; use protocol=linear or attentive")
    if cfg.train_limit is not None and cfg.train_limit < 1:
        raise ConfigError(f"train_limit: must be >= 1 or null, got {cfg.train_limit}")
    if cfg.protocol in ("linear", "attentive") and not (cfg.probe.lrs and cfg.probe.wds):
        raise ConfigError("probe.lrs / probe.wds: give at least one value each")


def _subset(ds: Dataset, limit: Optional[int], seed: int) -> Dataset:
    if limit is None or limit >= len(ds):
        return ds
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:limit]
    return Subset(ds, idx.tolist())


def run_knn(cfg: DictConfig, encoder: torch.nn.Module, bank_set: Dataset, val_set: Dataset) -> Dict[str, Any]:
    from jepa_zoo.evaluation.knn import knn_accuracy

    bank, bank_y = extract(encoder, bank_set, cfg.batch_size, cfg.num_workers)
    queries, query_y = extract(encoder, val_set, cfg.batch_size, cfg.num_workers)
    return knn_accuracy(bank, bank_y, queries, query_y, ks=list(cfg.knn.k), temperature=cfg.knn.temperature)


def run_probe(cfg: DictConfig, model, train_set: Dataset, val_set: Dataset, num_classes: int) -> Dict[str, Any]:
    """Train a grid of linear / attentive heads (and, with ``features=predictor``, the predictor)."""
    from jepa_zoo.evaluation.probes import ProbeModule

    predictor = None
    if cfg.features == "predictor":
        predictor = getattr(model, "predictor", None)
        if predictor is None:
            raise ConfigError(f"features: method {model.cfg.method.name} has no predictor (ijepa and iwm do)")
        predictor.train()
    p = cfg.probe
    probe = ProbeModule(model.eval_encoder, num_classes, cfg.protocol, lrs=list(p.lrs), wds=list(p.wds),
                        predictor=predictor, predictor_lr=p.predictor_lr, num_heads=p.num_heads)
    return probe.results(_fit(cfg, p, probe, train_set, val_set, "val/top1/"))


def _fit(cfg: DictConfig, schedule: DictConfig, module, train_set: Dataset, val_set: Dataset, top1: str) -> Dict:
    """Train ``module`` (``schedule``: epochs, max_steps, precision) and validate it once at the
    end; the trainer's logged metrics.  ``top1``: the prefix of the metric that shows a
    validation ran (``max_steps`` may end training before the epoch-end validation)."""
    import lightning as L

    loader = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0)
    trainer = L.Trainer(
        max_epochs=schedule.epochs, max_steps=schedule.max_steps if schedule.max_steps is not None else -1,
        precision=schedule.precision, logger=False, enable_checkpointing=False, enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False, num_sanity_val_steps=0, check_val_every_n_epoch=schedule.epochs,
        default_root_dir=str(Path(HydraConfig.get().runtime.output_dir)) if HydraConfig.initialized() else None,
    )
    trainer.fit(module, DataLoader(train_set, shuffle=True, drop_last=True, **loader), DataLoader(val_set, **loader))
    if not any(k.startswith(top1) for k in trainer.logged_metrics):
        trainer.validate(module, DataLoader(val_set, **loader), verbose=False)
    return trainer.logged_metrics


def run_finetune(cfg: DictConfig, model, train_set: Dataset, val_set: Dataset, num_classes: int) -> Dict[str, Any]:
    """Fine-tune the evaluation encoder end to end with a linear head."""
    from jepa_zoo.evaluation.finetune import FinetuneModule

    f = cfg.finetune
    try:
        module = FinetuneModule(model.eval_encoder, num_classes, lr=f.lr, weight_decay=f.weight_decay,
                                layer_decay=f.layer_decay, label_smoothing=f.label_smoothing)
    except ValueError as e:
        raise ConfigError(f"finetune: {e}") from None
    return module.results(_fit(cfg, f, module, train_set, val_set, "val/top1"))


def evaluate(cfg: DictConfig) -> Dict[str, Any]:
    from jepa_zoo.data.datamodule import JEPADataModule
    from jepa_zoo.data.views import view_transform
    from jepa_zoo.methods import build_model

    _check_args(cfg)
    ckpt = Path(cfg.ckpt)
    state = load_checkpoint(ckpt)
    hp = state["hyper_parameters"]
    tc = validate(OmegaConf.create(hp["cfg"]))
    if cfg.data_root:
        tc.data.root = str(cfg.data_root)
    model = build_model(tc, num_classes=hp.get("num_classes"))
    if cfg.init == "trained":
        model.load_state_dict(state["state_dict"])
    encoder = model.eval_encoder.eval()

    dm = JEPADataModule(tc.data, train_transform=None, seed=tc.seed)
    d = tc.data
    if cfg.protocol == "knn":  # the bank: clean, centre-cropped training images
        dm.train_transform = dm.val_transform
    else:  # probes train on light augmentation: crop + flip
        dm.train_transform = view_transform(d.img_size, list(cfg.probe.crop_scale), jitter_p=0.0, grayscale_p=0.0,
                                            blur_p=0.0, solarize_p=0.0, mean=d.mean, std=d.std)
    dm.prepare_data()
    dm.setup("validate")
    if dm.val_set is None:
        raise DataError(f"data.root {tc.data.root} has no validation split '{tc.data.val_split}'")
    train_set = _subset(dm.train_set, cfg.train_limit, tc.seed)
    if cfg.protocol == "knn":
        result = run_knn(cfg, encoder, train_set, dm.val_set)
    elif cfg.protocol == "finetune":
        result = run_finetune(cfg, model, train_set, dm.val_set, dm.num_classes)
    else:
        result = run_probe(cfg, model, train_set, dm.val_set, dm.num_classes)
    tag = cfg.protocol + ("_predictor" if cfg.features == "predictor" else "")
    record = {"ckpt": str(ckpt), "protocol": cfg.protocol, "features": cfg.features, "init": cfg.init,
              "step": state.get("global_step"), "train_images": len(train_set), "queries": len(dm.val_set), **result}
    out = ckpt.parent / f"eval_{tag}_{cfg.init}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except (ConfigError, DataError) as e:
        log.error("%s: %s", type(e).__name__, e)
        sys.exit(2)


if __name__ == "__main__":
    main()
