"""Hugging Face ``transformers``' I-JEPA model (``IJepaModel``): a jepa_zoo ViT encoder as its weights.

``IJepaModel`` is a ViT without class token whose ``last_hidden_state`` is the final-LayerNorm'd
patch tokens, as jepa_zoo's ``ViTEncoder.forward_tokens``.  The keys map one to one, except that
timm's fused ``qkv`` is split into ``q_proj``, ``k_proj``, ``v_proj``::

    patch_embed.proj      -> embeddings.patch_embeddings.projection
    pos_embed             -> embeddings.position_embeddings (the fixed sin-cos, stored)
    blocks.i.norm1 / norm2   -> layers.i.layernorm_before / layernorm_after
    blocks.i.attn.qkv     -> layers.i.attention.{q,k,v}_proj
    blocks.i.attn.proj    -> layers.i.attention.o_proj
    blocks.i.mlp.fc1/fc2  -> layers.i.mlp.fc1/fc2
    norm                  -> layernorm

The config: LayerNorm eps 1e-6, exact GELU, qkv bias, the image size and patch size trained at.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Tuple

from torch import Tensor

NAMES = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.o_proj",
         "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def hf_state(timm_state: Mapping[str, Tensor], pos_embed: Tensor) -> Dict[str, Tensor]:
    """A timm-keyed ViT state dict (no class token) and its ``pos_embed [1, N, D]`` -> ``IJepaModel``'s."""
    out: Dict[str, Tensor] = {"embeddings.position_embeddings": pos_embed}
    for k, v in timm_state.items():
        if k.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("norm."):
            out["layernorm." + k.rsplit(".", 1)[1]] = v
        elif m := re.match(r"blocks\.(\d+)\.(.+)\.(weight|bias)$", k):
            i, name, kind = m.groups()
            if name == "attn.qkv":
                for part, chunk in zip("qkv", v.chunk(3, dim=0)):
                    out[f"layers.{i}.attention.{part}_proj.{kind}"] = chunk.contiguous()
            elif name in NAMES:
                out[f"layers.{i}.{NAMES[name]}.{kind}"] = v
            else:
                raise ValueError(f"{k}: no IJepaModel counterpart")
        elif k != "pos_embed":
            raise ValueError(f"{k}: no IJepaModel counterpart")
    return out


def hf_config(embed_dim: int, depth: int, num_heads: int, mlp_dim: int, img_size: int, patch_size: int) -> Dict[str, Any]:
    """``IJepaConfig`` keyword arguments of such an encoder."""
    return dict(hidden_size=embed_dim, num_hidden_layers=depth, num_attention_heads=num_heads,
                intermediate_size=mlp_dim, image_size=img_size, patch_size=patch_size, num_channels=3,
                layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True)


def split(timm_state: Mapping[str, Tensor]) -> Tuple[int, int]:
    """(depth, MLP width) of a timm-keyed ViT state dict."""
    depth = 1 + max(int(m.group(1)) for k in timm_state if (m := re.match(r"blocks\.(\d+)\.", k)))
    return depth, int(timm_state["blocks.0.mlp.fc1.weight"].shape[0])
