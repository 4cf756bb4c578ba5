"""CPU cost of the training views per image, as a loader worker makes them (one thread).

    python benchmarks/view_cost.py [--reps 30]

For a random uint8 image (40 px for the small sizes, 300 px for the ImageNet ones), times:

* IWM's ``IWMViews`` (crop + both views + action, :func:`jepa_zoo.data.photometric.apply_photometric`
  on the pair) at 32 and 224 px;
* LeJEPA's views with torchvision's transforms (``MultiView``, ``photometric=loader``), and the
  same views as uint8 crops + draws (``photometric=device``) with ``apply_photometric`` applied in
  the worker, one call per view size: 2 × 32 + 6 × 16 px and 2 × 224 + 6 × 96 px.

No decoding: the figures are the views' own cost.  Prints one JSON line per case (ms per image).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from jepa_zoo.data.actions import IWMViews
from jepa_zoo.data.photometric import apply_photometric, concat_views
from jepa_zoo.data.schema import ViewsConfig
from jepa_zoo.data.views import MultiView, blur_kernel

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def ms_per_call(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return 1e3 * (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)  # a loader worker's
    for size, local, src in ((32, 16, 40), (224, 96, 300)):
        img = torch.randint(0, 256, (3, src, src), dtype=torch.uint8)
        iwm = IWMViews(size)
        print(json.dumps({"views": f"iwm {size}px", "ms_per_image": round(ms_per_call(lambda: iwm(img), args.reps), 2)}))
        loader = MultiView(ViewsConfig(global_size=size, local_size=local), MEAN, STD)
        device = MultiView(ViewsConfig(global_size=size, local_size=local, photometric="device"), MEAN, STD)

        def batched() -> None:
            views = [(c[None], type(p)(*(f[None] for f in p))) for c, p in device(img)]
            for group in (views[:2], views[2:]):
                x, params = concat_views(group)
                apply_photometric(x, params, MEAN, STD, blur_kernel(x.shape[-1]))

        name = f"lejepa 2x{size}+6x{local}px"
        print(json.dumps({"views": name, "how": "torchvision",
                          "ms_per_image": round(ms_per_call(lambda: loader(img), args.reps), 2)}))
        print(json.dumps({"views": name, "how": "apply_photometric",
                          "ms_per_image": round(ms_per_call(batched, args.reps), 2)}))


if __name__ == "__main__":
    main()
