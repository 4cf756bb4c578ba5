"""Hugging Face ``transformers``' V-JEPA 2 (``VJEPA2Model``), both ways.

``VJEPA2Model`` holds one encoder (the released conversions carry the official ``target_encoder``,
the one the official evaluations use) and the predictor; its RoPE is the official one (the
``"vjepa2"`` layout of :mod:`jepa_zoo.models.rope`).  Keys against jepa_zoo's
(:class:`~jepa_zoo.models.video.VideoViTEncoder`'s ``model`` and
:class:`~jepa_zoo.models.video_predictor.VideoPredictor`), timm's fused ``qkv`` split in three::

    encoder.embeddings.patch_embeddings.proj   <-> patch_embed.proj
    encoder.layer.i.attention.{query,key,value} <-> blocks.i.attn.qkv      (stacked q, k, v)
    encoder.layer.i.attention.proj             <-> blocks.i.attn.proj
    encoder.layer.i.{norm1,norm2,mlp.fc1,mlp.fc2} <-> blocks.i.{same}
    encoder.layernorm                          <-> norm
    predictor.embeddings.predictor_embeddings  <-> embed
    predictor.embeddings.mask_tokens [M,1,1,D] <-> mask_tokens.j [1,1,D]
    predictor.layer.i.*  <-> blocks.i.* (as the encoder's)     predictor.layernorm <-> norm
    predictor.proj       <-> proj

Files may carry a ``vjepa2.`` prefix (``VJEPA2ForVideoClassification``; its pooler and classifier are
not read).  Note: ``VJEPA2Model``'s predictor uses ``mask_tokens[1 % M]``, the official V-JEPA 2
training ``mask_tokens[0]``; the tokens are copied as they are, in order.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping

import torch
from torch import Tensor

from jepa_zoo.weights.official_ijepa import Imported
from jepa_zoo.weights.official_vjepa import VIT_SIZES

NAME = "hf-vjepa2"
PATCH = "encoder.embeddings.patch_embeddings.proj.weight"
PREFIX = "vjepa2."
SAME = ("norm1", "norm2", "mlp.fc1", "mlp.fc2", "attention.proj")


def detect(state: Any) -> bool:
    """Whether ``state`` is a (flat) ``VJEPA2Model`` / ``VJEPA2ForVideoClassification`` state dict."""
    return isinstance(state, Mapping) and (PATCH in state or PREFIX + PATCH in state)


def _blocks_to_timm(sd: Mapping[str, Tensor], head: str) -> Dict[str, Tensor]:
    """``<head>.layer.i.*`` -> timm's ``blocks.i.*`` (q, k, v stacked into ``qkv``)."""
    out: Dict[str, Tensor] = {}
    for k, v in sd.items():
        m = re.match(rf"{head}\.layer\.(\d+)\.(.+)\.(weight|bias)$", k)
        if not m:
            continue
        i, name, kind = m.groups()
        if name in ("attention.query", "attention.key", "attention.value"):
            if name == "attention.query":
                parts = [sd[f"{head}.layer.{i}.attention.{p}.{kind}"] for p in ("query", "key", "value")]
                out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)
        elif name in SAME:
            out[f"blocks.{i}.{name.replace('attention.', 'attn.')}.{kind}"] = v
        else:
            raise ValueError(f"{k}: no jepa_zoo counterpart")
    return out


def read(state: Mapping[str, Any]) -> Imported:
    """A ``VJEPA2Model`` state dict -> :class:`Imported` (format ``hf-vjepa2``, RoPE)."""
    sd = {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in state.items()}
    enc = _blocks_to_timm(sd, "encoder")
    enc["patch_embed.proj.weight"] = sd[PATCH]
    enc["patch_embed.proj.bias"] = sd["encoder.embeddings.patch_embeddings.proj.bias"]
    enc["norm.weight"], enc["norm.bias"] = sd["encoder.layernorm.weight"], sd["encoder.layernorm.bias"]
    w = sd[PATCH]
    dim = int(w.shape[0])
    if dim not in VIT_SIZES:
        raise ValueError(f"encoder width {dim} is not a ViT size this importer knows ({sorted(VIT_SIZES)})")
    family, heads = VIT_SIZES[dim]
    depth = 1 + max(int(k.split(".")[1]) for k in enc if k.startswith("blocks."))
    arch = {"embed_dim": dim, "depth": depth, "num_heads": heads, "patch_size": int(w.shape[-1]),
            "tubelet_size": int(w.shape[2]), "mlp_ratio": enc["blocks.0.mlp.fc1.weight"].shape[0] / dim,
            "timm_name": f"{family}_patch{int(w.shape[-1])}_224", "num_frames": None, "img_size": None,
            "pos": "rope"}
    pred: Dict[str, Tensor] = {}
    if "predictor.proj.weight" in sd:
        pred = _blocks_to_timm(sd, "predictor")
        emb = "predictor.embeddings.predictor_embeddings."
        pred["embed.weight"], pred["embed.bias"] = sd[emb + "weight"], sd[emb + "bias"]
        for j, tok in enumerate(sd["predictor.embeddings.mask_tokens"]):
            pred[f"mask_tokens.{j}"] = tok.clone()
        for name in ("weight", "bias"):
            pred[f"norm.{name}"] = sd[f"predictor.layernorm.{name}"]
            pred[f"proj.{name}"] = sd[f"predictor.proj.{name}"]
        arch["pred_dim"] = int(pred["embed.weight"].shape[0])
        arch["pred_depth"] = 1 + max(int(k.split(".")[1]) for k in pred if k.startswith("blocks."))
        arch["num_mask_tokens"] = int(sd["predictor.embeddings.mask_tokens"].shape[0])
        arch["pred_heads"] = 12 if arch["pred_dim"] == 384 else heads  # the released predictors: 384 wide, 12 heads
    return Imported(NAME, arch, enc, {}, pred)


def _timm_to_blocks(sd: Mapping[str, Tensor], head: str) -> Dict[str, Tensor]:
    out: Dict[str, Tensor] = {}
    for k, v in sd.items():
        m = re.match(r"blocks\.(\d+)\.(.+)\.(weight|bias)$", k)
        if not m:
            continue
        i, name, kind = m.groups()
        if name == "attn.qkv":
            for part, chunk in zip(("query", "key", "value"), v.chunk(3, dim=0)):
                out[f"{head}.layer.{i}.attention.{part}.{kind}"] = chunk.contiguous()
        else:
            out[f"{head}.layer.{i}.{name.replace('attn.', 'attention.')}.{kind}"] = v
    return out


def write(encoder: Mapping[str, Tensor], predictor: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """A ``VJEPA2Model`` state dict from a video encoder's ``model`` state dict and a RoPE predictor's
    (the reverse of :func:`read`)."""
    out = _timm_to_blocks(encoder, "encoder")
    for kind in ("weight", "bias"):
        out[f"encoder.embeddings.patch_embeddings.proj.{kind}"] = encoder[f"patch_embed.proj.{kind}"]
        out[f"encoder.layernorm.{kind}"] = encoder[f"norm.{kind}"]
    out.update(_timm_to_blocks(predictor, "predictor"))
    tokens = sorted((k for k in predictor if k.startswith("mask_tokens.")), key=lambda k: int(k.split(".")[1]))
    out["predictor.embeddings.mask_tokens"] = torch.stack([predictor[k] for k in tokens])
    for kind in ("weight", "bias"):
        out[f"predictor.embeddings.predictor_embeddings.{kind}"] = predictor[f"embed.{kind}"]
        out[f"predictor.layernorm.{kind}"] = predictor[f"norm.{kind}"]
        out[f"predictor.proj.{kind}"] = predictor[f"proj.{kind}"]
    return out


def config(arch: Mapping[str, Any], num_frames: int, img_size: int, pred_heads: int) -> Dict[str, Any]:
    """``VJEPA2Config`` keyword arguments of such a model."""
    return dict(patch_size=arch["patch_size"], crop_size=img_size, frames_per_clip=num_frames,
                tubelet_size=arch["tubelet_size"], hidden_size=arch["embed_dim"], num_hidden_layers=arch["depth"],
                num_attention_heads=arch["num_heads"], mlp_ratio=arch["mlp_ratio"], layer_norm_eps=1e-6,
                qkv_bias=True, hidden_act="gelu", pred_hidden_size=arch["pred_dim"],
                pred_num_hidden_layers=arch["pred_depth"], pred_num_attention_heads=pred_heads,
                pred_num_mask_tokens=arch["num_mask_tokens"], pred_mlp_ratio=4.0)
