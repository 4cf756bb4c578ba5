"""The ``masking`` section's schema and the masking names (dependency-free: no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from jepa_zoo.errors import check, check_range


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
