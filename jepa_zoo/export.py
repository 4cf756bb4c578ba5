"""Export weights for other code: ``python -m jepa_zoo.export <ckpt> [--format timm|official|hf|torch_export]
[--out F] [--encoder eval|online] [--img-size S] [--num-frames F]``.

``<ckpt>`` is a jepa_zoo ``.ckpt`` or any file :mod:`jepa_zoo.weights` reads (official I-JEPA,
V-JEPA and V-JEPA 2 weights).  Four formats:

* ``torch_export``: every encoder jepa_zoo trains (ViTs, any timm model incl. the CIFAR-stem ResNet,
  the video ViTs with sin-cos or RoPE): a ``.pt2`` program (``torch.export``; any batch size, the
  image size and clip length of the export) that plain PyTorch runs without jepa_zoo or timm::

    extra = {"jepa_zoo.json": ""}
    encoder = torch.export.load("encoder.pt2", extra_files=extra).module()
    features = encoder(x)     # x: [B, 3, S, S] images (video: [B, 3, T, S, S] clips) -> [B, D]
    meta = json.loads(extra["jepa_zoo.json"])   # input shape, mean/std, crop, method, source

* ``official``: the official I-JEPA checkpoint layout (``encoder``, ``target_encoder``,
  ``predictor`` under ``module.``, the sin-cos embeddings stored), which the official code and
  :mod:`jepa_zoo.weights.official_ijepa` load; I-JEPA checkpoints with ViT backbones in the
  official sin-cos order (IWM's action-conditioned predictor has no official counterpart);
* ``hf``: a folder that ``transformers.IJepaModel.from_pretrained(folder)`` loads offline, with a
  ``preprocessor_config.json`` for ``AutoImageProcessor`` (:mod:`jepa_zoo.weights.hf_export`); its
  ``last_hidden_state`` is the encoder's tokens; for a V-JEPA 2 model (video, RoPE)
  ``transformers.VJEPA2Model`` with the encoder and the predictor, and a
  ``video_preprocessor_config.json`` for ``AutoVideoProcessor``;
* ``timm`` (default): a safetensors file whose tensors are a ``state_dict`` of a stock timm
  model (jepa_zoo's ViTs, timm models; not the CIFAR stem) and whose metadata says how to create it::

    import json, timm
    from safetensors import safe_open

    with safe_open("encoder.safetensors", "pt") as f:
        meta = f.metadata()
    overlay = dict(file="encoder.safetensors", **json.loads(meta["pretrained_cfg"]))
    model = timm.create_model(meta["timm_model"], pretrained=True, pretrained_cfg_overlay=overlay,
                              **json.loads(meta["create_kwargs"]))   # needed: no class token, patch size, ...
    cfg = timm.data.resolve_data_config({}, model=model)      # input size, mean/std, crop as trained
    features = model(timm.data.create_transform(**cfg)(pil_image)[None])   # [1, D], as the jepa_zoo encoder

(:func:`load_timm` does that, strictly.)  ViTs: our encoder adds fixed 2-D sin-cos position
embeddings outside timm; the export writes them into timm's ``pos_embed`` at the export's size
(timm resamples it for other sizes with ``dynamic_img_size``).  ``--encoder eval`` (default) is the
encoder evaluation uses (EMA methods: the target encoder); ``online`` the trained one.
``--img-size`` / ``--num-frames``: the input the file is for (default: the training size, which a
jepa_zoo checkpoint and a sin-cos file record; a RoPE file records none: 256 px, 16 frames, said in
one line).  Files are written under a temporary name, renamed when complete, with the umask's mode.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn


def timm_export(encoder: nn.Module, size: Optional[int] = None) -> Tuple[Dict[str, Tensor], str, Dict[str, Any]]:
    """``(state_dict, timm model name, create_model kwargs)`` of a jepa_zoo encoder (a ViT's sin-cos
    ``pos_embed`` for ``size``-px images: its training size by default)."""
    from jepa_zoo.models.backbones import TimmEncoder, ViTEncoder

    cfg = encoder.cfg
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.model.state_dict().items()}
    kwargs: Dict[str, Any] = {k: v for k, v in dict(cfg.kwargs).items() if k != "drop_path_rate"}
    if isinstance(encoder, ViTEncoder):
        size = size or encoder.img_size
        g = size // encoder.patch_size
        state["pos_embed"] = encoder.pos_embed(g, g, torch.zeros(())).detach().cpu()[None].contiguous()
        kwargs.update(num_classes=0, img_size=size, patch_size=encoder.patch_size, class_token=False,
                      global_pool="avg", fc_norm=False, dynamic_img_size=True, dynamic_img_pad=True)
    elif isinstance(encoder, TimmEncoder):
        if getattr(cfg, "cifar_stem", False):
            raise ValueError("backbone.cifar_stem=true replaces the ResNet stem (3x3 conv, no max-pool): a stock "
                             "timm ResNet cannot load it; export it with --format torch_export")
        kwargs.update(num_classes=0)
        if cfg.name.startswith("vit"):
            kwargs.update(img_size=cfg.img_size, dynamic_img_size=True)
    else:
        raise TypeError(f"--format timm writes image encoders, not a {type(encoder).__name__}; export it with "
                        "--format torch_export")
    return state, cfg.name, kwargs


def preprocessing(data: Any, size: Optional[int] = None) -> Dict[str, Any]:
    """timm's ``pretrained_cfg`` keys for the evaluation preprocessing of training (``data.*``) at ``size``
    px (``data.img_size`` by default): resize the short side to ``size / eval_crop_ratio`` (bilinear),
    centre-crop ``size``, normalise."""
    size = size or data.img_size
    return {"input_size": [3, size, size], "mean": list(data.mean), "std": list(data.std),
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


SUFFIX = {"timm": "_encoder.safetensors", "official": "_official.pth.tar", "hf": "_hf", "torch_export": "_encoder.pt2"}


def export(ckpt: Path, out: Optional[Path] = None, which: str = "eval", fmt: str = "timm",
           img_size: Optional[int] = None, num_frames: Optional[int] = None) -> Path:
    """Write ``out`` (default ``<ckpt dir>/<ckpt stem>`` + the format's suffix) for inputs of ``img_size``
    px and ``num_frames`` frames (default: the checkpoint's) and return its path."""
    from jepa_zoo.pretrained import load_any

    if which not in ("eval", "online"):
        raise ValueError(f"--encoder must be 'eval' or 'online', got {which!r}")
    if fmt not in SUFFIX:
        raise ValueError(f"--format must be one of {', '.join(SUFFIX)}, got {fmt!r}")
    if fmt == "official" and (img_size or num_frames):
        raise ValueError("--img-size / --num-frames: --format official keeps the training grid (the official layout "
                         "stores its position embeddings)")
    ckpt = Path(ckpt)
    stem = next((ckpt.name[: -len(s)] for s in (".pth.tar", ".ckpt", ".pth", ".pt") if ckpt.name.endswith(s)), ckpt.stem)
    out = Path(out) if out else ckpt.parent / f"{stem}{SUFFIX[fmt]}"
    check_out(out, folder=fmt == "hf")  # before the work: a folder it cannot write is one line
    loaded = load_any(ckpt, "ckpt")
    model, tc = loaded.model.eval(), loaded.config
    parts = model.parts()  # jepa_zoo.models.parts.Parts
    encoder = parts.eval_encoder if which == "eval" else parts.encoder
    if fmt == "official":
        return export_official(model, out, loaded.step)
    if fmt == "timm" and tc.backbone.video:
        raise ValueError(f"--format timm writes image encoders; a video encoder (method={tc.method.name}, "
                         f"backbone.pos={tc.backbone.pos}) exports with --format torch_export"
                         + (" or hf (VJEPA2Model)" if tc.backbone.pos == "rope" else ""))
    size, frames = input_size(loaded, ckpt, img_size, num_frames)
    data = replace(tc.data, img_size=size, **({"num_frames": frames} if tc.backbone.video else {}))
    meta = {"method": tc.method.name, "encoder": which, "source": str(ckpt), "global_step": str(loaded.step)}
    if fmt == "torch_export":
        return _atomic(out, program_writer(encoder, data, tc.backbone.video, meta))
    if fmt == "hf":
        from jepa_zoo.weights.hf_export import ijepa_writer, vjepa2_writer

        if tc.backbone.video:
            if model.parts().predictor is None:
                raise ValueError(f"--format hf writes V-JEPA 2 models (encoder and predictor); this is "
                                 f"method={tc.method.name}: export it with --format torch_export")
            return _atomic(out, vjepa2_writer(parts.predictor, encoder, size, frames, data), folder=True)
        _vit(encoder, "hf")
        return _atomic(out, ijepa_writer(encoder, timm_export(encoder, size)[0], size, data), folder=True)
    from safetensors.torch import save_file

    tensors, name, kwargs = timm_export(encoder, size)
    meta.update(timm_model=name, create_kwargs=json.dumps(kwargs), pretrained_cfg=json.dumps(preprocessing(data)))
    return _atomic(out, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def input_size(loaded: Any, ckpt: Path, img_size: Optional[int], num_frames: Optional[int]) -> Tuple[int, int]:
    """``(image size, frames per clip)`` the export is for: the command's, else the checkpoint's (a jepa_zoo
    checkpoint and a sin-cos file record them; a RoPE file does not: the defaults of
    :func:`jepa_zoo.pretrained.video_train_config`, 256 px and 16 frames, said in one line)."""
    bb = loaded.config.backbone
    if img_size is not None and img_size < 1:
        raise ValueError(f"--img-size must be >= 1, got {img_size}")
    if num_frames is not None and not bb.video:
        raise ValueError(f"--num-frames: this encoder takes images (backbone.num_frames={bb.num_frames})")
    size, frames = img_size or bb.img_size, num_frames or bb.num_frames
    if bb.video and size % bb.patch_size:
        raise ValueError(f"--img-size {size} is not a multiple of the patch size {bb.patch_size}")
    if bb.video and (frames < 1 or frames % bb.tubelet_size):
        raise ValueError(f"--num-frames {frames} is not a whole number of {bb.tubelet_size}-frame tubelets")
    arch = loaded.arch or {}
    unknown = [what for key, what, given in (("img_size", "image size", img_size),
                                             ("num_frames", "clip length", num_frames))
               if key in arch and arch[key] is None and given is None]
    if unknown:
        print(f"note: {ckpt} records no {' or '.join(unknown)} (RoPE): exported for {size}-px clips of {frames} "
              "frames; set --img-size / --num-frames for others", file=sys.stderr)
    return size, frames


def program_writer(encoder: nn.Module, data: Any, video: bool, meta: Dict[str, str]) -> Callable[[Path], None]:
    """``write(path)`` of a ``torch.export`` program of ``encoder``'s pooled features for ``data``'s
    inputs (``[B, 3, S, S]`` images, ``[B, 3, T, S, S]`` clips; the batch size is dynamic), with a
    ``jepa_zoo.json`` extra file: the input, its preprocessing and ``meta``."""
    from torch.export import Dim, export as trace, save

    shape = (3, data.num_frames, data.img_size, data.img_size) if video else (3, data.img_size, data.img_size)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    encoder = encoder.eval()
    with torch.no_grad():
        encoder(x)  # fills the encoder's position caches: the program holds them as constants
        program = trace(encoder, (x,), dynamic_shapes=({0: Dim("batch", min=1)},))
    info = {**meta, "input": f"{'clips' if video else 'images'} {['B', *shape]}", "input_shape": ["B", *shape],
            "output": f"pooled features [B, {encoder.embed_dim}]", **preprocessing(data)}
    info.pop("num_classes")
    return lambda path: save(program, str(path), extra_files={"jepa_zoo.json": json.dumps(info)})


def check_out(out: Path, folder: bool = False) -> None:
    """Refuse, changing nothing, an ``--out`` the export cannot write: an existing folder (a file with
    ``folder``) that is not an earlier export of the same kind, or below a file or a read-only folder."""
    if out.is_dir() and not (folder and (out / "config.json").is_file()):
        raise ValueError(f"--out {out} is an existing folder" + ("" if folder else "; name a file")
                         + ("" if not folder else " that is not a Hugging Face export; name a new folder"))
    if folder and out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file; --format hf writes a folder")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the folders --out needs are made when writing
    if not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: the folder {parent} is not writable")


def _atomic(out: Path, write: Callable[[Path], None], folder: bool = False) -> Path:
    """``write(tmp)`` then rename ``tmp`` to ``out``: a failed export leaves nothing half-written (folders
    it made included).  An existing ``out`` is replaced only when it is what this export writes
    (:func:`check_out`).  The files get the umask's mode (safetensors writes owner-only)."""
    import shutil

    from safetensors import SafetensorError

    check_out(out, folder)
    made = [p for p in reversed(out.parents) if not p.exists()]
    tmp = out.with_name(f".{out.name}.partial")
    old = out.with_name(f".{out.name}.old")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        _umask_mode(tmp)
        if out.is_dir():  # an earlier export: moved aside, replaced, then removed
            out.replace(old)
        tmp.replace(out)
        if old.is_dir():
            shutil.rmtree(old)
        made = []
    except (OSError, SafetensorError) as e:
        raise ValueError(f"--out {out}: cannot write it ({getattr(e, 'strerror', None) or e})") from e
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()
        for p in reversed(made):
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    return out


def _umask_mode(path: Path) -> None:
    """Give ``path`` (a file, or every file under a folder) the mode a new file gets under the umask."""
    mask = os.umask(0)
    os.umask(mask)
    for f in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        os.chmod(f, 0o666 & ~mask)


def _vit(encoder: nn.Module, fmt: str) -> None:
    from jepa_zoo.models.backbones import ViTEncoder

    if not isinstance(encoder, ViTEncoder):
        raise ValueError(f"--format {fmt} writes ViT encoders; this checkpoint's backbone is {type(encoder).__name__}: "
                         "export it with --format torch_export")


def export_official(model: Any, out: Path, step: Optional[int]) -> Path:
    """The official I-JEPA layout of an I-JEPA-family ``model`` (encoder, target encoder, predictor)."""
    from jepa_zoo.weights import official_ijepa

    parts = model.parts()  # jepa_zoo.models.parts.Parts
    if parts.target_encoder is None or parts.predictor is None:
        raise ValueError("--format official writes I-JEPA-family checkpoints (encoder, target encoder, predictor); "
                         f"this is method={model.cfg.method.name}: export its encoder with --format torch_export")
    _vit(parts.encoder, "official")
    if parts.encoder.sincos_order != "ijepa":
        raise ValueError("--format official: this checkpoint was trained with backbone.sincos_order=timm; the official "
                         "layout (and jepa_zoo's reader of it) expects the official sin-cos order")
    if getattr(parts.predictor, "action_dim", 0):
        raise ValueError("--format official: the official layout has no action-conditioned predictor (IWM); export "
                         "the encoder with --format timm or hf")

    def encoder_state(enc: nn.Module) -> Dict[str, Tensor]:
        state, _, _ = timm_export(enc)
        return state

    pred = {k: v.detach().cpu() for k, v in parts.predictor.state_dict().items()}
    pred["pos_embed"] = parts.predictor.pos_embed.detach().cpu()[None]
    blob = official_ijepa.write(encoder_state(parts.encoder), encoder_state(parts.target_encoder), pred,
                                epoch=None, step=step)
    return _atomic(out, lambda tmp: torch.save(blob, tmp))


def main(argv: Optional[Sequence[str]] = None) -> int:
    from jepa_zoo.config import ConfigError
    from jepa_zoo.data.datasets import DataError

    p = argparse.ArgumentParser(prog="python -m jepa_zoo.export", description=__doc__.splitlines()[0])
    p.add_argument("ckpt", type=Path, help="a jepa_zoo training checkpoint (e.g. <run dir>/checkpoints/last.ckpt), "
                   "or official I-JEPA / V-JEPA / V-JEPA 2 weights")
    p.add_argument("--format", choices=tuple(SUFFIX), default="timm",
                   help="timm: safetensors for timm.create_model; official: the official I-JEPA .pth.tar layout; "
                        "hf: a transformers IJepaModel / VJEPA2Model folder; torch_export: a .pt2 program that "
                        "plain PyTorch loads (every encoder)")
    p.add_argument("--out", type=Path, default=None, help="output file or folder (default: next to the checkpoint)")
    p.add_argument("--encoder", choices=("eval", "online"), default="eval",
                   help="eval: the encoder evaluation uses (EMA target for I-JEPA/IWM); online: the trained one")
    p.add_argument("--img-size", type=int, default=None, help="the image size the export is for (default: the "
                   "checkpoint's; a RoPE file records none: 256)")
    p.add_argument("--num-frames", type=int, default=None, help="video: the frames per clip the export is for "
                   "(default: the checkpoint's; a RoPE file records none: 16)")
    args = p.parse_args(argv)
    try:
        out = export(args.ckpt, args.out, args.encoder, args.format, args.img_size, args.num_frames)
    except (ConfigError, DataError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hf_class = "VJEPA2Model" if args.format == "hf" and "vjepa2" in (out / "config.json").read_text() else "IJepaModel"
    print(f"wrote {out}\nload it with: " + {
        "timm": f"jepa_zoo.export.load_timm({str(out)!r}) or timm.create_model(...) with the file's metadata",
        "official": "the official I-JEPA code (checkpoint['encoder'] / ['target_encoder'] / ['predictor'])",
        "hf": f"transformers.{hf_class}.from_pretrained({str(out)!r})",
        "torch_export": f"torch.export.load({str(out)!r}).module()"}[args.format])
    return 0


if __name__ == "__main__":
    sys.exit(main())
