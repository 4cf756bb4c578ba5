"""jepa_zoo modules from foreign pretrained weights (:mod:`jepa_zoo.weights`).

:func:`build_from_weights` reads a checkpoint of a known format, builds the jepa_zoo method it
came from with the architecture read from its shapes (an official I-JEPA file: ``method=ijepa``; an
official V-JEPA / V-JEPA 2 or Hugging Face V-JEPA 2 file: ``method=vjepa``; with its encoder, target
encoder and predictor), and loads every part it holds, strictly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from torch import Tensor

from jepa_zoo.config import TrainConfig
from jepa_zoo.data.schema import DataConfig
from jepa_zoo.errors import ConfigError
from jepa_zoo.masks.schema import masking_config
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


VIDEO_FORMATS = ("official-vjepa", "official-vjepa2", "hf-vjepa2")
METHOD_FORMATS = ("official-ijepa", *VIDEO_FORMATS)  # the formats that hold a whole method (encoders, predictor)


def video_train_config(imported: Imported, data: Optional[DataConfig] = None, own: Sequence[str] = ()) -> TrainConfig:
    """The V-JEPA ``TrainConfig`` of video weights: the file's clip length where it records it (sin-cos)
    and ``data`` gives images, or ``"num_frames"`` is in ``own`` (the fields the command leaves to the
    checkpoint, :func:`load_any`'s ``own_resolution``); else ``data``'s (RoPE files record no clip
    length; without ``data``: 16 frames, 256 px, V-JEPA 2's pretraining clips).  The image size is
    ``data``'s (:func:`load_any` has put the file's there unless the command set one)."""
    from jepa_zoo.methods.vjepa import VJEPAConfig

    a = imported.arch
    data = data or DataConfig(name="moving_shapes", img_size=a["img_size"] or 256, num_frames=a["num_frames"] or 16)
    frames = a["num_frames"] if a["num_frames"] and (not data.video or "num_frames" in own) else data.num_frames
    if data.video and data.num_frames != frames:
        data = replace(data, num_frames=frames)  # the clips the data gives are the file's
    backbone = replace(backbone_config(a, data.img_size), num_frames=frames, tubelet_size=a["tubelet_size"],
                       pos=a["pos"])
    method = VJEPAConfig(pred_depth=a.get("pred_depth", 1), pred_dim=a.get("pred_dim", 384),
                         pred_heads=a.get("pred_heads"), mask_token_per_type=imported.format == "official-vjepa",
                         num_mask_tokens=a.get("num_mask_tokens"))
    return TrainConfig(method=method, backbone=backbone, data=data, masking=masking_config("multiblock3d"))


def train_config(imported: Imported, data: Optional[DataConfig] = None, own: Sequence[str] = ()) -> TrainConfig:
    """The ``TrainConfig`` of the method ``imported`` came from (I-JEPA, or V-JEPA for video
    weights: :func:`video_train_config`, ``own`` its fields kept from the file), at ``data``'s image size."""
    from jepa_zoo.methods.ijepa import IJEPAConfig

    if imported.format in VIDEO_FORMATS:
        return video_train_config(imported, data, own)
    a = imported.arch
    data = data or DataConfig(name="fake", img_size=a["img_size"])  # the weights' own size
    method = IJEPAConfig(pred_depth=a.get("pred_depth", 1), pred_dim=a.get("pred_dim"), pred_heads=None)
    return TrainConfig(method=method, backbone=backbone_config(a, data.img_size), data=data,
                       masking=masking_config("multiblock"))


# what a predictor may lack in a file: IWM's action conditioning, which an I-JEPA predictor has not
CONDITIONING = ("action_mlp.", "action_weight", "action_bias")


# the setting that gives each part its depth, for the hint when a file's depth differs
DEPTH_KEYS = {"backbone": "+backbone.kwargs.depth", "encoder": "+backbone.kwargs.depth",
              "target_encoder": "+backbone.kwargs.depth", "predictor": "method.pred_depth"}


def _depth(state: Dict[str, Any]) -> int:
    """Transformer blocks in a state dict: 1 + the highest top-level ``[model.]blocks.<i>.`` index (0
    without; a hierarchical model's ``stages.<s>.blocks.<i>`` do not count)."""
    found = [int(m.group(1)) for k in state for m in [re.match(r"(?:model\.)?blocks\.(\d+)\.", k)] if m]
    return max(found) + 1 if found else 0


def load_part(module: Any, state: Dict[str, Tensor], name: str, key: str, partial: bool = False) -> List[str]:
    """``module.load_state_dict(state)``: strictly, or with ``partial`` only the action conditioning
    (:data:`CONDITIONING`: IWM's from an I-JEPA predictor) may stay as it is.  Returns the keys left;
    a tensor that does not fit or is missing is a ConfigError naming ``key``, the part and the tensor."""
    have, want = _depth(state), _depth(module.state_dict())
    if have != want:
        hint = DEPTH_KEYS.get(name, "the depth")
        raise ConfigError(f"{key}: {name}: the file has {have} blocks and the model {want}: set {hint}={have}")
    try:
        missing, _ = module.load_state_dict(state, strict=not partial)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e).splitlines()[0])
        first = first if len(first) <= 240 else first[:240] + " ..."
        raise ConfigError(f"{key}: {name}: the weights do not fit the model: {first}") from None
    unexpected = sorted(set(state) - set(module.state_dict()))
    if unexpected:
        raise ConfigError(f"{key}: {name}: the model has no tensor {unexpected[0]} (of {len(unexpected)} in the file)")
    fresh = [k for k in missing if not k.startswith(CONDITIONING)]
    if fresh:
        raise ConfigError(f"{key}: {name}: the file has no tensor {fresh[0]} ({len(fresh)} of the model's are missing: "
                          "another depth or width?)")
    return list(missing)


def load_imported(model: Any, imported: Imported, key: str = "ckpt") -> List[str]:
    """Load every part ``imported`` holds into an I-JEPA-family ``model`` (a file without a target
    encoder gives the encoder's); returns the names loaded."""
    declared = model.parts()  # jepa_zoo.models.parts.Parts
    parts = [(declared.encoder.model, imported.encoder, "encoder")]
    if declared.target_encoder is not None:
        parts.append((declared.target_encoder.model, imported.target_encoder or imported.encoder, "target_encoder"))
    if imported.predictor and declared.predictor is not None:
        parts.append((declared.predictor, imported.predictor, "predictor"))
    for module, state, name in parts:
        load_part(module, state, name, key, partial=name == "predictor")
    return [name for _, _, name in parts]


def init_from_(model: Any, path: str) -> str:
    """``init_from=<file>``: the encoder, and where both have them the target encoder and the predictor,
    of any checkpoint jepa_zoo reads, loaded into ``model`` before training (never optimiser state).
    A jepa_zoo checkpoint must share the model's sin-cos order; a tensor that does not fit is a
    ConfigError naming it.  Returns what was loaded, for the log."""
    from jepa_zoo.weights import load_file, read_imported, timm_weights

    path_ = Path(path).expanduser()
    state = load_file(path_, "init_from", mmap=True)
    saved = (state.get("hyper_parameters") or {}).get("cfg") if isinstance(state, dict) else None
    ours = model.cfg.backbone
    if isinstance(saved, dict):
        theirs = (saved.get("backbone") or {}).get("sincos_order", "timm")
        if ours.kind == "vit" and theirs != ours.sincos_order:
            raise ConfigError(f"init_from: {path_} was trained with backbone.sincos_order={theirs}; this run uses "
                              f"{ours.sincos_order} (add backbone.sincos_order={theirs})")
        sd = state["state_dict"]
        named = model.parts().named(model)  # {part: its name here, the prefix of its keys in the file too}
        loaded = []
        for kind in ("encoder", "target_encoder", "predictor"):
            name = named.get(kind)
            if name is None:
                continue
            part = {k[len(name) + 1:]: v for k, v in sd.items() if k.startswith(name + ".")}
            if kind == "target_encoder" and not part:  # a file without one (collapse=sigreg): its encoder
                part = {k[len(named["encoder"]) + 1:]: v for k, v in sd.items() if k.startswith(named["encoder"] + ".")}
            if part:
                load_part(model.get_submodule(name), part, name, "init_from", partial=kind == "predictor")
                loaded.append(name)
        return f"{', '.join(loaded)} from {path_} (jepa_zoo, method={saved['method']['name']})"
    imported = read_imported(path_, "init_from", state)
    if imported.format == timm_weights.NAME:  # a timm model's weights: the backbone only
        timm_weights.load_into(model.backbone, imported.encoder, load_part, "init_from")
        return f"encoder from {path_} (a timm state dict)"
    if imported.format in VIDEO_FORMATS:
        if not ours.video or ours.pos != imported.arch["pos"]:
            raise ConfigError(f"init_from: {path_} holds {imported.format} weights: they need a video ViT with "
                              f"backbone.pos={imported.arch['pos']} (a video data group and method=vjepa"
                              f"{'2' if imported.arch['pos'] == 'rope' else ''})")
    elif ours.kind != "vit" or ours.sincos_order != "ijepa" or ours.video:
        raise ConfigError(f"init_from: {path_} holds {imported.format} weights: they need backbone.kind=vit "
                          "with backbone.sincos_order=ijepa")
    return f"{', '.join(load_imported(model, imported, 'init_from'))} from {path_} ({imported.format})"


def build_from_weights(path: Path, key: str, data: Optional[DataConfig] = None) -> Tuple[Any, Imported]:
    """(the jepa_zoo module with the weights of ``path`` loaded, what was read)."""
    from jepa_zoo.methods import build_model

    imported = read_weights(Path(path), key)
    if imported.format not in METHOD_FORMATS:
        raise ConfigError(f"{key}: {path} holds {imported.format} weights: a backbone without a method")
    model = build_model(train_config(imported, data))
    load_imported(model, imported)
    return model, imported


@dataclass
class Loaded:
    """A model rebuilt from a checkpoint file of any format jepa_zoo reads."""

    model: Any
    config: TrainConfig
    step: Optional[int]
    format: str  # "jepa_zoo" or a jepa_zoo.weights format name
    arch: Optional[Dict[str, Any]] = None  # foreign weights: what the file records (img_size / num_frames None: not)


CLIP = ("num_frames", "frame_step", "fps")  # a video checkpoint's clips: kept on other video data
RESOLUTION = ("img_size", "mean", "std") + CLIP


def at_resolution(data: DataConfig, own: DataConfig, fields: Sequence[str] = RESOLUTION) -> DataConfig:
    """``data`` with the checkpoint's own image size and normalisation (``own``: its training data, or
    for foreign weights their image size and ImageNet's statistics) in ``fields``; the clip fields
    (``CLIP``: frames per clip, their spacing) only when both ``data`` and ``own`` are video."""
    keep = [f for f in fields if f not in CLIP or (data.video and own.video)]
    return replace(data, **{f: getattr(own, f) for f in keep})


def typed_data(base: Any, settings: Any) -> DataConfig:
    """``settings`` (a mapping or DictConfig of ``data.<key>`` values) over ``base`` (the DataConfig
    class or an instance), validated; a bad key or value is one line naming it."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(base), settings))
    except ConfigError:
        raise  # DataConfig's own checks name their key already
    except Exception as e:  # noqa: BLE001 - OmegaConf's type and key errors: one line naming the key
        key = getattr(e, "full_key", "") or ""
        raise ConfigError(f"data{'.' + key if key else ''}: {str(e).splitlines()[0]}") from None


TIMM_PREFIX = "timm:"


def load_timm(name: str, key: str, data: Optional[DataConfig], weights: Optional[Path] = None,
              trained: bool = True) -> "Loaded":
    """``<key>=timm:<model name>``: a stock timm architecture (random init: timm's own initialisation
    under the run seed), or with ``weights`` a local timm state dict / safetensors file loaded into it.
    A LeJEPA module holds it (its projector unused), so every protocol finds ``eval_encoder``."""
    import torch

    from jepa_zoo.methods import build_model
    from jepa_zoo.methods.lejepa import LeJEPAConfig
    from jepa_zoo.weights import load_file, read_imported, timm_weights

    if data is None:
        raise ConfigError(f"data: {key}={TIMM_PREFIX}{name} names no dataset; choose one: data=cifar10 "
                          "data.root=<folder> (or data=folder / data=imagenet ...)")
    state = load_file(Path(weights), "timm_file", mmap=True) if weights is not None else None
    exported = timm_weights.export_kwargs(Path(weights).expanduser()) if weights is not None else None
    if exported and exported[0] != name:
        raise ConfigError(f"timm_file: {weights} is a jepa_zoo export of {exported[0]}; use "
                          f"{key}={TIMM_PREFIX}{exported[0]}")
    try:  # a jepa_zoo export: the architecture it was created with (no class token, patch size, depth, ...)
        backbone = BackboneConfig(kind="timm", name=name, img_size=data.img_size,
                                  kwargs=exported[1] if exported else {})
    except ConfigError as e:
        raise ConfigError(f"{key}: {str(e).partition(': ')[2]}") from None
    tc = TrainConfig(method=LeJEPAConfig(), backbone=backbone, data=data, masking=masking_config("none"))
    torch.manual_seed(tc.seed)
    model = build_model(tc)
    if state is not None and trained:
        imported = read_imported(Path(weights), "timm_file", state)
        if imported.format != timm_weights.NAME:
            raise ConfigError(f"timm_file: {weights} holds {imported.format} weights, not a timm state dict")
        timm_weights.load_into(model.backbone, imported.encoder, load_part, "timm_file")
    return Loaded(model, tc, None, "timm")


def load_any(path: Path, key: str, data: Optional[DataConfig] = None, trained: bool = True,
             need_data: bool = False, own_resolution: Sequence[str] = (),
             data_settings: Optional[Dict[str, Any]] = None) -> Loaded:
    """The model of ``path``: a jepa_zoo ``.ckpt`` (its own config; its dataset unless ``data``), or
    foreign weights (:mod:`jepa_zoo.weights`; at ``data``'s image size, else the weights' own).
    ``trained=False`` keeps the seeded initialisation (the random-init baseline); ``need_data``: foreign
    weights without ``data`` are refused (evaluation needs a dataset; they name none);
    ``own_resolution``: the fields of ``data`` (of ``RESOLUTION``) that take the checkpoint's own
    values (:func:`at_resolution`; the evaluation leaves out those the command sets); ``data_settings``:
    ``data.<key>`` values over a jepa_zoo checkpoint's own dataset (:func:`typed_data`), set before its
    model is built. The file is memory-mapped: a released file's optimiser state stays on disk."""
    from jepa_zoo.config import validate_saved
    from jepa_zoo.methods import build_model
    from jepa_zoo.weights import load_file, read_imported

    path = Path(path).expanduser()
    state = load_file(path, key, mmap=True)
    saved = (state.get("hyper_parameters") or {}).get("cfg") if isinstance(state, dict) else None
    if isinstance(saved, dict):
        tc = validate_saved(saved)
        if data is not None:
            tc.data = at_resolution(data, tc.data, own_resolution)
        if data_settings:
            tc.data = typed_data(tc.data, data_settings)
        model = build_model(tc, num_classes=state["hyper_parameters"].get("num_classes"))
        if trained:
            model.load_state_dict(state["state_dict"])
        return Loaded(model, tc, state.get("global_step"), "jepa_zoo")
    imported = read_imported(path, key, state)
    if imported.format not in METHOD_FORMATS:
        from jepa_zoo.weights.timm_weights import export_kwargs

        name = (export_kwargs(path) or ("<model name>",))[0] if imported.format == "timm" else "<model name>"
        raise ConfigError(f"{key}: {path} is {imported.format} weights: a backbone without a method; "
                          f"start a run from them with init_from= instead"
                          + (f", or evaluate it with {key}={TIMM_PREFIX}{name} timm_file={path}"
                             if key == "ckpt" else ""))
    if need_data and data is None:
        raise ConfigError(f"data: {path} holds {imported.format} weights, which name no dataset; choose one: "
                          "data=imagenet data.root=<folder with train/ and val/> (or data=cifar10 / data=folder ...)")
    if data is not None and imported.arch["img_size"]:
        data = at_resolution(data, DataConfig(name="fake", img_size=imported.arch["img_size"]), own_resolution)
    tc = train_config(imported, data, own_resolution)
    model = build_model(tc)
    if trained:
        load_imported(model, imported)
    return Loaded(model, tc, None, imported.format, imported.arch)
