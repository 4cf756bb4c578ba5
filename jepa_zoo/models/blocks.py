"""The transformer block types: one table that ``compile=true`` and FSDP read.

A block is the unit of the FLOPs and of the weights: :func:`jepa_zoo.models.compile.compile_blocks_`
compiles each one, and :func:`jepa_zoo.parallel.shard_` makes each one an FSDP unit.  Built in:
timm's ``Block`` (the sin-cos ViTs and predictors, timm ViTs by name) and ``EvaBlock`` (the RoPE
video encoder and predictor, V-JEPA 2).  A model built from another block class registers it
once, next to the class::

    from jepa_zoo.models.blocks import register_block

    @register_block
    class MyBlock(nn.Module): ...

A block type left out of this table is neither compiled nor sharded on its own (FSDP then gathers
its whole parent at once), so a new kind of block belongs here.
"""

from __future__ import annotations

from typing import List, Tuple, Type

from torch import nn

_REGISTERED: List[Type[nn.Module]] = []


def register_block(cls: Type[nn.Module]) -> Type[nn.Module]:
    """Add ``cls`` to the block types (usable as a class decorator); returns ``cls``."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_block: {cls!r} is not an nn.Module class")
    if cls not in _REGISTERED:
        _REGISTERED.append(cls)
    return cls


def block_types() -> Tuple[Type[nn.Module], ...]:
    """Every block type: timm's ``Block`` and ``EvaBlock``, then the registered ones."""
    from timm.models.eva import EvaBlock
    from timm.models.vision_transformer import Block

    return (Block, EvaBlock, *_REGISTERED)


def block_names(model: nn.Module) -> List[str]:
    """The names of ``model``'s outermost blocks (a block inside a block is part of its unit)."""
    kinds = block_types()
    names: List[str] = []
    for name, m in model.named_modules():
        if isinstance(m, kinds) and not any(name.startswith(n + ".") for n in names):
            names.append(name)
    return names
