"""The linear probe on cached features against the probe that runs the frozen encoder every step.

    python benchmarks/eval_cache.py --ckpt <run>/checkpoints/last.ckpt --data-root ../shared/data \
        [--train-limit 5000] [--epochs 10]

Runs the commands a user types, ``python -m jepa_zoo.eval ckpt=... protocol=linear``, once with
``probe.cache=true`` (features extracted once, heads trained on tensors; with and without two
augmented copies) and once with ``probe.cache=false`` (crop + flip on the fly, the encoder run every
step), on the checkpoint's own dataset, and prints one JSON line per case: wall time of the command
(seconds), the chosen head's test top-1 and the images it trained on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "cached": ["probe.cache=true"],
    "cached+2copies": ["probe.cache=true", "probe.copies=2"],
    "on_the_fly": ["probe.cache=false"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data-root", default=None, help="data_root= (the checkpoint's dataset elsewhere)")
    ap.add_argument("--train-limit", type=int, default=5000)
    ap.add_argument("--test-limit", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ckpt.ckpt"  # the result files go beside it, not beside the user's checkpoint
        ckpt.symlink_to(Path(args.ckpt).resolve())
        for name, extra in CASES.items():
            cmd = [sys.executable, "-m", "jepa_zoo.eval", f"ckpt={ckpt}", "protocol=linear",
                   f"train_limit={args.train_limit}", f"test_limit={args.test_limit}", f"probe.epochs={args.epochs}",
                   *([f"data_root={args.data_root}"] if args.data_root else []), *extra,
                   f"hydra.run.dir={tmp}/{name}"]
            start = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if r.returncode != 0:
                sys.exit(f"{name}: exit {r.returncode}\n{(r.stdout + r.stderr)[-2000:]}")
            record = json.loads(r.stdout.strip().splitlines()[-1])
            print(json.dumps({"case": name, "wall_s": round(wall, 1), "top1": round(record["top1"], 2),
                              "train_images": record["train_images"], "epochs": args.epochs}), flush=True)


if __name__ == "__main__":
    main()
