"""Has a run collapsed, and how?  The evaluation encoder's features of a run's own test images or clips,
trained and at its seeded initialisation, one JSON line each.

    python benchmarks/collapse.py <run>/checkpoints/last.ckpt [samples=512] [folds=K] [root=<data root>]

For each encoder: RankMe of the pooled features, plain (as ``val/rankme`` and the kNN records) and
centred (the mean feature removed), and :func:`jepa_zoo.evaluation.rankme.token_spread` of the tokens:
the shares of a direction every token shares, of position and of content, and the effective rank of
the content.  A falling plain RankMe with a steady centred one and content rank is a growing shared
direction; a falling content rank is dimensional collapse.  ``folds``: a set without a test split
(the first ``samples`` training items are read); ``root``: the data root when the run's has moved.
The figures of docs/recipes.md and docs/vjepa.md come from this script.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from jepa_zoo.data.datasets import DataError
from jepa_zoo.evaluation.eval_data import build_sets
from jepa_zoo.evaluation.rankme import rankme, token_spread
from jepa_zoo.pretrained import load_any


def token_batches(ckpt: Path, samples: int, folds: int, root: str) -> Tuple[Dict[str, Tensor], Optional[int]]:
    """The tokens ``[samples, N, D]`` of the run's encoder at init and trained, on the same items
    (read once), and the checkpoint's step."""
    models = {name: load_any(ckpt, "ckpt", trained=name == "trained") for name in ("init", "trained")}
    loaded = models["trained"]
    encoder = loaded.model.eval_encoder
    if not hasattr(encoder, "forward_tokens"):
        raise ValueError(f"{ckpt}: its encoder ({loaded.config.backbone.name}) has no tokens; this reads ViT "
                         "encoders (backbone=vit_*)")
    data = replace(loaded.config.data, root=root) if root else loaded.config.data
    _, sets = build_sets(data, loaded.config.seed, folds or None)
    items = list(range(min(samples, len(sets.test))))
    chunks = [torch.stack([sets.test[j][0] for j in items[i:i + 32]]) for i in range(0, len(items), 32)]
    with torch.no_grad():
        tokens = {name: torch.cat([m.model.eval().eval_encoder.forward_tokens(x).float() for x in chunks])
                  for name, m in models.items()}
    return tokens, loaded.step


def record(ckpt: Path, encoder: str, step: Optional[int], tokens: Tensor) -> Dict[str, object]:
    pooled = tokens.mean(dim=1)
    return {"ckpt": str(ckpt), "encoder": encoder, "step": step, "samples": tokens.shape[0],
            "rankme": round(rankme(pooled), 2), "rankme_centred": round(rankme(pooled - pooled.mean(dim=0)), 2),
            **{k: round(v, 3) for k, v in token_spread(tokens).items()}}


def main(argv: List[str]) -> int:
    if not argv or "=" in argv[0]:
        sys.stderr.write("collapse: usage: collapse.py <checkpoint> [samples=N] [folds=K] [root=<data root>]\n")
        return 2
    opts = {"samples": "512", "folds": "0", "root": ""}
    for a in argv[1:]:
        key, _, value = a.partition("=")
        if key not in opts or not value:
            sys.stderr.write(f"collapse: unknown or empty argument {a!r}; arguments: {', '.join(opts)}\n")
            return 2
        opts[key] = value
    for key, least in (("samples", 2), ("folds", 0)):
        if not opts[key].isdigit() or int(opts[key]) < least:
            sys.stderr.write(f"collapse: {key} must be a whole number >= {least}, got {opts[key]!r}\n")
            return 2
    ckpt = Path(argv[0])
    if not ckpt.is_file():
        sys.stderr.write(f"collapse: no such checkpoint: {ckpt}\n")
        return 2
    try:
        tokens, step = token_batches(ckpt, int(opts["samples"]), int(opts["folds"]), opts["root"])
    except (ValueError, DataError) as e:  # ConfigError is a ValueError
        sys.stderr.write(f"collapse: {e}\n")
        return 2
    for encoder in ("init", "trained"):
        print(json.dumps(record(ckpt, encoder, step, tokens[encoder])), flush=True)
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
