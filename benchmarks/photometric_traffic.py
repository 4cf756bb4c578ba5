"""Memory traffic of LeJEPA's batched photometric ops (``method.views.photometric=device``).

    python benchmarks/photometric_traffic.py [--batch 256 --bandwidth 2.5e12]

Runs :func:`jepa_zoo.data.photometric.apply_photometric` eagerly on random uint8 views
(2 × 224 px + 6 × 96 px per image) under a ``TorchDispatchMode`` that adds up the bytes each aten
op reads and writes: view ops are free, and a broadcast operand counts its own elements once.
On a GPU these element-wise ops are bound by memory bandwidth, so bytes / bandwidth estimates
their time there without one.  Prints one JSON line: fp32 passes over the views (bytes / 4 /
pixels / 3), MB per image, GB per batch, kernels per batch, and the estimated ms per batch.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.data import default_collate

from jepa_zoo.data.photometric import apply_photometric, draw_params
from jepa_zoo.data.views import blur_kernel

VIEW_OPS = {"unbind", "view", "expand", "unsqueeze", "select", "slice", "t", "permute", "as_strided",
            "_unsafe_view", "alias", "reshape", "detach", "lift_fresh"}


def distinct_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements of ``t`` (dimensions of stride 0 are broadcasts)."""
    n = t.element_size()
    for size, stride in zip(t.shape, t.stride()):
        if stride:
            n *= size
    return n


class Traffic(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ not in VIEW_OPS:
            tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
            self.bytes += sum(distinct_bytes(t) for t in tensors)
            self.kernels += 1
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--sample", type=int, default=16, help="images actually run (traffic scales linearly)")
    ap.add_argument("--views", default="224x2,96x6", help="size x count, comma-separated")
    ap.add_argument("--bandwidth", type=float, default=2.5e12, help="bytes/s reached by element-wise kernels")
    a = ap.parse_args()
    torch.manual_seed(0)
    total, kernels, pixels = 0, 0, 0
    for spec in a.views.split(","):
        size, count = (int(v) for v in spec.split("x"))
        x = torch.randint(0, 256, (a.sample, 3, size, size), dtype=torch.uint8)
        p = default_collate([draw_params([0.4, 0.4, 0.2, 0.1], 0.8, 0.2, 0.5, 0.2) for _ in range(a.sample)])
        mode = Traffic()
        with mode:
            apply_photometric(x, p, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], blur_kernel(size))
        total += count * mode.bytes
        kernels += count * mode.kernels
        pixels += count * a.sample * 3 * size * size
    per_image = total / a.sample
    print(json.dumps({
        "fp32_passes": round(total / 4 / pixels, 1), "mb_per_image": round(per_image / 1e6, 1),
        "batch": a.batch, "gb_per_batch": round(per_image * a.batch / 1e9, 1), "kernels_per_batch": kernels,
        "bandwidth": a.bandwidth, "est_ms_per_batch": round(per_image * a.batch / a.bandwidth * 1e3, 1),
    }))


if __name__ == "__main__":
    main()
