"""Our I-JEPA training step against the official one (facebookresearch/ijepa), on this machine.

    git --git-dir=<mirror of facebookresearch/ijepa> archive HEAD | tar -x -C /tmp/ijepa-src
    python benchmarks/bench_official_ijepa.py --ijepa-src /tmp/ijepa-src [--model vit_tiny] [--batch 16]

The official code is imported at run time from ``--ijepa-src`` (never copied here: CC-BY-NC).
Each implementation runs in its own process (clean peak RSS) with the same model (ViT/16 at
224 px, no CLS token), predictor (depth/width), batch size and multi-block mask settings
(1 context block 85-100 %, 4 targets 15-20 %, aspect 0.75-1.5, min_keep 10), fp32:

* ``ours``: ``python -m jepa_zoo.bench method=ijepa data=synthetic ...`` (the online probe off:
  the official code has none);
* ``official``: its ``init_model`` / ``init_opt`` / ``MaskCollator`` and the body of ``train_step``
  in its ``src/train.py`` (LR and WD schedulers, target forward + layer_norm + apply_masks,
  context encoder + predictor, smooth L1, backward, AdamW, ``grad_logger``, zero_grad, per-
  parameter EMA, ``float(loss)``) without the DDP wrappers (one process; ours has none either);
* ``official_jz_masks``: the same official step fed our collator's masks, so both sides do the
  same attention work (the official collator truncates every context to the batch's smallest).

Prints one JSON line per implementation (images/s, step ms, peak RSS, FLOPs) and a summary line
with the speed and memory ratios.  Steps are timed with ``time.perf_counter`` after warm-up, as
``jepa_zoo.bench`` does.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OURS_BACKBONE = {"vit_tiny": "vit_t", "vit_small": "vit_s", "vit_base": "vit_b"}
MASKS = dict(enc_mask_scale=(0.85, 1.0), pred_mask_scale=(0.15, 0.2), aspect_ratio=(0.75, 1.5), nenc=1, npred=4,
             min_keep=10, allow_overlap=False)


def run_ours(a: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "jepa_zoo.bench", "method=ijepa", f"backbone={OURS_BACKBONE[a.model]}",
           "data=synthetic", f"data.batch_size={a.batch}", f"method.pred_depth={a.pred_depth}",
           f"method.pred_dim={a.pred_dim}", "method.probe.enabled=false", f"bench.steps={a.steps}",
           f"bench.warmup={a.warmup}", f"bench.batches={a.batches}", "hydra.run.dir=/tmp/jz-bench-official-ijepa"]
    return _child(cmd)


def run_official(a: argparse.Namespace, masks: str) -> dict:
    cmd = [sys.executable, __file__, "--child", masks, "--ijepa-src", a.ijepa_src, "--model", a.model,
           "--batch", str(a.batch), "--pred-depth", str(a.pred_depth), "--pred-dim", str(a.pred_dim),
           "--steps", str(a.steps), "--warmup", str(a.warmup), "--batches", str(a.batches)]
    return _child(cmd)


def _child(cmd: list) -> dict:
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` from /proc/self/status in MiB (the same reading as ``jepa_zoo.bench``, which
    this child does not import: its imports would add to the official side's RSS)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def build_official(a: argparse.Namespace, masks: str, amp: str = "none"):
    """The official model, optimiser, schedules and ``a.batches`` batches (its collator, or ours when
    ``masks == "official_jz_masks"``); returns ``(train_step, batches)``.

    ``amp``: ``none`` (fp32, ``use_bfloat16=False``); ``configured`` (``use_bfloat16=True`` as in
    every official config: its ``torch.cuda.amp.autocast`` + ``GradScaler``, which on a CPU leave
    the step in fp32); ``cpu_bf16`` (our modification: its step under ``torch.autocast("cpu",
    bfloat16)``, to show what bf16 alone gives on this CPU)."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(Path(a.ijepa_src).resolve()))
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)  # its modules log to stdout otherwise
    with redirect_stdout(sys.stderr):
        from src.helper import init_model, init_opt
        from src.masks.multiblock import MaskCollator
        from src.masks.utils import apply_masks
        from src.utils.distributed import AllReduce
        from src.utils.logging import grad_logger
        from src.utils.tensors import repeat_interleave_batch

        torch.manual_seed(0)
        device = torch.device("cpu")
        encoder, predictor = init_model(device=device, patch_size=16, crop_size=224, pred_depth=a.pred_depth,
                                        pred_emb_dim=a.pred_dim, model_name=a.model)
    target_encoder = copy.deepcopy(encoder)
    for p in target_encoder.parameters():
        p.requires_grad = False
    ipe, epochs = 1000, 300  # only shape the schedules
    optimizer, scaler, scheduler, wd_scheduler = init_opt(
        encoder=encoder, predictor=predictor, wd=0.04, final_wd=0.4, start_lr=2e-4, ref_lr=1e-3, final_lr=1e-6,
        iterations_per_epoch=ipe, warmup=40, num_epochs=epochs, ipe_scale=1.0, use_bfloat16=amp == "configured")
    import warnings

    warnings.filterwarnings("ignore", message=".*torch.cuda.amp.*")  # its CUDA AMP calls on a CPU
    if amp == "cpu_bf16":
        autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = lambda: torch.cuda.amp.autocast(dtype=torch.bfloat16, enabled=amp == "configured")  # noqa: E731
    momentum_scheduler = (0.996 + i * (1.0 - 0.996) / (ipe * epochs) for i in range(ipe * epochs + 1))

    gen = torch.Generator().manual_seed(0)
    if masks == "official":
        collate = MaskCollator(input_size=224, patch_size=16, **MASKS)
    else:
        from jepa_zoo.masks.schema import masking_config
        from jepa_zoo.masks.collator import MaskCollator

        ours = MaskCollator((14, 14), masking_config("multiblock"))

        def collate(samples):
            images, ctx, tgt, labels = ours(samples)
            return [images, labels], [ctx], [tgt[:, t] for t in range(tgt.shape[1])]

    batches = []
    for _ in range(a.batches):
        udata, masks_enc, masks_pred = collate([(torch.randn(3, 224, 224, generator=gen), 0) for _ in range(a.batch)])
        batches.append((udata[0], masks_enc, masks_pred))

    def train_step(batch):  # the body of train_step() in the official src/train.py, one process
        imgs, masks_enc, masks_pred = batch
        scheduler.step()
        wd_scheduler.step()
        with autocast():
            with torch.no_grad():
                h = target_encoder(imgs)
                h = F.layer_norm(h, (h.size(-1),))
                B = len(h)
                h = apply_masks(h, masks_pred)
                h = repeat_interleave_batch(h, B, repeat=len(masks_enc))
            z = encoder(imgs, masks_enc)
            z = predictor(z, masks_enc, masks_pred)
            loss = AllReduce.apply(F.smooth_l1_loss(z, h))
        if amp == "configured":
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        grad_logger(encoder.named_parameters())
        optimizer.zero_grad()
        with torch.no_grad():
            m = next(momentum_scheduler)
            for param_q, param_k in zip(encoder.parameters(), target_encoder.parameters()):
                param_k.data.mul_(m).add_((1. - m) * param_q.detach().data)
        return float(loss)

    return train_step, batches


def official_child(a: argparse.Namespace) -> dict:
    """One process: build the official model and batches, then time its training step."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    train_step, batches = build_official(a, a.child)
    rss_before = _status_mb("VmRSS")
    with FlopCounterMode(display=False) as counter:  # one step, as jepa_zoo.bench counts one
        train_step(batches[0])
    flops = int(counter.get_total_flops())
    Path("/proc/self/clear_refs").write_text("5")  # restart the peak-RSS mark (VmHWM)
    for i in range(a.warmup):
        train_step(batches[i % len(batches)])
    times = []
    for i in range(a.steps):
        t0 = time.perf_counter()
        train_step(batches[(a.warmup + i) % len(batches)])
        times.append(time.perf_counter() - t0)
    peak = _status_mb("VmHWM")
    return {
        "impl": a.child, "model": a.model, "batch_size": a.batch, "pred_depth": a.pred_depth,
        "pred_dim": a.pred_dim, "steps": a.steps, "warmup": a.warmup,
        "images_per_s": round(a.batch * len(times) / sum(times), 3),
        "step_ms_mean": round(1e3 * sum(times) / len(times), 2),
        "step_ms_median": round(1e3 * statistics.median(times), 2),
        "context_patches": statistics.mean(b[1][0].shape[1] for b in batches),
        "target_block_patches": statistics.mean(b[2][0].shape[1] for b in batches),
        "peak_mem_mb": round(peak, 1), "rss_growth_mb": round(peak - rss_before, 1),
        "flops_per_step": flops, "flops_per_image": round(flops / a.batch),
        "torch_threads": torch.get_num_threads(),
    }


def interleaved_child(a: argparse.Namespace) -> list:
    """One process holding all three steps, alternating them step by step: load from other processes
    slows every implementation alike, so the ratio of medians holds on a busy machine (no RSS here)."""
    from hydra import compose, initialize_config_dir

    from jepa_zoo.bench import CONF_DIR, autocast_of, build_batches, data_module, device_of, make_train_step, split_config
    from jepa_zoo.config import validate
    from jepa_zoo.methods import build_model

    overrides = ["run_dir=/tmp/jz-bench-official-ijepa", "method=ijepa", f"backbone={OURS_BACKBONE[a.model]}",
                 f"data.batch_size={a.batch}", f"method.pred_depth={a.pred_depth}", f"method.pred_dim={a.pred_dim}",
                 "method.probe.enabled=false",
                 f"trainer.precision={'bf16-mixed' if a.precision == 'bf16' else '32-true'}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        tc = validate(split_config(compose("bench", overrides=overrides))[0])
    model = build_model(tc, num_classes=tc.data.num_classes).train()
    ours_step, _ = make_train_step(model, tc, autocast_of(tc, device_of(tc)))
    impls = {"ours": (ours_step, build_batches(data_module(tc), a.batches, a.batch))}
    if a.precision == "fp32":
        for masks in ("official", "official_jz_masks"):
            impls[masks] = build_official(a, masks)
    else:  # bf16: ours in bf16-mixed; the official step as configured (fp32 on a CPU) and under CPU autocast
        for masks in ("official", "official_jz_masks"):
            impls[masks] = build_official(a, masks, amp="configured")
        impls["official_jz_masks_cpu_bf16"] = build_official(a, "official_jz_masks", amp="cpu_bf16")
    times: dict = {k: [] for k in impls}
    for i in range(a.warmup + a.steps):
        for name in (list(impls) if i % 2 == 0 else list(impls)[::-1]):
            step, batches = impls[name]
            t0 = time.perf_counter()
            step(batches[i % len(batches)])
            if i >= a.warmup:
                times[name].append(time.perf_counter() - t0)
    return [{"impl": name, "mode": "interleaved", "precision": a.precision, "model": a.model, "batch_size": a.batch, "steps": a.steps,
             "images_per_s": round(a.batch * len(t) / sum(t), 3), "step_ms_mean": round(1e3 * sum(t) / len(t), 2),
             "step_ms_median": round(1e3 * statistics.median(t), 2)} for name, t in times.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ijepa-src", required=True, help="a checkout (or git archive) of facebookresearch/ijepa")
    ap.add_argument("--model", default="vit_tiny", choices=sorted(OURS_BACKBONE))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pred-depth", type=int, default=12)
    ap.add_argument("--pred-dim", type=int, default=384)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batches", type=int, default=4, help="distinct batches cycled (mask sizes vary per batch)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat all implementations, alternating the order")
    ap.add_argument("--impls", nargs="+", default=["ours", "official", "official_jz_masks"])
    ap.add_argument("--interleaved", action="store_true",
                    help="time all three in one process, alternating step by step (for a busy machine; no RSS)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16 (with --interleaved): ours in bf16-mixed against the official step with "
                         "use_bfloat16=True as its configs set it, and under CPU autocast")
    ap.add_argument("--child", choices=["official", "official_jz_masks"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(official_child(a)), flush=True)
        return
    if a.precision == "bf16" and not a.interleaved:
        sys.exit("--precision bf16 needs --interleaved")
    if a.interleaved:
        sys.path.insert(0, str(REPO))
        out = interleaved_child(a)
        for line in out:
            print(json.dumps(line), flush=True)
        med = {o["impl"]: o["step_ms_median"] for o in out}
        print(json.dumps({"summary": True, "mode": "interleaved", "precision": a.precision, "model": a.model,
                          "batch_size": a.batch,
                          **{f"speedup_vs_{k}": round(v / med["ours"], 3) for k, v in med.items() if k != "ours"}}))
        return
    if not (Path(a.ijepa_src) / "src" / "models" / "vision_transformer.py").exists():
        sys.exit(f"--ijepa-src {a.ijepa_src}: not a facebookresearch/ijepa checkout (no src/models/vision_transformer.py)")

    results: dict = {}
    for r in range(a.rounds):
        for impl in (a.impls if r % 2 == 0 else a.impls[::-1]):
            out = run_ours(a) if impl == "ours" else run_official(a, impl)
            out = {"impl": impl, "round": r, **{k: v for k, v in out.items() if k != "impl"}}
            print(json.dumps(out), flush=True)
            results.setdefault(impl, []).append(out)

    def mean(impl: str, key: str) -> float:
        return statistics.mean(o[key] for o in results[impl])

    summary = {"summary": True, "model": a.model, "batch_size": a.batch, "rounds": a.rounds}
    for impl in results:
        summary[f"{impl}_images_per_s"] = round(mean(impl, "images_per_s"), 3)
    if "ours" in results:
        for impl in (i for i in results if i != "ours"):
            summary[f"speedup_vs_{impl}"] = round(mean("ours", "images_per_s") / mean(impl, "images_per_s"), 3)
            summary[f"peak_rss_ratio_vs_{impl}"] = round(mean("ours", "peak_mem_mb") / mean(impl, "peak_mem_mb"), 3)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
