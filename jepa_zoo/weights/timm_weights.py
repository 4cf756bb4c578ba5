"""A timm model's state dict (``.pth`` / ``.pt`` / ``.safetensors``, any timm name) as a backbone.

Recognised as a flat mapping of tensor names to tensors (no nested dicts, no jepa_zoo
``hyper_parameters``); jepa_zoo's own ``export --format timm`` files are such state dicts.
:func:`load_into` puts it into a run's backbone, before training:

* ``backbone=timm`` (:class:`~jepa_zoo.models.backbones.TimmEncoder`): through the model
  family's own ``checkpoint_filter_fn`` where timm has one (a learned ``pos_embed`` is resampled
  to the run's grid as timm resamples it), the classifier dropped (the encoder has none);
* ``kind=vit`` (jepa_zoo's maskable ViT: fixed sin-cos, no class token): a state dict without
  a class token whose ``pos_embed``, if present, is the sin-cos jepa_zoo computes (an export of
  a jepa_zoo ViT); learned embeddings or a class token are refused with the setting to use
  instead (``backbone=timm backbone.name=<its model>``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from torch import Tensor, nn

from jepa_zoo.models.posembed import sincos_order_of
from jepa_zoo.weights.official_ijepa import Imported

NAME = "timm"


def detect(state: Any) -> bool:
    return (isinstance(state, Mapping) and bool(state) and "hyper_parameters" not in state
            and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()))


def read(state: Mapping[str, Tensor]) -> Imported:
    return Imported(NAME, {}, dict(state))


# what jepa_zoo.pretrained.load_timm's TimmEncoder passes itself (for the run's image size)
OWN_KWARGS = ("num_classes", "img_size", "dynamic_img_size")


def export_kwargs(path: Path) -> Optional[Tuple[str, Dict[str, Any]]]:
    """``(timm model name, create_model kwargs)`` that a jepa_zoo ``export --format timm`` file records in
    its safetensors metadata (:mod:`jepa_zoo.export`), less :data:`OWN_KWARGS`; None for other files."""
    from safetensors import safe_open

    with open(path, "rb") as f:
        if f.read(9)[8:9] != b"{":  # not safetensors (a .pth state dict records nothing)
            return None
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "timm_model" not in meta:
        return None
    kwargs = json.loads(meta.get("create_kwargs") or "{}")
    return meta["timm_model"], {k: v for k, v in kwargs.items() if k not in OWN_KWARGS}


def _classifier(model: nn.Module) -> List[str]:
    """The classifier's key prefixes of a timm model (``pretrained_cfg['classifier']``)."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    return [names] if isinstance(names, str) else list(names)


def load_into(backbone: Any, state: Mapping[str, Tensor], load: Callable[..., Any], key: str) -> None:
    """Load a timm state dict into ``backbone`` (a jepa_zoo encoder) with ``load(module, state, name,
    key)`` (``jepa_zoo.pretrained.load_part``: strict, one-line errors)."""
    from jepa_zoo.errors import ConfigError
    from jepa_zoo.models.backbones import ViTEncoder

    model = backbone.model
    sd: Dict[str, Tensor] = dict(state)
    if isinstance(backbone, ViTEncoder):
        if "cls_token" in sd:
            raise ConfigError(f"{key}: a ViT with a class token (and learned position embeddings): jepa_zoo's "
                              "maskable ViT has neither; train it with backbone=timm backbone.name=<its timm model>")
        pe = sd.pop("pos_embed", None)
        order = sincos_order_of(pe) if pe is not None else backbone.sincos_order
        if order is not None and order != backbone.sincos_order:
            raise ConfigError(f"{key}: these weights were trained with backbone.sincos_order={order}; add "
                              f"backbone.sincos_order={order}")
        if order is None:
            raise ConfigError(f"{key}: learned position embeddings (pos_embed is not the {backbone.sincos_order} "
                              "sin-cos of jepa_zoo's ViT); train it with backbone=timm backbone.name=<its timm model>")
    else:
        filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
        if filter_fn is not None:
            sd = filter_fn(sd, model)  # timm's own remapping, pos_embed resampled to this model's grid
    heads = _classifier(model)
    sd = {k: v for k, v in sd.items() if not any(k == h or k.startswith(h + ".") for h in heads)}
    load(model, sd, "encoder", key)
