"""SIGReg forward + backward: ours (``jepa_zoo.losses.sigreg``) against the official rbalestr-lab/lejepa.

    git --git-dir=<mirror of rbalestr-lab/lejepa> archive HEAD | tar -x -C /tmp/lejepa-src
    python benchmarks/bench_official_sigreg.py --lejepa-src /tmp/lejepa-src [--busy 1] [--compare-threads]
        [--n 512 --d 512 --slices 1024 --reps 20 --warmup 3]

The official ``SlicingUnivariateTest(EppsPulley(t_max=3, n_points=17), num_slices)`` is imported at
run time from ``--lejepa-src`` (its package ``__init__`` imports every test, scipy included, so
only the two modules needed are loaded).  Both sides draw fresh unit Gaussian directions each call
and run on the same ``(N, D)`` embeddings; the timed call is ``loss = sigreg(z); loss.backward()``.
Calls alternate between the two implementations so that load from other processes hits both
alike; the medians are compared.  A check line gives both statistics on the *same* directions
(they must agree).  One JSON line per implementation, then a summary line (with the CPU model,
torch's thread count and the load average before and after).

``--compare-threads`` adds ours on torch's intra-op threads (``SIGReg(cpu_threads=None)``) to the
alternation, beside the default one thread.

``--busy B`` starts ``B`` busy processes beside the timing, each a float32 matmul loop under
``OMP_NUM_THREADS=1`` (one core each), started before the warm-up and stopped at the end: the
condition of a training run whose loader workers share the cores.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

from jepa_zoo.bench import cpu_name
from jepa_zoo.losses.sigreg import SIGReg, epps_pulley


def official_sigreg(src: str, slices: int):
    """The official module, loaded without running ``lejepa/__init__.py`` (it needs scipy)."""
    root = Path(src).resolve() / "lejepa"
    if not (root / "univariate" / "epps_pulley.py").exists():
        sys.exit(f"--lejepa-src {src}: not a rbalestr-lab/lejepa checkout (no lejepa/univariate/epps_pulley.py)")
    for name, path in (("lejepa", root), ("lejepa.univariate", root / "univariate"),
                       ("lejepa.multivariate", root / "multivariate")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(path)]
        sys.modules[name] = pkg
    ep = importlib.import_module("lejepa.univariate.epps_pulley")
    sl = importlib.import_module("lejepa.multivariate.slicing")
    return sl.SlicingUnivariateTest(ep.EppsPulley(t_max=3, n_points=17), num_slices=slices), ep.EppsPulley()


BUSY_LOOP = "import torch\na = torch.randn(256, 256)\nwhile True:\n    a = torch.tanh(a @ a)\n"


def start_busy(count: int) -> list[subprocess.Popen]:
    """``count`` single-thread matmul loops (``OMP_NUM_THREADS=1``), stopped by :func:`stop_busy`."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP], env=env) for _ in range(count)]
    time.sleep(2.0)  # let them import torch and start spinning
    dead = [p.returncode for p in procs if p.poll() is not None]
    if dead:
        stop_busy(procs)
        sys.exit(f"a busy process exited early with code {dead[0]}")
    return procs


def stop_busy(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        p.wait(timeout=30)


def fwd_bwd(fn, z: torch.Tensor) -> float:
    t0 = time.perf_counter()
    loss = fn(z)
    loss.backward()
    z.grad = None
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lejepa-src", required=True, help="a checkout (or git archive) of rbalestr-lab/lejepa")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--slices", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--busy", type=int, default=0, help="single-thread matmul loops to run beside the timing")
    ap.add_argument("--compare-threads", action="store_true",
                    help="also time ours on torch's intra-op threads (cpu_threads=None) instead of one")
    a = ap.parse_args()

    official, official_ep = official_sigreg(a.lejepa_src, a.slices)
    ours = SIGReg(num_slices=a.slices, t_max=3.0, num_points=17, seed=0)
    z = torch.randn(a.n, a.d, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    step = iter(range(10**9))
    impls = {"ours": lambda x: ours(x, next(step)), "official": official}
    if a.compare_threads:
        ours_torch_threads = SIGReg(num_slices=a.slices, t_max=3.0, num_points=17, seed=0, cpu_threads=None)
        impls["ours_torch_threads"] = lambda x: ours_torch_threads(x, next(step))

    times = {k: [] for k in impls}
    load_before = os.getloadavg()[0]
    busy = start_busy(a.busy)
    try:
        for r in range(a.warmup + a.reps):
            for name in (list(impls) if r % 2 == 0 else list(impls)[::-1]):
                dt = fwd_bwd(impls[name], z)
                if r >= a.warmup:
                    times[name].append(dt)
    finally:
        stop_busy(busy)
    load_after = os.getloadavg()[0]

    with torch.no_grad():  # same directions on both sides: the statistics must agree
        A = torch.randn(a.d, a.slices, generator=torch.Generator().manual_seed(1))
        A /= A.norm(dim=0)
        s_ours = epps_pulley(z @ A).mean().item()
        s_off = official_ep(z @ A).mean().item()

    med = {k: statistics.median(v) for k, v in times.items()}
    for name, v in times.items():
        print(json.dumps({"impl": name, "n": a.n, "d": a.d, "slices": a.slices, "reps": a.reps,
                          "fwd_bwd_ms_median": round(1e3 * med[name], 2),
                          "fwd_bwd_ms_mean": round(1e3 * statistics.mean(v), 2),
                          "fwd_bwd_ms_min": round(1e3 * min(v), 2), "torch_threads": torch.get_num_threads()}))
    print(json.dumps({"summary": True, "speedup_vs_official": round(med["official"] / med["ours"], 3),
                      "statistic_same_directions": {"ours": round(s_ours, 6), "official": round(s_off, 6)},
                      "statistic_rel_diff": abs(s_ours - s_off) / abs(s_off), "busy_processes": a.busy,
                      "cpu": cpu_name(), "cpus": os.cpu_count(), "torch": torch.__version__,
                      "loadavg_1min_before_after": [round(load_before, 2), round(load_after, 2)]}))


if __name__ == "__main__":
    main()
