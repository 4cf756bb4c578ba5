"""Multi-block mask collation throughput (I-JEPA paper configuration).

    python benchmarks/bench_masks.py [--batch 64] [--grids 14 16 8] [--iters 200]

Prints one JSON line per grid: milliseconds per batch and batches/s of
``jepa_zoo.masks.multiblock.sample_masks`` (4 targets at 15-20 %, aspect
0.75-1.5, context 85-100 %, min_keep 10), one thread, as a dataloader worker
runs it.  The official I-JEPA collator takes about 44 ms per batch of 64 on a
14x14 grid on the same 2-core machine (shared/notes/ijepa-reference.md).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from jepa_zoo.masks.multiblock import sample_masks


def bench(batch: int, grid: int, iters: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):  # warm-up
        sample_masks(batch, grid, generator=gen)
    t0 = time.perf_counter()
    ctx_sizes, tgt_sizes = [], []
    for _ in range(iters):
        ctx, tgt = sample_masks(batch, grid, generator=gen)
        ctx_sizes.append(ctx.shape[1])
        tgt_sizes.append(tgt.shape[2])
    ms = (time.perf_counter() - t0) / iters * 1e3
    return {"grid": f"{grid}x{grid}", "batch": batch, "ms_per_batch": round(ms, 3),
            "batches_per_s": round(1e3 / ms, 1), "mean_context": round(sum(ctx_sizes) / iters, 1),
            "mean_target_block": round(sum(tgt_sizes) / iters, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--grids", type=int, nargs="+", default=[14, 16, 8])
    ap.add_argument("--iters", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for g in args.grids:
        print(json.dumps(bench(args.batch, g, args.iters)), flush=True)


if __name__ == "__main__":
    main()
