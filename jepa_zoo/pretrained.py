"""jepa_zoo modules from foreign pretrained weights (:mod:`jepa_zoo.weights`).

:func:`build_from_weights` reads a checkpoint of a known format, builds the jepa_zoo method it
came from with the architecture read from its shapes (an official I-JEPA file: ``method=ijepa``
with its encoder, target encoder and predictor), and loads every part it holds, strictly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Tuple

from jepa_zoo.config import TrainConfig
from jepa_zoo.data.schema import DataConfig
from jepa_zoo.errors import ConfigError
from jepa_zoo.masks.schema import MaskingConfig
from jepa_zoo.models.schema import BackboneConfig
from jepa_zoo.weights import Imported, read_weights


def timm_name(arch: dict) -> str:
    """A timm ViT of the right family; ``ViTEncoder`` overrides its patch and image size anyway."""
    import timm

    if timm.is_model(arch["timm_name"]):
        return arch["timm_name"]
    family = arch["timm_name"].split("_patch")[0]
    names = timm.list_models(f"{family}_patch*")
    if not names:
        raise ConfigError(f"no timm model of the {family} family for a {arch['embed_dim']}-wide encoder")
    return names[0]


def backbone_config(arch: dict, img_size: Optional[int] = None) -> BackboneConfig:
    """The ``kind=vit`` backbone of ``arch`` (at ``img_size``: the weights' own by default), with the
    official sin-cos order."""
    kwargs = {"depth": arch["depth"], "embed_dim": arch["embed_dim"], "num_heads": arch["num_heads"]}
    if abs(arch["mlp_ratio"] - 4.0) > 1e-6:
        kwargs["mlp_ratio"] = arch["mlp_ratio"]
    return BackboneConfig(kind="vit", name=timm_name(arch), img_size=img_size or arch["img_size"],
                          patch_size=arch["patch_size"], kwargs=kwargs, sincos_order="ijepa")


def train_config(imported: Imported, data: Optional[DataConfig] = None) -> TrainConfig:
    """The ``TrainConfig`` of the method ``imported`` came from (I-JEPA), at ``data``'s image size."""
    from jepa_zoo.methods.ijepa import IJEPAConfig

    a = imported.arch
    data = data or DataConfig(name="fake", img_size=a["img_size"])
    method = IJEPAConfig(pred_depth=a.get("pred_depth", 1), pred_dim=a.get("pred_dim"), pred_heads=None)
    return TrainConfig(method=method, backbone=backbone_config(a, data.img_size), data=data,
                       masking=MaskingConfig(name="multiblock"))


def load_imported(model: Any, imported: Imported) -> None:
    """Load every part ``imported`` holds into an I-JEPA-family ``model``, strictly (a tensor of the
    wrong shape is a ConfigError naming it); a file without a target encoder gives the encoder's."""
    parts = [(model.backbone.model, imported.encoder, "encoder"),
             (model.target_encoder.model, imported.target_encoder or imported.encoder, "target_encoder")]
    if imported.predictor:
        parts.append((model.predictor, imported.predictor, "predictor"))
    for module, state, name in parts:
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
            raise ConfigError(f"{name}: the weights do not fit the model: {first}") from None


def build_from_weights(path: Path, key: str, data: Optional[DataConfig] = None) -> Tuple[Any, Imported]:
    """(the jepa_zoo module with the weights of ``path`` loaded, what was read)."""
    from jepa_zoo.methods.ijepa import IJEPA

    imported = read_weights(Path(path), key)
    model = IJEPA(train_config(imported, data))
    load_imported(model, imported)
    return model, imported
