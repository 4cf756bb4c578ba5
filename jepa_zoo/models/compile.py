"""``torch.compile`` for training and the benchmark harness: ``compile=true`` / ``bench.compile=true``.

What is compiled, in place (``nn.Module.compile``), is where the FLOPs are: every transformer
block (every type in :mod:`jepa_zoo.models.blocks`: the encoders' and the predictor's, also
inside ``backbone=timm`` ViTs, timm's ``EvaBlock`` of the RoPE video ViT) and the whole network of a CNN encoder.  Patch embedding, masking gathers, heads and losses stay eager.  Blocks are compiled
one by one rather than the whole step, so that

* the graphs are small and shared: all blocks of one width have the same code, and only the
  token count varies (I-JEPA's context and target sizes change per batch: after the second
  size, dynamo makes that dimension dynamic instead of recompiling per size);
* FSDP's per-block all-gathers stay outside the compiled code: compiling comes before
  sharding (:meth:`jepa_zoo.methods.base.JEPAModule.configure_model`), the FSDP2 recipe.
"""

from __future__ import annotations

from typing import List

from torch import nn


def compile_blocks_(model: nn.Module) -> List[str]:
    """Compile ``model``'s transformer blocks and CNN encoders in place; return their names."""
    from jepa_zoo.models.backbones import TimmEncoder
    from jepa_zoo.models.blocks import block_names, block_types

    done: List[str] = block_names(model)
    for name in done:
        model.get_submodule(name).compile()
    kinds = block_types()
    for name, m in model.named_modules():
        if isinstance(m, TimmEncoder) and not any(isinstance(b, kinds) for b in m.modules()):
            m.model.compile()  # a CNN: the whole network (a timm ViT by name gets its blocks compiled)
            done.append(f"{name}.model")
    return done
