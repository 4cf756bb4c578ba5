"""Evaluation entry point: ``python -m jepa_zoo.eval ckpt=<path> protocol=knn``.

Rebuilds the encoder from the checkpoint's own (validated) config, loads its
weights (``init=trained``) or keeps the run's seeded initialisation
(``init=random``, the baseline), extracts pooled features of the training
split (the bank) and the validation split (the queries) with the validation
transform, and prints and writes ``eval_<protocol>_<init>.json`` next to the
checkpoint.
"""

from __future__ import annotations

import json
import logging
import pickle
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

import hydra
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


def evaluate(cfg: DictConfig) -> Dict[str, float]:
    from jepa_zoo.data.datamodule import JEPADataModule
    from jepa_zoo.evaluation.knn import knn_accuracy
    from jepa_zoo.methods import build_model

    if cfg.protocol != "knn":
        raise ConfigError(f"protocol: {cfg.protocol!r} is not available yet; allowed: knn")
    if cfg.init not in ("trained", "random"):
        raise ConfigError(f"init: must be 'trained' or 'random', got {cfg.init!r}")
    if cfg.train_limit is not None and cfg.train_limit < 1:
        raise ConfigError(f"train_limit: must be >= 1 or null, got {cfg.train_limit}")
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
    dm.train_transform = dm.val_transform  # the bank: clean, centre-cropped training images
    dm.prepare_data()
    dm.setup("validate")
    if dm.val_set is None:
        raise DataError(f"data.root {tc.data.root} has no validation split '{tc.data.val_split}'")
    bank_set: Dataset = dm.train_set
    limit: Optional[int] = cfg.train_limit
    if limit is not None and limit < len(bank_set):
        idx = torch.randperm(len(bank_set), generator=torch.Generator().manual_seed(tc.seed))[:limit]
        bank_set = Subset(bank_set, idx.tolist())
    bank, bank_y = extract(encoder, bank_set, cfg.batch_size, cfg.num_workers)
    queries, query_y = extract(encoder, dm.val_set, cfg.batch_size, cfg.num_workers)
    result = knn_accuracy(bank, bank_y, queries, query_y, ks=list(cfg.knn.k), temperature=cfg.knn.temperature)
    record = {"ckpt": str(ckpt), "protocol": "knn", "init": cfg.init, "step": state.get("global_step"),
              "bank": len(bank_set), "queries": len(dm.val_set), **result}
    out = ckpt.parent / f"eval_knn_{cfg.init}.json"
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
