"""Export weights for other code: ``python -m jepa_zoo.export <ckpt> [--format timm|official|hf] [--out F] [--encoder eval|online]``.

``<ckpt>`` is a jepa_zoo ``.ckpt`` or any file :mod:`jepa_zoo.weights` reads (official I-JEPA
weights: ``--format hf`` converts them).  Three formats:

* ``official``: the official I-JEPA checkpoint layout (``encoder``, ``target_encoder``,
  ``predictor`` under ``module.``, the sin-cos embeddings stored), which the official code and
  :mod:`jepa_zoo.weights.official_ijepa` load; I-JEPA checkpoints with ViT backbones in the
  official sin-cos order (IWM's action-conditioned predictor has no official counterpart);
* ``hf``: a folder that ``transformers.IJepaModel.from_pretrained(folder)`` loads offline
  (:mod:`jepa_zoo.weights.hf_ijepa`); its ``last_hidden_state`` is the encoder's tokens; for a
  V-JEPA 2 model (video, RoPE) ``transformers.VJEPA2Model`` with the encoder and the predictor
  (:mod:`jepa_zoo.weights.hf_vjepa2`);
* ``timm`` (default): a safetensors file whose tensors are a ``state_dict`` of a stock timm
  model and whose metadata says how to create it::

    import json, timm
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open("encoder.safetensors", "pt") as f:
        meta = f.metadata()
    model = timm.create_model(meta["timm_model"], pretrained_cfg_overlay=json.loads(meta["pretrained_cfg"]),
                              **json.loads(meta["create_kwargs"]))
    model.load_state_dict(load_file("encoder.safetensors"))   # strict: every key matches
    cfg = timm.data.resolve_data_config({}, model=model)      # input size, mean/std, crop as trained
    features = model(timm.data.create_transform(**cfg)(pil_image)[None])   # [1, D], as the jepa_zoo encoder

(:func:`load_timm` does exactly that.)  ViTs: our encoder adds fixed 2-D
sin-cos position embeddings outside timm; the export writes them into timm's
``pos_embed`` at the training resolution (timm resamples it for other sizes
with ``dynamic_img_size``).  ``--encoder eval`` (default) is the encoder
evaluation uses (EMA methods: the target encoder); ``online`` the trained one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn


def timm_export(encoder: nn.Module) -> Tuple[Dict[str, Tensor], str, Dict[str, Any]]:
    """``(state_dict, timm model name, create_model kwargs)`` of a jepa_zoo encoder."""
    from jepa_zoo.models.backbones import TimmEncoder, ViTEncoder

    cfg = encoder.cfg
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.model.state_dict().items()}
    kwargs: Dict[str, Any] = {k: v for k, v in dict(cfg.kwargs).items() if k != "drop_path_rate"}
    if isinstance(encoder, ViTEncoder):
        h, w = encoder.grid_size
        state["pos_embed"] = encoder.pos_embed(h, w, torch.zeros(())).detach().cpu()[None].contiguous()
        kwargs.update(num_classes=0, img_size=encoder.img_size, patch_size=encoder.patch_size, class_token=False,
                      global_pool="avg", fc_norm=False, dynamic_img_size=True, dynamic_img_pad=True)
    elif isinstance(encoder, TimmEncoder):
        if getattr(cfg, "cifar_stem", False):
            raise ValueError("backbone.cifar_stem=true replaces the ResNet stem (3x3 conv, no max-pool): a stock "
                             "timm ResNet cannot load it")
        kwargs.update(num_classes=0)
        if cfg.name.startswith("vit"):
            kwargs.update(img_size=cfg.img_size, dynamic_img_size=True)
    else:
        raise TypeError(f"cannot export a {type(encoder).__name__}")
    return state, cfg.name, kwargs


def preprocessing(data: Any) -> Dict[str, Any]:
    """timm's ``pretrained_cfg`` keys for the evaluation preprocessing of training (``data.*``): resize the
    short side to ``img_size / eval_crop_ratio`` (bilinear), centre-crop ``img_size``, normalise."""
    return {"input_size": [3, data.img_size, data.img_size], "mean": list(data.mean), "std": list(data.std),
            "interpolation": "bilinear", "crop_pct": data.eval_crop_ratio, "crop_mode": "center", "num_classes": 0}


def load_timm(path: str | Path) -> nn.Module:
    """The stock timm model of an exported file, weights loaded (strictly), in eval mode."""
    import timm
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "timm_model" not in meta:
        raise ValueError(f"{path} is not a jepa_zoo export (no timm_model in its metadata)")
    overlay = ({k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(meta["pretrained_cfg"]).items()}
               if "pretrained_cfg" in meta else None)  # timm's own configs hold tuples
    model = timm.create_model(meta["timm_model"], pretrained=False, pretrained_cfg_overlay=overlay,
                              **json.loads(meta["create_kwargs"]))
    model.load_state_dict(load_file(str(path)))
    return model.eval()


SUFFIX = {"timm": "_encoder.safetensors", "official": "_official.pth.tar", "hf": "_hf"}


def export(ckpt: Path, out: Optional[Path] = None, which: str = "eval", fmt: str = "timm") -> Path:
    """Write ``out`` (default ``<ckpt dir>/<ckpt stem>`` + the format's suffix) and return its path."""
    from safetensors.torch import save_file

    from jepa_zoo.pretrained import load_any

    if which not in ("eval", "online"):
        raise ValueError(f"--encoder must be 'eval' or 'online', got {which!r}")
    if fmt not in SUFFIX:
        raise ValueError(f"--format must be one of {', '.join(SUFFIX)}, got {fmt!r}")
    ckpt = Path(ckpt)
    loaded = load_any(ckpt, "ckpt")
    model, tc = loaded.model.eval(), loaded.config
    stem = next((ckpt.name[: -len(s)] for s in (".pth.tar", ".ckpt", ".pth", ".pt") if ckpt.name.endswith(s)), ckpt.stem)
    out = Path(out) if out else ckpt.parent / f"{stem}{SUFFIX[fmt]}"
    encoder = model.eval_encoder if which == "eval" else model.backbone
    if fmt == "official":
        return export_official(model, out, loaded.step)
    if fmt == "hf" and tc.backbone.video:
        return export_hf_vjepa2(model, encoder, out)
    if fmt == "hf":
        return export_hf(encoder, out)
    if tc.backbone.video:
        raise ValueError(f"--format {fmt} writes image encoders; a video encoder (method={tc.method.name}) exports "
                         "with --format hf (V-JEPA 2, RoPE)")
    tensors, name, kwargs = timm_export(encoder)
    meta = {"timm_model": name, "create_kwargs": json.dumps(kwargs), "pretrained_cfg": json.dumps(preprocessing(tc.data)),
            "method": tc.method.name, "encoder": which, "source": str(ckpt), "global_step": str(loaded.step)}
    return _atomic(out, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _atomic(out: Path, write, folder: bool = False) -> Path:
    """``write(tmp)`` then rename ``tmp`` to ``out``: a failed export leaves nothing half-written.  An
    existing ``out`` is replaced only when it is what this export writes: a file, or (``folder``) an
    earlier Hugging Face export (it has ``config.json``); anything else is refused, untouched."""
    import shutil

    if out.is_dir() and not (folder and (out / "config.json").is_file()):
        raise ValueError(f"--out {out} is an existing folder" + ("" if folder else "; name a file")
                         + ("" if not folder else " that is not a Hugging Face export; name a new folder"))
    if folder and out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file; --format hf writes a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    old = out.with_name(f".{out.name}.old")
    try:
        write(tmp)
        if out.is_dir():  # an earlier export: moved aside, replaced, then removed
            out.replace(old)
        tmp.replace(out)
        if old.is_dir():
            shutil.rmtree(old)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()
    return out


def _vit(encoder: nn.Module, fmt: str) -> None:
    from jepa_zoo.models.backbones import ViTEncoder

    if not isinstance(encoder, ViTEncoder):
        raise ValueError(f"--format {fmt} writes ViT encoders; this checkpoint's backbone is {type(encoder).__name__}")


def export_official(model: Any, out: Path, step: Optional[int]) -> Path:
    """The official I-JEPA layout of an I-JEPA-family ``model`` (encoder, target encoder, predictor)."""
    from jepa_zoo.weights import official_ijepa

    if not hasattr(model, "target_encoder") or not hasattr(model, "predictor"):
        raise ValueError("--format official writes I-JEPA-family checkpoints (encoder, target encoder, predictor); "
                         f"this is method={model.cfg.method.name}")
    _vit(model.backbone, "official")
    if model.backbone.sincos_order != "ijepa":
        raise ValueError("--format official: this checkpoint was trained with backbone.sincos_order=timm; the official "
                         "layout (and jepa_zoo's reader of it) expects the official sin-cos order")
    if getattr(model.predictor, "action_dim", 0):
        raise ValueError("--format official: the official layout has no action-conditioned predictor (IWM); export "
                         "the encoder with --format timm or hf")

    def encoder_state(enc: nn.Module) -> Dict[str, Tensor]:
        state, _, _ = timm_export(enc)
        return state

    pred = {k: v.detach().cpu() for k, v in model.predictor.state_dict().items()}
    pred["pos_embed"] = model.predictor.pos_embed.detach().cpu()[None]
    blob = official_ijepa.write(encoder_state(model.backbone), encoder_state(model.target_encoder), pred,
                                epoch=None, step=step)
    return _atomic(out, lambda tmp: torch.save(blob, tmp))


def export_hf(encoder: nn.Module, out: Path) -> Path:
    """A ``transformers`` ``IJepaModel`` folder (config.json + model.safetensors) of a ViT ``encoder``."""
    try:
        from transformers import IJepaConfig, IJepaModel
    except ImportError:
        raise ValueError("--format hf needs transformers: pip install 'jepa_zoo[hf]'") from None
    from jepa_zoo.weights.hf_ijepa import hf_config, hf_state, split

    _vit(encoder, "hf")
    state, _, _ = timm_export(encoder)
    depth, mlp = split(state)
    hf = IJepaModel(IJepaConfig(**hf_config(encoder.embed_dim, depth, encoder.num_heads, mlp, encoder.img_size,
                                            encoder.patch_size)))
    hf.load_state_dict(hf_state(state, state["pos_embed"]), strict=True)
    return _atomic(out, lambda tmp: hf.save_pretrained(str(tmp)), folder=True)


def export_hf_vjepa2(model: Any, encoder: nn.Module, out: Path) -> Path:
    """A ``transformers`` ``VJEPA2Model`` folder of a V-JEPA 2 ``model`` (``encoder`` and its predictor)."""
    try:
        from transformers import VJEPA2Config, VJEPA2Model
    except ImportError:
        raise ValueError("--format hf of a video model needs transformers >= 4.53: pip install 'jepa_zoo[hf]'") from None
    from jepa_zoo.weights import hf_vjepa2

    if encoder.pos != "rope" or encoder.rope_layout != "vjepa2":
        raise ValueError("--format hf writes V-JEPA 2 models (backbone.pos=rope with the official rope_layout=vjepa2); "
                         f"this one has backbone.pos={encoder.pos}, rope_layout={encoder.rope_layout}")
    pred = model.predictor
    arch = {"embed_dim": encoder.embed_dim, "depth": len(encoder.model.blocks), "num_heads": encoder.num_heads,
            "patch_size": encoder.patch_size, "tubelet_size": encoder.tubelet_size,
            "mlp_ratio": encoder.model.blocks[0].mlp.fc1.out_features / encoder.embed_dim,
            "pred_dim": pred.embed.out_features, "pred_depth": len(pred.blocks), "num_mask_tokens": len(pred.mask_tokens)}
    config = hf_vjepa2.config(arch, encoder.num_frames, encoder.img_size, pred.blocks[0].attn.num_heads)
    hf = VJEPA2Model(VJEPA2Config(**config))
    state = hf_vjepa2.write({k: v.detach().cpu() for k, v in encoder.model.state_dict().items()},
                            {k: v.detach().cpu() for k, v in pred.state_dict().items()})
    hf.load_state_dict(state, strict=True)
    return _atomic(out, lambda tmp: hf.save_pretrained(str(tmp)), folder=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from jepa_zoo.config import ConfigError
    from jepa_zoo.data.datasets import DataError

    p = argparse.ArgumentParser(prog="python -m jepa_zoo.export", description=__doc__.splitlines()[0])
    p.add_argument("ckpt", type=Path, help="a jepa_zoo training checkpoint (e.g. <run dir>/checkpoints/last.ckpt), "
                   "or official I-JEPA weights")
    p.add_argument("--format", choices=("timm", "official", "hf"), default="timm",
                   help="timm: safetensors for timm.create_model; official: the official I-JEPA .pth.tar layout; "
                        "hf: a transformers IJepaModel folder")
    p.add_argument("--out", type=Path, default=None, help="output file or folder (default: next to the checkpoint)")
    p.add_argument("--encoder", choices=("eval", "online"), default="eval",
                   help="eval: the encoder evaluation uses (EMA target for I-JEPA/IWM); online: the trained one")
    args = p.parse_args(argv)
    try:
        out = export(args.ckpt, args.out, args.encoder, args.format)
    except (ConfigError, DataError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}\nload it with: " + {
        "timm": f"jepa_zoo.export.load_timm({str(out)!r}) or timm.create_model(...) with the file's metadata",
        "official": "the official I-JEPA code (checkpoint['encoder'] / ['target_encoder'] / ['predictor'])",
        "hf": f"transformers.{'VJEPA2Model' if (out / 'config.json').is_file() and 'vjepa2' in (out / 'config.json').read_text() else 'IJepaModel'}"
              f".from_pretrained({str(out)!r})"}[args.format])
    return 0


if __name__ == "__main__":
    sys.exit(main())
