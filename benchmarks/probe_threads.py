"""The cached linear probe on torch's intra-op threads against one thread (docs/performance.md,
"Threads under load"): ``fit_linear_grid`` on random features, 4 heads, at least 200 steps of 256,
medians of ``--runs`` alternating runs, one JSON line.

    python benchmarks/probe_threads.py --features 2000 --dim 192 --classes 10
    OMP_NUM_THREADS=1 python -c $'import torch\\na = torch.randn(256, 256)\\nwhile True:\\n    a = torch.tanh(a @ a)' &
    python benchmarks/probe_threads.py ...   # beside that busy process, then kill it
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from jepa_zoo.evaluation.linear_cached import fit_linear_grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(a.features, a.dim, generator=g), torch.randint(0, a.classes, (a.features,), generator=g)
    held = (torch.randn(500, a.dim, generator=g), torch.randint(0, a.classes, (500,), generator=g))
    times = {"torch_threads": [], "one_thread": []}
    for _ in range(a.runs):
        for name, threads in (("torch_threads", None), ("one_thread", 1)):
            t0 = time.perf_counter()
            fit_linear_grid((x, y), held, held, a.classes, [1e-3, 1e-2], [0.0, 0.05], 10, 256, min_steps=200,
                            threads=threads)
            times[name].append(time.perf_counter() - t0)
    print(json.dumps({"features": a.features, "dim": a.dim, "classes": a.classes, "torch_threads": torch.get_num_threads(),
                      "load_1min": round(os.getloadavg()[0], 2),
                      **{f"{k}_s": round(statistics.median(v), 2) for k, v in times.items()}}))


if __name__ == "__main__":
    main()
