"""Does a preset learn within its time budget?  Train it, evaluate it and its random init, one JSON line.

    python benchmarks/recipe.py experiment=lejepa_cifar10_10min [budget=00:00:10:00] \\
        [data_root=../shared/data] [out=/tmp/recipe_<preset>] [train_limit=10000] [-- <training overrides>]

1. ``python -m jepa_zoo.train experiment=<preset> data.root=<data_root> [trainer.max_time=<budget>]
   hydra.run.dir=<out>/train <overrides>`` (the preset's own budget when ``budget`` is not given);
2. ``python -m jepa_zoo.eval ckpt=<out>/train/checkpoints/last.ckpt train_limit=<train_limit>``, then
   the same with ``init=random`` (the encoder at the run's seeded initialisation): weighted kNN, k = 20
   and 200, a bank of ``train_limit`` training images against the whole test split;
3. one JSON line on stdout: the preset, the budget, the machine, the training command's wall time and
   steps, kNN@20 / kNN@200 of both encoders and the gain, the run's last online probe and, when the
   method logs it (IWM), the world model's ``val/mrr`` (and ``val/mrr_cos``) and its chance level.

The figures of ``docs/recipes.md`` come from this script (two runs per preset: this machine is shared,
its noise is real).  Logs of the three commands go to ``<out>/*.log``.  Exit 2 when a command fails.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import yaml

ROOT = Path(__file__).resolve().parents[1]


def fail(message: str) -> None:
    sys.stderr.write(f"recipe: {message}\n")
    sys.exit(2)


def parse(argv: List[str]) -> tuple:
    opts = {"experiment": None, "budget": None, "data_root": os.environ.get("JEPA_ZOO_DATA", "../shared/data"),
            "out": None, "train_limit": "10000"}
    extra: List[str] = []
    args = list(argv)
    if "--" in args:
        cut = args.index("--")
        args, extra = args[:cut], args[cut + 1:]
    for a in args:
        key, _, value = a.partition("=")
        if key not in opts or not value:
            fail(f"unknown or empty argument {a!r}; arguments: {', '.join(opts)} (key=value), then -- and training "
                 "overrides")
        opts[key] = value
    if not opts["experiment"]:
        fail("experiment=<preset> is required")
    opts["out"] = Path(opts["out"] or f"/tmp/recipe_{opts['experiment']}")
    return opts, extra


def run(cmd: List[str], log: Path) -> float:
    """Run ``cmd`` from the repository root, output to ``log``; its wall time (s). Exit 2 if it fails."""
    t0 = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        fail(f"`{' '.join(cmd)}` failed (exit {rc}); see {log}")
    return time.perf_counter() - t0


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def main(argv: List[str]) -> int:
    opts, extra = parse(argv)
    out: Path = opts["out"]
    train_dir = out / "train"
    if train_dir.exists():
        fail(f"out: {out} holds a run already (train/); choose another out=")
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    train = [py, "-m", "jepa_zoo.train", f"experiment={opts['experiment']}", f"data.root={opts['data_root']}",
             f"hydra.run.dir={train_dir}", *([f"trainer.max_time={opts['budget']}"] if opts["budget"] else []), *extra]
    train_s = run(train, out / "train.log")
    summary = json.loads((train_dir / "run_summary.json").read_text())
    ckpt = train_dir / "checkpoints" / "last.ckpt"
    knn: Dict[str, dict] = {}
    for init in ("trained", "random"):
        run([py, "-m", "jepa_zoo.eval", f"ckpt={ckpt}", f"train_limit={opts['train_limit']}", f"init={init}",
             f"out={out}", f"hydra.run.dir={out / ('eval_' + init)}"], out / f"eval_{init}.log")
        knn[init] = json.loads(max(out.glob(f"*/eval_knn_*{init}.json"), key=lambda p: p.stat().st_mtime).read_text())
    final = summary.get("metrics") or {}
    cfg = yaml.safe_load((train_dir / "checkpoints" / "config.yaml").read_text())
    record = {
        "preset": opts["experiment"], "budget": cfg["trainer"].get("max_time"), "overrides": extra, "machine": machine(),
        "train_wall_s": round(train_s, 1), "steps": summary.get("step"), "status": summary.get("status"),
        "bank": knn["trained"]["train_images"], "queries": knn["trained"]["queries"],
        **{f"knn{k}_{init}": round(knn[init][f"knn{k}_top1"], 2) for init in knn for k in (20, 200)},
        "knn20_gain": round(knn["trained"]["knn20_top1"] - knn["random"]["knn20_top1"], 2),
        "probe_val_acc": final.get("probe/val_acc"),
        **{k.split("/")[1]: final[k] for k in ("val/mrr", "val/mrr_cos") if k in final},
    }
    if "val/mrr" in final:
        from jepa_zoo.evaluation.mrr import chance_mrr

        record["mrr_chance"] = round(chance_mrr(int(cfg["method"]["mrr"]["bank_size"])), 4)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
