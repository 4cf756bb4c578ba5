"""Typed schemas for the Hydra configs and their validation.

Hydra composes plain YAML from ``conf/``; :func:`validate` then merges each
section onto its dataclass schema, so an unknown key, a wrong type or an
impossible value fails before anything is built, with a message that names
the key (``method.lambd: ...``).  Methods register their own schema in
:data:`METHOD_SCHEMAS` (see ``jepa_zoo/methods/__init__.py``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or impossible."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _check_range(pair: List[float], key: str, lo: float, hi: float) -> None:
    _check(len(pair) == 2, key, f"expected [min, max], got {list(pair)}")
    _check(lo <= pair[0] <= pair[1] <= hi, key, f"expected {lo} <= min <= max <= {hi}, got {list(pair)}")


@dataclass
class BackboneConfig:
    """Encoder.  ``kind=vit``: jepa_zoo's maskable ViT built from timm blocks;
    ``kind=timm``: any timm model name, pooled features (``cifar_stem`` swaps a
    ResNet stem for a 3x3 stride-1 conv without max-pool)."""

    kind: str = "vit"
    name: str = "vit_tiny_patch16_224"
    img_size: int = 224
    patch_size: int = 16
    cifar_stem: bool = False
    drop_path_rate: float = 0.0
    kwargs: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.kind in ("vit", "timm"), "backbone.kind", f"must be 'vit' or 'timm', got {self.kind!r}")
        _check(self.img_size > 0, "backbone.img_size", f"must be > 0, got {self.img_size}")
        _check(self.patch_size > 0, "backbone.patch_size", f"must be > 0, got {self.patch_size}")
        if self.kind == "vit":
            _check(
                self.img_size % self.patch_size == 0,
                "backbone.patch_size",
                f"patch size {self.patch_size} does not divide image size {self.img_size}",
            )
        _check(0.0 <= self.drop_path_rate < 1.0, "backbone.drop_path_rate", "must be in [0, 1)")


@dataclass
class DataConfig:
    """Dataset and loader.  ``name``: folder | cifar10 | imagenet | fake."""

    name: str = "fake"
    root: Optional[str] = None
    cache_dir: Optional[str] = None
    train_split: str = "train"
    val_split: Optional[str] = "val"
    img_size: int = 224
    local_img_size: int = 96
    eval_crop_ratio: float = 0.875
    batch_size: int = 64
    val_batch_size: Optional[int] = None
    num_workers: int = 4
    pin_memory: bool = True
    num_classes: Optional[int] = None
    fake_size: int = 256
    bad_images: str = "skip"  # corrupt / non-image files: skip with a warning, or fail naming the file
    mean: List[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: List[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])

    def __post_init__(self) -> None:
        _check(self.name in ("folder", "cifar10", "imagenet", "fake"), "data.name",
               f"must be one of folder, cifar10, imagenet, fake; got {self.name!r}")
        _check(self.name == "fake" or bool(self.root), "data.root",
               f"is required for data={self.name} (a directory, or a .tar/.tar.gz archive)")
        _check(self.batch_size >= 1, "data.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.num_workers >= 0, "data.num_workers", f"must be >= 0, got {self.num_workers}")
        _check(self.img_size > 0 and self.local_img_size > 0, "data.img_size", "sizes must be > 0")
        _check(0 < self.eval_crop_ratio <= 1, "data.eval_crop_ratio", f"must be in (0, 1], got {self.eval_crop_ratio}")
        _check(len(self.mean) == 3 and len(self.std) == 3, "data.mean", "mean and std need 3 values")
        _check(self.bad_images in ("skip", "fail"), "data.bad_images",
               f"must be 'skip' or 'fail', got {self.bad_images!r}")


@dataclass
class ViewsConfig:
    """LeJEPA multi-crop: ``num_global`` large and ``num_local`` small views."""

    num_global: int = 2
    global_size: int = 224
    global_scale: List[float] = field(default_factory=lambda: [0.3, 1.0])
    num_local: int = 6
    local_size: int = 96
    local_scale: List[float] = field(default_factory=lambda: [0.05, 0.3])
    flip_p: float = 0.5
    jitter: List[float] = field(default_factory=lambda: [0.4, 0.4, 0.2, 0.1])
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    solarize_p: float = 0.2
    photometric: str = "loader"  # where jitter/grey/blur/solarize run: loader workers, or the device

    def __post_init__(self) -> None:
        _check(self.photometric in ("loader", "device"), "method.views.photometric",
               f"must be 'loader' or 'device', got {self.photometric!r}")
        _check(self.num_global >= 1, "method.views.num_global", f"must be >= 1, got {self.num_global}")
        _check(self.num_local >= 0, "method.views.num_local", f"must be >= 0, got {self.num_local}")
        _check_range(self.global_scale, "method.views.global_scale", 0.0, 1.0)
        _check_range(self.local_scale, "method.views.local_scale", 0.0, 1.0)
        _check(len(self.jitter) == 4 and all(0 <= j for j in self.jitter) and self.jitter[3] <= 0.5,
               "method.views.jitter", f"expected [brightness, contrast, saturation, hue] >= 0 with hue <= 0.5, "
               f"got {list(self.jitter)}")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            v = getattr(self, name)
            _check(0.0 <= v <= 1.0, f"method.views.{name}", f"probability must be in [0, 1], got {v}")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``lr * final_lr_ratio``."""

    lr: float = 5e-4
    final_lr_ratio: float = 1e-3
    weight_decay: float = 0.05
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_epochs: float = 10.0
    warmup_steps: Optional[int] = None
    warmup_start_ratio: float = 0.0
    final_weight_decay: Optional[float] = None  # cosine weight-decay schedule to this value
    # linear scaling: the LR used is lr * global_batch / ref_batch_size, global_batch being
    # data.batch_size * processes * accumulate_grad_batches; None: lr as given
    ref_batch_size: Optional[int] = None

    def __post_init__(self) -> None:
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
    name: str = "?"
    optim: OptimConfig = field(default_factory=OptimConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)


@dataclass
class LeJEPAConfig(MethodConfig):
    """LeJEPA: total = (1 − λ)·pred + λ·SIGReg."""

    name: str = "lejepa"
    lambd: float = 0.05
    proj_hidden_dim: int = 2048
    proj_dim: int = 64
    proj_layers: int = 3
    num_slices: int = 1024
    t_max: float = 3.0
    num_points: int = 17
    views: ViewsConfig = field(default_factory=ViewsConfig)

    def __post_init__(self) -> None:
        _check(0.0 <= self.lambd <= 1.0, "method.lambd", f"must be in [0, 1], got {self.lambd}")
        _check(self.proj_layers >= 1, "method.proj_layers", "must be >= 1")
        _check(self.proj_dim >= 1, "method.proj_dim", "must be >= 1")
        _check(self.num_slices >= 1, "method.num_slices", "must be >= 1")
        _check(self.num_points >= 3 and self.num_points % 2 == 1, "method.num_points", "must be odd and >= 3")
        _check(self.t_max > 0, "method.t_max", "must be > 0")


MASKING_NAMES = ("none", "multiblock", "rasterized", "block", "random")
PATCH_MASKINGS = MASKING_NAMES[1:]


@dataclass
class MaskingConfig:
    """Patch masks.  ``none``: whole images (LeJEPA); ``multiblock``: I-JEPA context + target blocks;
    ``rasterized`` / ``block`` / ``random``: the paper's ablations, context = complement of the targets
    (one target; ``target_scale`` and ``target_aspect`` used by ``block``, ``target_scale`` by ``random``)."""

    name: str = "none"
    num_targets: int = 4
    target_scale: List[float] = field(default_factory=lambda: [0.15, 0.2])
    target_aspect: List[float] = field(default_factory=lambda: [0.75, 1.5])
    context_scale: List[float] = field(default_factory=lambda: [0.85, 1.0])
    min_keep: int = 10

    def __post_init__(self) -> None:
        _check(self.name in MASKING_NAMES, "masking.name", f"must be one of {', '.join(MASKING_NAMES)}, got {self.name!r}")
        _check(self.num_targets >= 1, "masking.num_targets", "must be >= 1")
        _check(self.num_targets == 1 or self.name not in ("rasterized", "block", "random"), "masking.num_targets",
               f"masking={self.name} draws one target (the paper's ablation), got {self.num_targets}")
        _check_range(self.target_scale, "masking.target_scale", 1e-6, 1.0)
        _check(self.target_scale[1] < 1.0 or self.name not in ("block", "random"), "masking.target_scale",
               f"masking={self.name} needs a scale below 1 (the context is what the targets leave)")
        _check_range(self.context_scale, "masking.context_scale", 1e-6, 1.0)
        _check_range(self.target_aspect, "masking.target_aspect", 1e-6, 100.0)
        _check(self.min_keep >= 1, "masking.min_keep", "must be >= 1")


@dataclass
class MRRConfig:
    """World-model quality (IWM's mean reciprocal rank), logged as ``val/mrr`` at validation."""

    enabled: bool = False
    every_n_epochs: int = 1
    num_images: int = 16  # first images of the validation split
    bank_size: int = 256  # target augmentations per image

    def __post_init__(self) -> None:
        _check(self.every_n_epochs >= 1, "method.mrr.every_n_epochs", "must be >= 1")
        _check(self.num_images >= 1, "method.mrr.num_images", "must be >= 1")
        _check(self.bank_size >= 2, "method.mrr.bank_size", "must be >= 2")


@dataclass
class IJEPAConfig(MethodConfig):
    """I-JEPA: predict EMA-target features of masked blocks from a context block."""

    name: str = "ijepa"
    pred_depth: int = 12
    pred_dim: Optional[int] = 384  # None: half the encoder width (384 at ViT-B, 512 at ViT-L)
    pred_heads: Optional[int] = None  # None: the encoder's head count
    ema: List[float] = field(default_factory=lambda: [0.996, 1.0])
    loss: str = "smooth_l1"
    crop_scale: List[float] = field(default_factory=lambda: [0.3, 1.0])
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        lr=1e-3, final_lr_ratio=1e-3, weight_decay=0.04, final_weight_decay=0.4, warmup_epochs=40,
        warmup_start_ratio=0.2))
    mrr: MRRConfig = field(default_factory=MRRConfig)

    def __post_init__(self) -> None:
        _check(self.pred_depth >= 1, "method.pred_depth", f"must be >= 1, got {self.pred_depth}")
        _check(self.pred_dim is None or self.pred_dim >= 1, "method.pred_dim", f"must be >= 1, got {self.pred_dim}")
        _check(len(self.ema) == 2 and 0 <= self.ema[0] <= self.ema[1] <= 1, "method.ema",
               f"expected [start, end] with 0 <= start <= end <= 1, got {list(self.ema)}")
        _check(self.loss in ("smooth_l1", "mse"), "method.loss", f"must be 'smooth_l1' or 'mse', got {self.loss!r}")
        _check_range(self.crop_scale, "method.crop_scale", 1e-6, 1.0)


@dataclass
class IWMViewsConfig:
    """IWM's photometric views: jitter on both, destructive augmentations on the source only."""

    flip_p: float = 0.5
    jitter: List[float] = field(default_factory=lambda: [0.4, 0.4, 0.2, 0.1])
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.2
    solarize_p: float = 0.1
    photometric: str = "loader"  # where both views' photometric ops run: loader workers, or the device

    def __post_init__(self) -> None:
        _check(self.photometric in ("loader", "device"), "method.views.photometric",
               f"must be 'loader' or 'device', got {self.photometric!r}")
        _check(len(self.jitter) == 4 and all(0 <= j for j in self.jitter) and self.jitter[3] <= 0.5,
               "method.views.jitter", f"expected [brightness, contrast, saturation, hue >= 0, hue <= 0.5], "
               f"got {list(self.jitter)}")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            v = getattr(self, name)
            _check(0.0 <= v <= 1.0, f"method.views.{name}", f"probability must be in [0, 1], got {v}")


@dataclass
class IWMConfig(IJEPAConfig):
    """IWM: an action-conditioned predictor (world model) on I-JEPA's masks, EMA and schedules."""

    name: str = "iwm"
    pred_depth: int = 18  # IWM^Equi_{18,384}; the invariant preset (method=iwm_inv) uses 12
    pred_dim: Optional[int] = None
    loss: str = "mse"
    conditioning: str = "feature"
    views: IWMViewsConfig = field(default_factory=IWMViewsConfig)
    mrr: MRRConfig = field(default_factory=lambda: MRRConfig(enabled=True))

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.conditioning in ("feature", "sequence", "none"), "method.conditioning",
               f"must be one of feature, sequence, none; got {self.conditioning!r}")


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

    def __post_init__(self) -> None:
        _check(self.knn_queue >= 1, "monitors.knn_queue", f"must be >= 1, got {self.knn_queue}")
        _check(self.knn_k >= 1, "monitors.knn_k", f"must be >= 1, got {self.knn_k}")
        _check(self.knn_temperature > 0, "monitors.knn_temperature", f"must be > 0, got {self.knn_temperature}")
        _check(self.max_images >= 2, "monitors.max_images", f"must be >= 2, got {self.max_images}")


@dataclass
class TrainConfig:
    method: Any = None
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
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
    nonfinite_loss: str = "stop"  # stop: end the run with a message; skip: skip the optimiser step
    progress_every_n_steps: int = 1  # progress-bar refresh (each refresh reads the logged values: a host sync)

    def __post_init__(self) -> None:
        _check(self.progress_every_n_steps >= 1, "progress_every_n_steps", f"must be >= 1, got {self.progress_every_n_steps}")
        _check(self.nonfinite_loss in ("stop", "skip"), "nonfinite_loss",
               f"must be 'stop' or 'skip', got {self.nonfinite_loss!r}")


METHOD_SCHEMAS: Dict[str, type] = {"lejepa": LeJEPAConfig, "ijepa": IJEPAConfig, "iwm": IWMConfig}
MASKINGS_OF_METHOD: Dict[str, Tuple[str, ...]] = {"lejepa": ("none",), "ijepa": PATCH_MASKINGS, "iwm": PATCH_MASKINGS}


def _trainer_keys() -> set:
    from lightning.pytorch import Trainer

    return set(inspect.signature(Trainer.__init__).parameters) - {"self", "logger", "callbacks", "default_root_dir"}


def validate(cfg: DictConfig) -> TrainConfig:
    """Check a composed config against the schemas; return typed dataclasses.

    Raises:
        ConfigError: naming the offending key (``section.key: problem``).
    """
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    method = raw.get("method") or {}
    name = method.get("name") if isinstance(method, dict) else None
    if name not in METHOD_SCHEMAS:
        raise ConfigError(f"method.name: unknown method {name!r}; allowed: {', '.join(sorted(METHOD_SCHEMAS))}")
    try:
        schema = OmegaConf.structured(TrainConfig)
        schema.method = OmegaConf.structured(METHOD_SCHEMAS[name])
        merged = OmegaConf.merge(schema, raw)
        out = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        msg = getattr(e, "msg", None) or str(e).splitlines()[0]
        raise ConfigError(f"{key}: {msg}") from None
    unknown = set(out.trainer) - _trainer_keys()
    if unknown:
        raise ConfigError(
            f"trainer.{sorted(unknown)[0]}: not a lightning.Trainer argument this entry point takes "
            f"(run dirs come from Hydra; see https://lightning.ai/docs/pytorch/stable/common/trainer.html)"
        )
    assert isinstance(out, TrainConfig)
    _check_combination(out)
    from jepa_zoo.models.backbones import check_model_name

    try:
        check_model_name(out.backbone.name)
    except ValueError as e:
        raise ConfigError(f"backbone.name: {e}") from None
    return out


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
    allowed = MASKINGS_OF_METHOD[c.method.name]
    _check(c.masking.name in allowed, "masking",
           f"method={c.method.name} uses masking={'|'.join(allowed)}, got {c.masking.name}")
    if c.masking.name in PATCH_MASKINGS:
        _check(c.backbone.kind == "vit", "backbone", f"method={c.method.name} needs a ViT backbone (vit_t ... vit_h)")
        _check(c.backbone.img_size == c.data.img_size, "backbone.img_size",
               f"must equal data.img_size ({c.data.img_size}) for patch masks, got {c.backbone.img_size}")
        grid = c.backbone.img_size // c.backbone.patch_size
        n = grid * grid
        _check(c.masking.name != "multiblock" or n >= 2 * c.masking.min_keep, "backbone.patch_size",
               f"a {grid}x{grid} patch grid ({n} patches) is too small for multi-block masks with "
               f"masking.min_keep={c.masking.min_keep}; use a smaller patch or a larger image")
        _check(grid >= 2, "backbone.patch_size", f"a {grid}x{grid} patch grid is too small to mask")
