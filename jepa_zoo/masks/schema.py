"""The ``masking`` section's schema and the masking names (dependency-free: no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from jepa_zoo.errors import check, check_range


MASKING_NAMES = ("none", "multiblock", "rasterized", "block", "random", "multiblock3d")
PATCH_MASKINGS = MASKING_NAMES[1:5]  # on an image's patch grid
VIDEO_MASKINGS = ("multiblock3d",)  # on a clip's token grid


@dataclass
class MaskType:
    """One V-JEPA mask type (:mod:`jepa_zoo.masks.multiblock3d`): ``num_blocks`` blocks of
    ``spatial_scale`` of a frame each, over ``temporal_scale`` of the clip, aspect in ``aspect``."""

    num_blocks: int = 8
    spatial_scale: List[float] = field(default_factory=lambda: [0.15, 0.15])
    temporal_scale: List[float] = field(default_factory=lambda: [1.0, 1.0])
    aspect: List[float] = field(default_factory=lambda: [0.75, 1.5])


def _vjepa_types() -> List[MaskType]:
    return [MaskType(8, [0.15, 0.15]), MaskType(2, [0.7, 0.7])]


@dataclass
class MaskingConfig:
    """Patch masks.  ``none``: whole images (LeJEPA); ``multiblock``: I-JEPA context + target blocks;
    ``multiblock3d``: V-JEPA's blocks through time, one context/target pair per entry of ``mask_types``;
    ``rasterized`` / ``block`` / ``random``: the paper's ablations, context = complement of the targets
    (one target; ``target_scale`` and ``target_aspect`` used by ``block``, ``target_scale`` by ``random``)."""

    name: str = "none"
    num_targets: int = 4
    target_scale: List[float] = field(default_factory=lambda: [0.15, 0.2])
    target_aspect: List[float] = field(default_factory=lambda: [0.75, 1.5])
    context_scale: List[float] = field(default_factory=lambda: [0.85, 1.0])
    min_keep: int = 10
    # multiblock3d: the mask types drawn for every clip (V-JEPA: 8 short-range blocks of 15 %, 2 long-range of 70 %)
    mask_types: List[MaskType] = field(default_factory=_vjepa_types)

    def __post_init__(self) -> None:
        check(self.name in MASKING_NAMES, "masking.name", f"must be one of {', '.join(MASKING_NAMES)}, got {self.name!r}")
        check(self.num_targets >= 1, "masking.num_targets", "must be >= 1")
        check(self.num_targets == 1 or self.name not in ("rasterized", "block", "random"), "masking.num_targets",
               f"masking={self.name} draws one target (the paper's ablation), got {self.num_targets}")
        check_range(self.target_scale, "masking.target_scale", 1e-6, 1.0)
        check(self.target_scale[1] < 1.0 or self.name not in ("block", "random"), "masking.target_scale",
               f"masking={self.name} needs a scale below 1 (the context is what the targets leave)")
        check_range(self.context_scale, "masking.context_scale", 1e-6, 1.0)
        check_range(self.target_aspect, "masking.target_aspect", 1e-6, 100.0)
        check(self.min_keep >= 1, "masking.min_keep", "must be >= 1")
        check(len(self.mask_types) >= 1, "masking.mask_types", "needs at least one mask type")
        for i, t in enumerate(self.mask_types):
            key = f"masking.mask_types[{i}]"
            check(t.num_blocks >= 1, f"{key}.num_blocks", f"must be >= 1, got {t.num_blocks}")
            check_range(t.spatial_scale, f"{key}.spatial_scale", 1e-6, 1.0)
            check_range(t.temporal_scale, f"{key}.temporal_scale", 1e-6, 1.0)
            check_range(t.aspect, f"{key}.aspect", 1e-6, 100.0)
