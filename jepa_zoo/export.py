"""Export an encoder as plain timm weights: ``python -m jepa_zoo.export <ckpt> [--out F] [--encoder eval|online]``.

Writes a safetensors file whose tensors are a ``state_dict`` of a stock timm
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


def export(ckpt: Path, out: Optional[Path] = None, which: str = "eval") -> Path:
    """Write ``out`` (default ``<ckpt dir>/<ckpt stem>_encoder.safetensors``) and return its path."""
    from safetensors.torch import save_file

    from jepa_zoo.config import validate_saved
    from jepa_zoo.eval import load_checkpoint
    from jepa_zoo.methods import build_model

    if which not in ("eval", "online"):
        raise ValueError(f"--encoder must be 'eval' or 'online', got {which!r}")
    state = load_checkpoint(ckpt)
    hp = state["hyper_parameters"]
    tc = validate_saved(hp["cfg"])
    model = build_model(tc, num_classes=hp.get("num_classes"))
    model.load_state_dict(state["state_dict"])
    encoder = model.eval_encoder if which == "eval" else model.backbone
    tensors, name, kwargs = timm_export(encoder)
    out = out or ckpt.parent / f"{ckpt.stem}_encoder.safetensors"
    meta = {"timm_model": name, "create_kwargs": json.dumps(kwargs), "pretrained_cfg": json.dumps(preprocessing(tc.data)),
            "method": tc.method.name, "encoder": which,
            "source": str(ckpt), "global_step": str(state.get("global_step"))}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=meta)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    from jepa_zoo.config import ConfigError
    from jepa_zoo.data.datasets import DataError

    p = argparse.ArgumentParser(prog="python -m jepa_zoo.export", description=__doc__.splitlines()[0])
    p.add_argument("ckpt", type=Path, help="a jepa_zoo training checkpoint (e.g. <run dir>/checkpoints/last.ckpt)")
    p.add_argument("--out", type=Path, default=None, help="output .safetensors (default: next to the checkpoint)")
    p.add_argument("--encoder", choices=("eval", "online"), default="eval",
                   help="eval: the encoder evaluation uses (EMA target for I-JEPA/IWM); online: the trained one")
    args = p.parse_args(argv)
    try:
        out = export(args.ckpt, args.out, args.encoder)
    except (ConfigError, DataError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}\nload it with: jepa_zoo.export.load_timm({str(out)!r}) or timm.create_model(...) "
          "with the file's metadata (see the module docstring)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
