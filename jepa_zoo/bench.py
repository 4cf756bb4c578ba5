"""Benchmark harness: ``python -m jepa_zoo.bench method=ijepa backbone=vit_b data.batch_size=128 [bench.*=...]``.

``conf/bench.yaml`` is ``train.yaml`` plus a ``bench:`` node (split off before validation), so a benchmark
builds exactly what training builds.  Prints ONE JSON line to stdout per configuration (``-m`` sweeps
print one per job); logs go to stderr and the run dir's ``bench.log``.

* ``bench.what=step`` (default, ``data=synthetic``: random 224 px images): a steady-state
  training step run by hand on batches built by the method's own ``train_transform`` +
  ``collate_fn`` (I-JEPA batches carry masks, LeJEPA batches carry views): ``model.step(batch)``
  plus the online probe under the precision's autocast, backward, the optimiser and LR schedule
  from ``configure_optimizers()``, ``zero_grad``, and for EMA methods the target update.
  ``bench.warmup`` untimed steps, then ``bench.steps`` timed ones.  Reports images/s, mean and
  median step time, peak memory (CPU: the process's peak RSS during the steps and its growth
  over the RSS before them; CUDA: max allocated), model FLOPs of one step's forward + backward
  (``torch.utils.flop_counter``) per step and per image, and on CUDA the MFU against the
  device's dense bf16 peak.
* ``bench.what=data``: the data pipeline alone: decode + views (+ mask collation) through a
  DataLoader with ``data.num_workers`` workers (images/s in total and per worker), the
  one-process cost per image, and the collation and mask cost per batch; with
  ``method.views.photometric=device`` (LeJEPA, IWM) the workers only crop, and the batched photometric
  ops the device takes over are timed on the bench's device (``device_photometric_ms_per_batch``;
  compiled with ``bench.compile=true``).  Use real JPEGs: ``data=folder data.root=<imagenet-sample-1k.tar>``.

Not in the timed step: Lightning's loop (hooks, ``self.log``), the weight-decay and EMA momentum
schedules (host-side scalars; the momentum is held at its start value).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jepa_zoo.config import ConfigError, TrainConfig, validate
from jepa_zoo.data.datasets import DataError
from jepa_zoo.memory import peak_mib, reset_peak, status_mib
from jepa_zoo.loggers import quiet_logs
from jepa_zoo.train import register_resolvers

log = logging.getLogger("jepa_zoo.bench")
CONF_DIR = Path(__file__).parent / "conf"

# Dense bf16 tensor-core peak in FLOP/s, matched in order against torch.cuda.get_device_name().
BF16_PEAK: Tuple[Tuple[str, float], ...] = (
    ("H100 PCIe", 756e12), ("H100", 989.4e12), ("H200", 989.4e12), ("A100", 312e12),
)


@dataclass
class BenchConfig:
    what: str = "step"
    steps: int = 20
    warmup: int = 5
    batches: int = 4
    compile: bool = False
    flops: bool = True

    def __post_init__(self) -> None:
        if self.what not in ("step", "data"):
            raise ConfigError(f"bench.what: must be 'step' or 'data', got {self.what!r}")
        if self.steps < 1 or self.warmup < 0 or self.batches < 1:
            raise ConfigError("bench.steps and bench.batches must be >= 1, bench.warmup >= 0")


def split_config(cfg: DictConfig) -> Tuple[DictConfig, BenchConfig]:
    """The training config without its ``bench:`` node, and the typed bench settings."""
    train_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "bench"])
    try:
        merged = OmegaConf.merge(OmegaConf.structured(BenchConfig), cfg.get("bench") or {})
        bench = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(f"bench.{getattr(e, 'key', None) or '?'}: {getattr(e, 'msg', None) or e}") from None
    assert isinstance(bench, BenchConfig)
    return train_cfg, bench


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def summarize(times_s: List[float], batch_size: int) -> Dict[str, float]:
    total = sum(times_s)
    return {
        "images_per_s": round(batch_size * len(times_s) / total, 3),
        "step_ms_mean": round(1e3 * total / len(times_s), 2),
        "step_ms_median": round(1e3 * statistics.median(times_s), 2),
    }


# -- device and precision -------------------------------------------------------------------------
def device_of(tc: TrainConfig):
    import torch

    acc = str(tc.trainer.get("accelerator", "cpu"))
    if acc in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator: {acc} asked for, but torch sees no CUDA device (use hardware=cpu)")
    if acc in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def autocast_of(tc: TrainConfig, device) -> Callable[[], Any]:
    """The forward context Lightning's precision plugin would use (``32-true`` or ``bf16-mixed``)."""
    import torch

    precision = str(tc.trainer.get("precision", "32-true"))
    if precision in ("32-true", "32"):
        return nullcontext
    if precision in ("bf16-mixed", "bf16"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    raise ConfigError(f"trainer.precision: the bench runs 32-true or bf16-mixed, got {precision!r}")


def peak_flops(device) -> Optional[float]:
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK if key in name), None)


# -- building -------------------------------------------------------------------------------------
def data_module(tc: TrainConfig, compile_: bool = False):
    from jepa_zoo.data.datamodule import JEPADataModule
    from jepa_zoo.methods import get_method

    cls = get_method(tc.method.name, tc.method.module)
    dm = JEPADataModule(tc.data, cls.train_transform(tc), cls.collate_fn(tc), seed=tc.seed,
                        compile_photometric=compile_)  # training batches only: no validation transform
    dm.prepare_data()
    dm.setup("fit")
    return dm


def build_batches(dm, n: int, batch_size: int) -> List[Any]:
    """``n`` batches through the method's transform and collate_fn (cycling the dataset)."""
    from jepa_zoo.data.batch import collate as plain_collate

    collate = dm.collate_fn or plain_collate
    ds = dm.train_set
    return [collate([ds[(i * batch_size + j) % len(ds)] for j in range(batch_size)]) for i in range(n)]


def compile_model(model, dm: Any = None) -> None:
    """``torch.compile`` what ``compile=true`` compiles: the module's blocks and the device photometric ops."""
    model.compile_()
    if dm is not None and dm.device_photometric is not None:
        dm.device_photometric.compile_()


def make_train_step(model, tc: TrainConfig, autocast: Callable[[], Any], dm: Any = None) -> Tuple[Callable[[Any], Any], Any]:
    """A closure doing one optimiser step as Lightning's automatic optimisation does (the module's
    ``forward_loss``, backward, the optimiser, ``after_optimizer_step``); and the optimiser."""
    model.fixed_schedule = (10**6, 0)  # no Trainer: the schedules' horizon (the step's cost does not depend on it)
    conf = model.configure_optimizers()
    opt = conf["optimizer"] if isinstance(conf, dict) else conf
    sched = conf.get("lr_scheduler", {}).get("scheduler") if isinstance(conf, dict) else None

    def step(batch: Any) -> Any:
        if dm is not None:  # views.photometric=device: the views made on the device, as the datamodule's hook does
            batch = dm.device_views(batch, next(model.parameters()).dtype)
        with autocast():
            loss = model.forward_loss(batch)[1]
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        opt.zero_grad(set_to_none=True)
        model.after_optimizer_step()
        return loss.detach()

    return step, opt


def count_flops(step: Callable[[Any], Any], batch: Any, device) -> int:
    """Model FLOPs of one step (forward + backward; optimiser and EMA are not matmuls).  On CPU the
    math SDPA backend is forced while counting: the counter has no formula for the CPU flash kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    ctx = sdpa_kernel(SDPBackend.MATH) if device.type == "cpu" else nullcontext()
    with ctx, FlopCounterMode(display=False) as counter:
        step(batch)
    return int(counter.get_total_flops())


# -- measurements ---------------------------------------------------------------------------------
def time_steps(step: Callable[[Any], Any], batches: List[Any], warmup: int, steps: int, device) -> List[float]:
    """Seconds per timed step.  CUDA: events recorded between steps, one synchronisation at the end."""
    import torch

    for i in range(warmup):
        step(batches[i % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
        events[0].record()
        for i in range(steps):
            step(batches[(warmup + i) % len(batches)])
            events[i + 1].record()
        torch.cuda.synchronize(device)
        return [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(steps)]
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(batches[(warmup + i) % len(batches)])
        times.append(time.perf_counter() - t0)
    return times


def measure_step(tc: TrainConfig, b: BenchConfig) -> Dict[str, Any]:
    from lightning.fabric.utilities.apply_func import move_data_to_device

    from jepa_zoo.masks.collator import MaskCollator
    from jepa_zoo.methods import build_model

    device = device_of(tc)
    autocast = autocast_of(tc, device)
    model = build_model(tc, num_classes=tc.data.num_classes).to(device).train()
    dm = data_module(tc)
    batches = [move_data_to_device(x, device) for x in build_batches(dm, b.batches, tc.data.batch_size)]
    step, _ = make_train_step(model, tc, autocast, dm)
    bs = tc.data.batch_size

    rss_before = status_mib("VmRSS")  # model and batches built, no step run yet
    flops = count_flops(step, batches[0], device) if b.flops else None  # eager, before any compile
    reset_peak(device)  # the peak of the warm-up and timed steps (the counted step forces math SDPA)
    if b.compile:
        compile_model(model, dm)
    times = time_steps(step, batches, b.warmup, b.steps, device)

    out: Dict[str, Any] = {
        "what": "step", "method": tc.method.name, "backbone": tc.backbone.name, "img_size": tc.data.img_size,
        "patch_size": tc.backbone.patch_size, "batch_size": bs, "precision": str(tc.trainer.get("precision")),
        "compile": b.compile, "steps": b.steps, "warmup": b.warmup,
        **summarize(times, bs),
    }
    if isinstance(dm.collate_fn, MaskCollator):  # mask sizes drive the cost: report what the timed batches had
        out["context_patches"] = statistics.mean(x[1].shape[1] for x in batches)
        out["target_block_patches"] = statistics.mean(x[2].shape[2] for x in batches)
    peak = peak_mib(device)
    out["peak_mem_mb"] = round(peak, 1)
    out["mem_kind"] = "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss"
    if device.type != "cuda":
        out["rss_growth_mb"] = round(peak - rss_before, 1) if rss_before is not None else None
    out["flops_per_step"] = flops
    out["flops_per_image"] = round(flops / bs) if flops else None
    peak = peak_flops(device)
    step_s = sum(times) / len(times)
    out["mfu"] = round(flops / step_s / peak, 4) if (flops and peak) else None
    out.update(environment(device))
    return out


def time_photometric(tc: TrainConfig, batch: Any, device, reps: int, compile_: bool) -> float:
    """ms per batch of the batched photometric ops (``views.photometric=device``) on ``device``,
    one call per view size as the datamodule's transfer hook makes them (compiled with
    ``bench.compile``): the work the device takes over from the loader."""
    import torch
    from lightning.fabric.utilities.apply_func import move_data_to_device

    from jepa_zoo.data.photometric import DevicePhotometric
    from jepa_zoo.methods import get_method

    ops = DevicePhotometric(get_method(tc.method.name, tc.method.module).train_transform(tc))
    if compile_:
        ops.compile_()
    inputs = move_data_to_device(batch.inputs, device)

    def run() -> None:
        ops(inputs, torch.float32)  # one call per view size, as the datamodule's hook makes them

    run()  # warm-up (allocator, kernels; compilation)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        run()
    sync()
    return 1e3 * (time.perf_counter() - t) / reps


def measure_data(tc: TrainConfig, b: BenchConfig) -> Dict[str, Any]:
    from jepa_zoo.data.batch import collate as plain_collate

    dm = data_module(tc)
    ds, bs, workers = dm.train_set, tc.data.batch_size, tc.data.num_workers
    collate = dm.collate_fn or plain_collate

    # one process: decode + views per image, then collation (and masks) per batch
    t0 = time.perf_counter()
    samples = [ds[i % len(ds)] for i in range(bs)]
    per_image_ms = 1e3 * (time.perf_counter() - t0) / bs
    reps = 5

    def per_batch_ms(fn: Callable[[Any], Any]) -> float:
        t = time.perf_counter()
        for _ in range(reps):
            fn(samples)
        return 1e3 * (time.perf_counter() - t) / reps

    collate_ms = per_batch_ms(collate)
    mask_ms = collate_ms - per_batch_ms(plain_collate) if dm.collate_fn is not None else None
    on_device = getattr(getattr(tc.method, "views", None), "photometric", None) == "device"
    photometric_ms = (time_photometric(tc, collate(samples), device_of(tc), reps, b.compile)
                      if on_device else None)

    loader = dm.train_dataloader()

    def forever():
        while True:
            yield from loader

    it = forever()
    for _ in range(b.warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(b.steps):
        next(it)
    dt = time.perf_counter() - t0
    ips = b.steps * bs / dt
    return {
        "what": "data", "method": tc.method.name, "dataset": tc.data.name, "root": tc.data.root,
        "img_size": tc.data.img_size, "batch_size": bs, "num_workers": workers, "batches": b.steps,
        "images_per_s": round(ips, 2), "images_per_s_per_worker": round(ips / max(workers, 1), 2),
        "decode_views_ms_per_image": round(per_image_ms, 3), "collate_ms_per_batch": round(collate_ms, 3),
        "mask_ms_per_batch": round(mask_ms, 3) if mask_ms is not None else None,
        "photometric": "device" if on_device else "loader", "compile": b.compile,
        "device_photometric_ms_per_batch": round(photometric_ms, 3) if photometric_ms is not None else None,
        **environment(device_of(tc) if on_device else None),
    }


def environment(device) -> Dict[str, Any]:
    import torch

    dev = torch.cuda.get_device_name(device) if device is not None and device.type == "cuda" else cpu_name()
    return {"device": dev, "cpu": cpu_name(), "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__}


def run(cfg: DictConfig) -> Dict[str, Any]:
    quiet_logs()
    train_cfg, bench = split_config(cfg)
    tc = validate(train_cfg)
    log.info("bench %s", asdict(bench))
    return measure_step(tc, bench) if bench.what == "step" else measure_data(tc, bench)


@hydra.main(version_base="1.3", config_path="conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    try:
        result = run(cfg)
    except (ConfigError, DataError) as e:
        log.error("%s: %s", type(e).__name__, e)
        sys.exit(2)
    print(json.dumps(result), flush=True)


def unknown_group_option(argv: List[str]) -> Optional[str]:
    """``group=option`` arguments naming no ``conf/<group>/<option>.yaml`` (Hydra itself would exit 1)."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        group = CONF_DIR / key
        if not sep or not group.is_dir() or any(c in value for c in "()[]{}$"):
            continue
        for option in value.split(","):
            if option and not (group / f"{option}.yaml").exists():
                allowed = ", ".join(sorted(p.stem for p in group.glob("*.yaml")))
                return f"{key}: unknown option {option!r}; allowed: {allowed}"
    return None


if __name__ == "__main__":
    problem = unknown_group_option(sys.argv[1:])
    if problem:
        print(f"ConfigError: {problem}", file=sys.stderr)
        sys.exit(2)
    register_resolvers()
    main()
