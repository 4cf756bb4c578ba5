"""Typed schemas for the Hydra configs and their validation.

Hydra composes plain YAML from ``conf/``; :func:`validate` then merges each
section onto its dataclass schema, so an unknown key, a wrong type or an
impossible value fails before anything is built, with a message that names
the key (``method.lambd: ...``).  Each section's schema lives with the code it
configures (``models.backbones.BackboneConfig``, ``data.datamodule.DataConfig``,
``masks.collator.MaskingConfig``, ...); a method's schema is the one its module
declares (:mod:`jepa_zoo.registry`).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jepa_zoo.data.schema import DATA_NAMES, DATA_SOURCES, DataConfig, IWMViewsConfig, ViewsConfig
from jepa_zoo.errors import ConfigError, check as _check
from jepa_zoo.masks.schema import MASKINGS, PATCH_MASKINGS, VIDEO_MASKINGS, MaskingConfig
from jepa_zoo.models.parts import COLLAPSES, CollapseConfig
from jepa_zoo.models.schema import BackboneConfig
from jepa_zoo.registry import method_spec

__all__ = ["BackboneConfig", "ConfigError", "DataConfig", "IWMViewsConfig", "MaskingConfig", "ViewsConfig"]

# Names this module used to define, and where each lives now: ``jepa_zoo.config.<name>`` still
# resolves (with a DeprecationWarning naming the new place).
MOVED = {
    "LeJEPAConfig": "jepa_zoo.methods.lejepa",
    "IJEPAConfig": "jepa_zoo.methods.ijepa",
    "IWMConfig": "jepa_zoo.methods.iwm",
    "MRRConfig": "jepa_zoo.methods.iwm",
    "MASKING_NAMES": "jepa_zoo.masks.schema",
}


def __getattr__(name: str) -> Any:
    if name in MOVED:
        import importlib
        import warnings

        warnings.warn(f"jepa_zoo.config.{name} moved to {MOVED[name]}.{name}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``lr * final_lr_ratio`` (the defaults: LeJEPA's)."""

    lr: float = 5e-4
    final_lr_ratio: float = 1e-3
    weight_decay: float = 0.05  # LeJEPA's paper: 5e-2 for a ViT, 5e-4 for a ResNet
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_epochs: float = 10.0
    warmup_steps: Optional[int] = None  # overrides warmup_epochs when set
    warmup_start_ratio: float = 0.0  # the warm-up starts at lr * this
    final_weight_decay: Optional[float] = None  # cosine weight-decay schedule to this value
    # linear scaling: the LR used is lr * global_batch / ref_batch_size, global_batch being
    # data.batch_size * processes * accumulate_grad_batches; None: lr as given
    ref_batch_size: Optional[int] = None
    # the LR after warm-up: cosine to lr * final_lr_ratio, or constant (V-JEPA 2) with, over the last
    # `cooldown` fraction of the run, a linear fall to lr * final_lr_ratio
    schedule: str = "cosine"
    cooldown: float = 0.0

    def __post_init__(self) -> None:
        _check(self.schedule in ("cosine", "constant"), "method.optim.schedule",
               f"must be 'cosine' or 'constant', got {self.schedule!r}")
        _check(0 <= self.cooldown <= 1, "method.optim.cooldown", f"must be in [0, 1], got {self.cooldown}")
        _check(self.cooldown == 0 or self.schedule == "constant", "method.optim.cooldown",
               "a cooldown follows the constant schedule (method.optim.schedule=constant)")
        _check(self.ref_batch_size is None or self.ref_batch_size > 0, "method.optim.ref_batch_size", "must be > 0")
        _check(0 <= self.warmup_start_ratio <= 1, "method.optim.warmup_start_ratio", "must be in [0, 1]")
        _check(self.final_weight_decay is None or self.final_weight_decay >= 0,
               "method.optim.final_weight_decay", "must be >= 0")
        _check(self.lr >= 0, "method.optim.lr", f"must be >= 0, got {self.lr}")
        _check(0 <= self.final_lr_ratio <= 1, "method.optim.final_lr_ratio", "must be in [0, 1]")
        _check(self.weight_decay >= 0, "method.optim.weight_decay", "must be >= 0")
        _check(self.warmup_epochs >= 0, "method.optim.warmup_epochs", "must be >= 0")
        _check(self.warmup_steps is None or self.warmup_steps >= 0, "method.optim.warmup_steps", "must be >= 0")


@dataclass
class ProbeConfig:
    """Online linear probe on detached features (own optimiser group)."""

    enabled: bool = True
    lr: float = 1e-3
    weight_decay: float = 1e-6


@dataclass
class MethodConfig:
    """The base of every method's schema: its name, the module that declares it (default
    ``jepa_zoo.methods.<name>``), optimiser and online probe."""

    name: str = "?"
    module: Optional[str] = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def collapse_defaults(self) -> Dict[str, Any]:
        """The paper's values of ``collapse.*`` keys for this method (I-JEPA: ``{"momentum": self.ema}``);
        a ``collapse.<key>`` left null takes them, then :data:`COLLAPSE_DEFAULTS`."""
        return {}


# collapse.<key> when neither the command nor the method (MethodConfig.collapse_defaults) gives it
COLLAPSE_DEFAULTS: Dict[str, Any] = {
    "momentum": [0.996, 1.0], "weight": 0.05, "mix": "convex", "num_slices": 1024, "t_max": 3.0, "num_points": 17,
    "var_weight": 1.0, "cov_weight": 0.04, "idm_weight": 0.0,  # VICReg's 25 / 25 / 1 relative to its invariance term
}


@dataclass
class CheckpointConfig:
    every_n_train_steps: Optional[int] = None
    save_top_k: int = 1

    def __post_init__(self) -> None:
        _check(self.every_n_train_steps is None or self.every_n_train_steps > 0,
               "checkpoint.every_n_train_steps", "must be > 0")
        _check(self.save_top_k >= -1, "checkpoint.save_top_k",
               f"must be -1 (keep all), 0 (only last.ckpt) or the number of recent checkpoints to keep, got {self.save_top_k}")


@dataclass
class FSDPConfig:
    """Options of ``trainer.strategy=fsdp`` (:class:`jepa_zoo.parallel.FSDPStrategy`, torch's FSDP2)."""
    reshard_after_forward: bool = True  # free gathered weights after each block's forward (ZeRO-3)
    param_dtype: Optional[str] = None  # bf16: gather and compute weights in bf16 (gradients reduced in fp32)
    reduce_every_micro_batch: bool = True  # false: with gradient accumulation, reduce-scatter only the sum

    def __post_init__(self) -> None:
        _check(self.param_dtype in (None, "bf16"), "fsdp.param_dtype",
               f"must be bf16 or null (fp32 weights), got {self.param_dtype!r}")


@dataclass
class ImagesConfig:
    """Image panels at validation (masks, IWM pairs, retrievals): to W&B / TensorBoard and
    ``<run dir>/images/*.png`` (:class:`jepa_zoo.callbacks.images.ImageLogger`)."""

    enabled: bool = True
    every_n_epochs: int = 1
    num_images: int = 8  # rows per panel: the first validation images

    def __post_init__(self) -> None:
        _check(self.every_n_epochs >= 1, "images.every_n_epochs", f"must be >= 1, got {self.every_n_epochs}")
        _check(self.num_images >= 1, "images.num_images", f"must be >= 1, got {self.num_images}")


@dataclass
class MonitorsConfig:
    """Online monitors at validation, for every method (:mod:`jepa_zoo.callbacks.monitors`)."""

    rankme: bool = True  # val/rankme, val/emb_std, val/isotropy of eval-encoder features
    knn: bool = True  # val/knn_top1: weighted kNN of validation images against a training-feature queue
    knn_queue: int = 4096  # training samples in the kNN queue (per process)
    knn_k: int = 20
    knn_temperature: float = 0.07
    max_images: int = 2048  # validation images each monitor embeds per validation run
    perf: bool = True  # perf/ metrics per logging interval (jepa_zoo.callbacks.perf)
    perf_flops: bool = True  # count the first step's model FLOPs (perf/tflops_per_device, perf/mfu)
    final_knn: int = 0  # > 0: at the end, kNN of this many test images, trained vs initial encoder (learned.py)

    def __post_init__(self) -> None:
        _check(self.final_knn >= 0, "monitors.final_knn", f"must be >= 0, got {self.final_knn}")
        _check(self.knn_queue >= 1, "monitors.knn_queue", f"must be >= 1, got {self.knn_queue}")
        _check(self.knn_k >= 1, "monitors.knn_k", f"must be >= 1, got {self.knn_k}")
        _check(self.knn_temperature > 0, "monitors.knn_temperature", f"must be > 0, got {self.knn_temperature}")
        _check(self.max_images >= 2, "monitors.max_images", f"must be >= 2, got {self.max_images}")


@dataclass
class TrainConfig:
    method: Any = None
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    masking: Any = field(default_factory=MaskingConfig)  # the schema of its name (jepa_zoo.masks.schema.MASKINGS)
    collapse: CollapseConfig = field(default_factory=CollapseConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: Dict[str, Any] = field(default_factory=dict)
    logger: Dict[str, Any] = field(default_factory=dict)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    monitors: MonitorsConfig = field(default_factory=MonitorsConfig)
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    compile: bool = False  # torch.compile the transformer blocks (jepa_zoo/models/compile.py)
    seed: int = 0
    run_dir: str = "."
    resume: Optional[str] = None  # auto: the run dir's last.ckpt if any; or a checkpoint path
    init_from: Optional[str] = None  # start from these weights (jepa_zoo .ckpt or official I-JEPA): no optimiser state
    nonfinite_loss: str = "stop"  # stop: end the run with a message; skip: skip the optimiser step
    progress_every_n_steps: int = 1  # progress-bar refresh (each refresh reads the logged values: a host sync)

    def __post_init__(self) -> None:
        _check(self.progress_every_n_steps >= 1, "progress_every_n_steps", f"must be >= 1, got {self.progress_every_n_steps}")
        _check(self.nonfinite_loss in ("stop", "skip"), "nonfinite_loss",
               f"must be 'stop' or 'skip', got {self.nonfinite_loss!r}")


def _trainer_keys() -> set:
    from lightning.pytorch import Trainer

    return set(inspect.signature(Trainer.__init__).parameters) - {"self", "logger", "callbacks", "default_root_dir"}


# Settings added after checkpoints were written whose default differs from what those checkpoints
# were trained with: a saved config without the key gets this value.
LEGACY_DEFAULTS = {("backbone", "sincos_order"): "timm"}


def validate_saved(cfg: Dict[str, Any]) -> TrainConfig:
    """:func:`validate` for a config a checkpoint saved (its ``hyper_parameters.cfg``): the keys its
    method declares retired (``MethodSpec.retired``, e.g. I-JEPA's ``mrr``) are dropped first, so a
    checkpoint written before a key was retired still loads; a key added since gets the value those
    checkpoints were trained with (:data:`LEGACY_DEFAULTS`)."""
    method = cfg.get("method") if isinstance(cfg.get("method"), dict) else {}
    spec = method_spec(method.get("name"), method.get("module"))
    if any(k in method for k in spec.retired):
        cfg = {**cfg, "method": {k: v for k, v in method.items() if k not in spec.retired}}
    masking = cfg.get("masking") if isinstance(cfg.get("masking"), dict) else {}
    if masking.get("name") in MASKINGS:  # one schema for every masking once: the keys its own schema lacks go
        keys = {f.name for f in dataclasses.fields(MASKINGS[masking["name"]].schema)}
        cfg = {**cfg, "masking": {k: v for k, v in masking.items() if k in keys}}
    for (section, key), old in LEGACY_DEFAULTS.items():
        if isinstance(cfg.get(section), dict) and key not in cfg[section]:
            cfg = {**cfg, section: {**cfg[section], key: old}}
    return validate(OmegaConf.create(cfg))


def _masking_schema(raw: Dict[str, Any]) -> type:
    """The schema of the composed ``masking.name`` (:data:`jepa_zoo.masks.schema.MASKINGS`)."""
    name = (raw.get("masking") or {}).get("name", "none") if isinstance(raw.get("masking"), dict) else "none"
    _check(name in MASKINGS, "masking.name", f"must be one of {', '.join(MASKINGS)}, got {name!r}")
    return MASKINGS[name].schema


def validate(cfg: DictConfig) -> TrainConfig:
    """Check a composed config against the schemas; return typed dataclasses.

    Raises:
        ConfigError: naming the offending key (``section.key: problem``).
    """
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    method = raw.get("method") if isinstance(raw.get("method"), dict) else {}
    spec = method_spec(method.get("name"), method.get("module"))
    data = raw["data"] if isinstance(raw.get("data"), dict) else {}
    if data.get("name") in DATA_NAMES and not data.get("module"):  # before the sections' own checks, which
        _check_data_kind(spec, data["name"], DATA_SOURCES[data["name"]].sample)  # would name a symptom (backbone.pos)
    try:
        schema = OmegaConf.structured(TrainConfig)
        schema.method = OmegaConf.structured(spec.schema)
        schema.masking = OmegaConf.structured(_masking_schema(raw))
        merged = OmegaConf.merge(schema, raw)
        out = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        msg = (getattr(e, "msg", None) or str(e)).splitlines()[0]  # OmegaConf appends full_key / object_type lines
        raise ConfigError(f"{key}: {msg}") from None
    unknown = set(out.trainer) - _trainer_keys()
    if unknown:
        raise ConfigError(
            f"trainer.{sorted(unknown)[0]}: not a lightning.Trainer argument this entry point takes "
            f"(run dirs come from Hydra; see https://lightning.ai/docs/pytorch/stable/common/trainer.html)"
        )
    assert isinstance(out, TrainConfig)
    allowed = spec.maskings
    _check(out.masking.name in allowed, "masking",
           f"method={out.method.name} uses masking={'|'.join(allowed)}, got {out.masking.name}")
    _check_data_kind(spec, out.data.name, out.data.source.sample)
    out.collapse = resolve_collapse(out.collapse, out.method, spec)
    _check_combination(out)
    return out


def resolve_collapse(c: CollapseConfig, method: Any, spec: Any) -> CollapseConfig:
    """``collapse`` with its option (null: the method's default, the first of ``spec.collapses``) and every
    key of that option filled: the command's value, else the method's paper value
    (``method.collapse_defaults()``), else :data:`COLLAPSE_DEFAULTS`.  Refuses, naming the key, an option
    the method cannot take and a key another option reads."""
    name = c.name or spec.collapses[0]
    if name not in spec.collapses:
        why = spec.collapse_refusals.get(name, "")
        raise ConfigError(f"collapse: method={method.name} takes collapse={'|'.join(spec.collapses)}, got {name}"
                          + (f" ({why})" if why else ""))
    keys = COLLAPSES[name].keys
    every = [k for kind in COLLAPSES.values() for k in kind.keys]
    stray = [k for k in dict.fromkeys(every) if k not in keys and getattr(c, k) is not None]
    _check(not stray, f"collapse.{stray[0] if stray else ''}",
           f"is not a key of collapse={name} (its keys: {', '.join(keys) or 'none'})")
    paper = method.collapse_defaults()
    values = {k: getattr(c, k) if getattr(c, k) is not None else paper.get(k, COLLAPSE_DEFAULTS[k]) for k in keys}
    _check(name != "vicreg" or not values["idm_weight"] or spec.inputs == "frames", "collapse.idm_weight",
           f"the inverse-dynamics term needs actions; method={method.name} takes {spec.inputs}, not frames with actions")
    return CollapseConfig(name=name, **values)


SAMPLE_OF_INPUTS = {"images": "image", "views": "image", "pair": "image", "clip": "clip", "frames": "episode"}


def _check_data_kind(spec: Any, data_name: str, sample: str) -> None:
    """A method given samples of another kind (a video method on images, ...): one line naming ``data``."""
    wanted = SAMPLE_OF_INPUTS[spec.inputs]
    if sample == wanted:
        return
    if wanted == "clip":
        raise ConfigError(f"data: method={spec.name} trains on clips: it needs video: data=video_folder (or "
                          "data=moving_shapes)")
    if wanted == "image":
        raise ConfigError(f"data: method={spec.name} trains on images: data={data_name} gives {sample}s "
                          "(video methods: method=vjepa, method=vjepa2)")
    raise ConfigError(f"data: method={spec.name} trains on {wanted}s, data={data_name} gives {sample}s")


def _check_combination(c: TrainConfig) -> None:
    """Cross-section rules that no single schema can see."""
    if c.trainer.get("strategy") == "fsdp":
        precision = str(c.trainer.get("precision"))
        _check(precision not in ("16-mixed", "16", "16-true"), "trainer.precision",
               f"{precision} (fp16) is not supported with strategy=fsdp; use bf16-mixed")
        _check(c.fsdp.param_dtype is None or precision == "bf16-mixed", "fsdp.param_dtype",
               f"bf16 weights need trainer.precision=bf16-mixed (autocast keeps norms and losses in fp32), "
               f"got {precision}")
        _check(not c.trainer.get("sync_batchnorm"), "trainer.sync_batchnorm",
               "is not applied under strategy=fsdp (each process would normalise its own batch without "
               "saying so); set trainer.sync_batchnorm=false, or use a backbone and projector without "
               "BatchNorm (ViTs; LeJEPA's method.proj_layers=1)")
    if c.data.video:
        _check(c.backbone.video, "backbone", f"data={c.data.name} needs a video ViT (backbone=vit_t ... vit_h, "
               f"with backbone.num_frames > 1: the data yaml sets it), got backbone {c.backbone.name} with "
               f"{c.backbone.num_frames} frame(s)")
        _check(c.backbone.num_frames == c.data.num_frames, "backbone.num_frames",
               f"must equal data.num_frames ({c.data.num_frames}), got {c.backbone.num_frames}")
    if c.masking.name in VIDEO_MASKINGS:
        _check(c.backbone.video, "backbone", f"method={c.method.name} needs video: a video data group "
               f"(data=video_folder or data=moving_shapes) and a ViT backbone")
        _check(c.backbone.img_size == c.data.img_size, "backbone.img_size",
               f"must equal data.img_size ({c.data.img_size}) for token masks, got {c.backbone.img_size}")
        _check(c.backbone.img_size // c.backbone.patch_size >= 2, "backbone.patch_size",
               f"a {c.backbone.img_size // c.backbone.patch_size}-token-wide frame is too small to mask")
    if c.masking.name in PATCH_MASKINGS:
        _check(c.backbone.kind == "vit", "backbone", f"method={c.method.name} needs a ViT backbone (vit_t ... vit_h)")
        _check(c.backbone.img_size == c.data.img_size, "backbone.img_size",
               f"must equal data.img_size ({c.data.img_size}) for patch masks, got {c.backbone.img_size}")
        grid = c.backbone.img_size // c.backbone.patch_size
        n = grid * grid
        if c.masking.name == "multiblock":
            _check(n >= 2 * c.masking.min_keep, "backbone.patch_size",
                   f"a {grid}x{grid} patch grid ({n} patches) is too small for multi-block masks with "
                   f"masking.min_keep={c.masking.min_keep}; use a smaller patch or a larger image")
        _check(grid >= 2, "backbone.patch_size", f"a {grid}x{grid} patch grid is too small to mask")
