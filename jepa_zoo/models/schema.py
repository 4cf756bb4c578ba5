"""The ``backbone`` section's schema (dependency-free: importing it loads neither torch nor timm)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

from jepa_zoo.errors import ConfigError, check


@dataclass
class BackboneConfig:
    """Encoder.  ``kind=vit``: jepa_zoo's maskable ViT built from timm blocks;
    ``kind=timm``: any timm model name, pooled features (``cifar_stem`` swaps a
    ResNet stem for a 3x3 stride-1 conv without max-pool; ``channels_last`` keeps a CNN's weights
    and activations in NHWC, which oneDNN's CPU convolutions and cuDNN's tensor cores run faster)."""

    kind: str = "vit"
    name: str = "vit_tiny_patch16_224"
    img_size: int = 224
    patch_size: int = 16
    cifar_stem: bool = False
    channels_last: bool = False
    drop_path_rate: float = 0.0
    kwargs: Dict[str, Any] = field(default_factory=dict)
    # kind=vit: the channel order of the fixed 2-D sin-cos position embeddings (jepa_zoo.models.posembed):
    # "ijepa" (the official I-JEPA code and its released weights) or "timm" (checkpoints written before
    # the setting existed, which record none, load with it)
    sincos_order: str = "ijepa"
    # kind=vit, video (jepa_zoo.models.video): num_frames > 1 makes a video ViT whose Conv3d cuts clips
    # into tubelet_size-frame tubelets; pos: "sincos" (V-JEPA, fixed 3-D sin-cos) or "rope" (V-JEPA 2);
    # rope_layout: "vjepa2" (the official angles, which its weights need) or "interleaved" (true rotations)
    num_frames: int = 1
    tubelet_size: int = 2
    pos: str = "sincos"
    rope_layout: str = "vjepa2"

    @property
    def video(self) -> bool:
        return self.kind == "vit" and self.num_frames > 1

    def __post_init__(self) -> None:
        check(self.kind in ("vit", "timm"), "backbone.kind", f"must be 'vit' or 'timm', got {self.kind!r}")
        check(self.img_size > 0, "backbone.img_size", f"must be > 0, got {self.img_size}")
        check(self.patch_size > 0, "backbone.patch_size", f"must be > 0, got {self.patch_size}")
        if self.kind == "vit":
            check(
                self.img_size % self.patch_size == 0,
                "backbone.patch_size",
                f"patch size {self.patch_size} does not divide image size {self.img_size}",
            )
        check(not self.channels_last or self.kind == "timm", "backbone.channels_last",
              "applies to kind=timm backbones (CNNs); a ViT's tokens have no channel layout")
        check(0.0 <= self.drop_path_rate < 1.0, "backbone.drop_path_rate", "must be in [0, 1)")
        check(self.sincos_order in ("ijepa", "timm"), "backbone.sincos_order",
              f"must be 'ijepa' or 'timm', got {self.sincos_order!r}")
        check(self.num_frames >= 1, "backbone.num_frames", f"must be >= 1, got {self.num_frames}")
        check(self.tubelet_size >= 1, "backbone.tubelet_size", f"must be >= 1, got {self.tubelet_size}")
        if self.video:
            check(self.num_frames % self.tubelet_size == 0, "backbone.num_frames",
                  f"{self.num_frames} frames are not a whole number of {self.tubelet_size}-frame tubelets")
        check(self.pos in ("sincos", "rope"), "backbone.pos", f"must be 'sincos' or 'rope', got {self.pos!r}")
        check(self.pos == "sincos" or self.video, "backbone.pos",
              f"rope is for a video ViT (backbone=vit_t ... vit_h with backbone.num_frames > 1: a video data group "
              f"sets it), got backbone {self.name} with {self.num_frames} frame(s)")
        check(self.rope_layout in ("vjepa2", "interleaved"), "backbone.rope_layout",
              f"must be 'vjepa2' or 'interleaved', got {self.rope_layout!r}")
        try:
            check_model_name(self.name)
        except ValueError as e:
            raise ConfigError(f"backbone.name: {e}") from None


def check_model_name(name: str) -> None:
    """Raise ValueError naming close matches when ``name`` is not in timm's registry."""
    import timm  # when a config is checked, not when this module is imported

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:10]
        raise ValueError(f"unknown timm model {name!r}; similar: {', '.join(close) or 'none'}")
