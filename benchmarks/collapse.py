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
from typing import Dict, List

import torch

from jepa_zoo.evaluation.eval_data import build_sets
from jepa_zoo.evaluation.rankme import rankme, token_spread
from jepa_zoo.pretrained import load_any


def measure(ckpt: Path, trained: bool, samples: int, folds: int, root: str) -> Dict[str, object]:
    loaded = load_any(ckpt, "ckpt", trained=trained)
    encoder = loaded.model.eval().eval_encoder
    if not hasattr(encoder, "forward_tokens"):
        raise ValueError(f"{ckpt}: its encoder ({loaded.config.backbone.name}) has no tokens; this reads ViT "
                         "encoders (backbone=vit_*)")
    data = replace(loaded.config.data, root=root) if root else loaded.config.data
    _, sets = build_sets(data, loaded.config.seed, folds or None)
    items = range(min(samples, len(sets.test)))
    with torch.no_grad():
        tokens = torch.cat([encoder.forward_tokens(torch.stack([sets.test[j][0] for j in chunk])).float()
                            for chunk in (items[i:i + 32] for i in range(0, len(items), 32))])
    pooled = tokens.mean(dim=1)
    spread = token_spread(tokens)
    return {"ckpt": str(ckpt), "encoder": "trained" if trained else "init", "step": loaded.step,
            "samples": len(items), "rankme": round(rankme(pooled), 2),
            "rankme_centred": round(rankme(pooled - pooled.mean(dim=0)), 2),
            **{k: round(v, 3) for k, v in spread.items()}}


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
    ckpt = Path(argv[0])
    if not ckpt.is_file():
        sys.stderr.write(f"collapse: no such checkpoint: {ckpt}\n")
        return 2
    for trained in (False, True):
        try:
            record = measure(ckpt, trained, int(opts["samples"]), int(opts["folds"]), opts["root"])
        except ValueError as e:
            sys.stderr.write(f"collapse: {e}\n")
            return 2
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
