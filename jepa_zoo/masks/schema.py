"""The maskings: one table of names, each with its own schema, grid and drawing function
(dependency-free: no torch; the drawing functions are named by path and imported when used).

A masking is a pure function ``draw(masking, batch_size, grid) -> (context [B, K_c], targets)`` in
``masks/`` plus one row of :data:`MASKINGS` and ``conf/masking/<name>.yaml``, which extends its schema
(``defaults: [/schema/masking/<name>@_here_, _self_]``, registered by
:func:`jepa_zoo.registry.register_schemas`).  The collators, the config checks and the methods'
accepted maskings read the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from jepa_zoo.errors import ConfigError, check, check_range


@dataclass
class MaskingConfig:
    """The base of every masking's schema, and the schema of ``none``: whole images (LeJEPA)."""

    name: str = "none"

    def __post_init__(self) -> None:
        check(self.name in MASKINGS, "masking.name", f"must be one of {', '.join(MASKINGS)}, got {self.name!r}")
        schema = MASKINGS[self.name].schema
        if not isinstance(self, schema):
            raise ConfigError(f"masking.name: {self.name} has its own schema: masking_config({self.name!r}, ...) "
                              f"or {schema.__name__}(...)")


@dataclass
class MultiBlockMasking(MaskingConfig):
    """I-JEPA's multi-block masks (:mod:`jepa_zoo.masks.multiblock`): ``num_targets`` target blocks and one
    context block minus the targets."""

    name: str = "multiblock"
    num_targets: int = 4
    target_scale: List[float] = field(default_factory=lambda: [0.15, 0.2])
    target_aspect: List[float] = field(default_factory=lambda: [0.75, 1.5])
    context_scale: List[float] = field(default_factory=lambda: [0.85, 1.0])
    min_keep: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.num_targets >= 1, "masking.num_targets", "must be >= 1")
        check_range(self.target_scale, "masking.target_scale", 1e-6, 1.0)
        check_range(self.context_scale, "masking.context_scale", 1e-6, 1.0)
        check_range(self.target_aspect, "masking.target_aspect", 1e-6, 100.0)
        check(self.min_keep >= 1, "masking.min_keep", "must be >= 1")


@dataclass
class RasterizedMasking(MaskingConfig):
    """The paper's ablation: one quadrant is the context, the other three one target."""

    name: str = "rasterized"


@dataclass
class RandomMasking(MaskingConfig):
    """The paper's ablation: one target of uniformly drawn patches, the context the others."""

    name: str = "random"
    target_scale: List[float] = field(default_factory=lambda: [0.6, 0.6])

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self.target_scale, "masking.target_scale", 1e-6, 1.0)
        check(self.target_scale[1] < 1.0, "masking.target_scale",
              f"masking={self.name} needs a scale below 1 (the context is what the targets leave)")


@dataclass
class BlockMasking(RandomMasking):
    """The paper's ablation: one target block per image (scale and aspect), the context its complement."""

    name: str = "block"
    target_aspect: List[float] = field(default_factory=lambda: [0.75, 1.5])

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self.target_aspect, "masking.target_aspect", 1e-6, 100.0)


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
class MultiBlock3DMasking(MaskingConfig):
    """V-JEPA's blocks through time: one context/target pair per entry of ``mask_types`` (V-JEPA: 8
    short-range blocks of 15 %, 2 long-range of 70 %)."""

    name: str = "multiblock3d"
    mask_types: List[MaskType] = field(default_factory=_vjepa_types)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.mask_types) >= 1, "masking.mask_types", "needs at least one mask type")
        for i, t in enumerate(self.mask_types):
            key = f"masking.mask_types[{i}]"
            check(t.num_blocks >= 1, f"{key}.num_blocks", f"must be >= 1, got {t.num_blocks}")
            check_range(t.spatial_scale, f"{key}.spatial_scale", 1e-6, 1.0)
            check_range(t.temporal_scale, f"{key}.temporal_scale", 1e-6, 1.0)
            check_range(t.aspect, f"{key}.aspect", 1e-6, 100.0)


@dataclass(frozen=True)
class MaskingSpec:
    """One masking: its schema, the token grid it masks (``image``: an image's patch grid, ``clip``: a
    clip's (t, h, w) token grid, None: no masks) and its drawing function (``"module:function"``)."""

    schema: type
    grid: Optional[str]
    draw: Optional[str]


MASKINGS: Dict[str, MaskingSpec] = {
    "none": MaskingSpec(MaskingConfig, None, None),
    "multiblock": MaskingSpec(MultiBlockMasking, "image", "jepa_zoo.masks.multiblock:draw"),
    "rasterized": MaskingSpec(RasterizedMasking, "image", "jepa_zoo.masks.strategies:draw_rasterized"),
    "block": MaskingSpec(BlockMasking, "image", "jepa_zoo.masks.strategies:draw_block"),
    "random": MaskingSpec(RandomMasking, "image", "jepa_zoo.masks.strategies:draw_random"),
    "multiblock3d": MaskingSpec(MultiBlock3DMasking, "clip", "jepa_zoo.masks.multiblock3d:draw"),
}
MASKING_NAMES = tuple(MASKINGS)
PATCH_MASKINGS = tuple(n for n, s in MASKINGS.items() if s.grid == "image")  # on an image's patch grid
VIDEO_MASKINGS = tuple(n for n, s in MASKINGS.items() if s.grid == "clip")  # on a clip's token grid


def masking_config(name: str, **values) -> MaskingConfig:
    """The schema of masking ``name`` with ``values`` (a ConfigError naming ``masking.name`` if unknown)."""
    check(name in MASKINGS, "masking.name", f"must be one of {', '.join(MASKINGS)}, got {name!r}")
    return MASKINGS[name].schema(name=name, **values)
