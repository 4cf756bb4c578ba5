"""Batch collator that adds patch masks: ``(images, context_idx, target_idx, labels)``.

``images`` is whatever the transform returned, collated: one tensor (I-JEPA)
or a list such as IWM's ``[source, target, action]``.  ``masking.name`` picks
the strategy: ``multiblock`` (the paper's, :mod:`jepa_zoo.masks.multiblock`)
or one of its ablations ``rasterized``, ``block``, ``random``
(:mod:`jepa_zoo.masks.strategies`).

Masks are drawn in the dataloader workers, off the training step, from
torch's default generator, which the training loader seeds per global batch
(:mod:`jepa_zoo.data.sampling`).  With ``shard=(rank, replicas)`` the
collator draws the masks of the whole global batch (``replicas × B`` rows:
the same block sizes and context length on every rank, as one process with
the global batch would draw) and keeps rows ``rank, rank + replicas, ...``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Sequence, Tuple

from torch import Tensor
from torch.utils.data import default_collate

from jepa_zoo.masks.multiblock import sample_masks
from jepa_zoo.masks.strategies import block_masks, random_masks, rasterized_masks

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


STRATEGIES = ("multiblock", "rasterized", "block", "random")


def draw_masks(m: MaskingConfig, batch_size: int, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """``context [B, K_c]`` and ``targets [B, T, K_t]`` from the strategy ``masking.name``."""
    if m.name == "multiblock":
        return sample_masks(batch_size, grid, num_targets=m.num_targets, target_scale=m.target_scale,
                            target_aspect=m.target_aspect, context_scale=m.context_scale, min_keep=m.min_keep)
    if m.name == "rasterized":
        return rasterized_masks(batch_size, grid)
    if m.name == "block":
        return block_masks(batch_size, grid, num_targets=m.num_targets, target_scale=m.target_scale,
                           target_aspect=m.target_aspect)
    if m.name == "random":
        return random_masks(batch_size, grid, target_scale=m.target_scale)
    raise ValueError(f"masking.name {m.name!r} draws no patch masks; expected one of {STRATEGIES}")


class MaskCollator:
    global_batch = True  # SeededCollate passes shard=(rank, replicas)

    def __init__(self, grid: Tuple[int, int], masking: MaskingConfig):
        self.grid = tuple(grid)
        self.masking = masking
        if masking.name not in STRATEGIES:  # fail at construction, not in a loader worker
            raise ValueError(f"masking.name {masking.name!r} draws no patch masks; expected one of {STRATEGIES}")

    def __call__(self, samples: Sequence[Any], shard: Tuple[int, int] = (0, 1)) -> List[Any]:
        images, labels = default_collate(samples)
        rank, replicas = shard
        ctx, tgt = draw_masks(self.masking, len(samples) * replicas, self.grid)
        return [images, ctx[rank::replicas], tgt[rank::replicas], labels]
