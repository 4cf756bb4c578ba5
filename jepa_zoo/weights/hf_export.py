"""Hugging Face folders of jepa_zoo encoders (``python -m jepa_zoo.export --format hf``).

Each writer returns ``write(folder)``, which :func:`jepa_zoo.export.export` runs on a temporary
folder before renaming it.  A folder holds what ``from_pretrained`` reads offline:

* ``config.json`` and ``model.safetensors`` (``transformers``' own ``save_pretrained``): an
  ``IJepaModel`` (an image ViT: :mod:`jepa_zoo.weights.hf_ijepa`) or a ``VJEPA2Model`` (a V-JEPA 2
  video ViT with its predictor: :mod:`jepa_zoo.weights.hf_vjepa2`);
* ``preprocessor_config.json``, written by ``transformers``' processor classes, so that
  ``AutoImageProcessor`` / ``AutoVideoProcessor.from_pretrained(folder)`` give the evaluation's
  preprocessing: the short side resized (bilinear), a centre crop of the size the folder is for, the
  encoder's mean and std.  Images: a ``BitImageProcessor`` (short side to ``size / eval_crop_ratio``,
  as jepa_zoo's evaluation); clips: transformers' ``VJEPA2VideoProcessor``, whose resize is fixed
  at ``crop_size · 256 / 224`` (the ratio 0.875 of jepa_zoo's default, rounded down).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

Writer = Callable[[Path], None]


def _transformers(what: str) -> Any:
    try:
        import transformers
    except ImportError:
        raise ValueError(f"--format hf of {what} needs transformers: pip install 'jepa_zoo[hf]'") from None
    return transformers


def image_processor(size: int, crop_ratio: float, mean: Sequence[float], std: Sequence[float]) -> Any:
    """The ``BitImageProcessor`` of jepa_zoo's evaluation preprocessing at ``size`` px."""
    from transformers import BitImageProcessor
    from transformers.image_utils import PILImageResampling

    return BitImageProcessor(do_resize=True, size={"shortest_edge": round(size / crop_ratio)},
                             resample=PILImageResampling.BILINEAR, do_center_crop=True,
                             crop_size={"height": size, "width": size}, do_rescale=True, do_normalize=True,
                             image_mean=list(mean), image_std=list(std), do_convert_rgb=True)


def video_processor(size: int, mean: Sequence[float], std: Sequence[float]) -> Any:
    """``VJEPA2VideoProcessor`` for ``size``-px crops with the encoder's mean and std."""
    from transformers import VJEPA2VideoProcessor

    return VJEPA2VideoProcessor(crop_size={"height": size, "width": size}, image_mean=list(mean), image_std=list(std))


def ijepa_writer(encoder: nn.Module, state: dict, size: int, data: Any) -> Writer:
    """An ``IJepaModel`` folder of a ViT ``encoder`` for ``size``-px images from its timm state dict
    ``state`` (:func:`jepa_zoo.export.timm_export`: the sin-cos of that grid stored as its position
    embeddings), with ``data``'s preprocessing."""
    from jepa_zoo.weights.hf_ijepa import hf_config, hf_state, split

    transformers = _transformers("an image ViT")
    depth, mlp = split(state)
    hf = transformers.IJepaModel(transformers.IJepaConfig(**hf_config(
        encoder.embed_dim, depth, encoder.num_heads, mlp, size, encoder.patch_size)))
    hf.load_state_dict(hf_state(state, state["pos_embed"]), strict=True)
    processor = image_processor(size, data.eval_crop_ratio, data.mean, data.std)

    def write(folder: Path) -> None:
        hf.save_pretrained(str(folder))
        processor.save_pretrained(str(folder))

    return write


def vjepa2_writer(predictor: nn.Module, encoder: nn.Module, size: int, frames: int, data: Any) -> Writer:
    """A ``VJEPA2Model`` folder of a V-JEPA 2 ``encoder`` and its ``predictor`` for clips of ``frames``
    frames at ``size`` px (``crop_size`` and ``frames_per_clip``: transformers derives every token's
    RoPE position from them), with ``data``'s mean and std."""
    from jepa_zoo.weights import hf_vjepa2

    transformers = _transformers("a video model (transformers >= 4.53)")
    if encoder.pos != "rope" or encoder.rope_layout != "vjepa2":
        raise ValueError("--format hf writes V-JEPA 2 models (backbone.pos=rope with the official rope_layout=vjepa2); "
                         f"this one has backbone.pos={encoder.pos}, rope_layout={encoder.rope_layout}: export it "
                         "with --format torch_export")
    arch = {"embed_dim": encoder.embed_dim, "depth": len(encoder.model.blocks), "num_heads": encoder.num_heads,
            "patch_size": encoder.patch_size, "tubelet_size": encoder.tubelet_size,
            "mlp_ratio": encoder.model.blocks[0].mlp.fc1.out_features / encoder.embed_dim,
            "pred_dim": predictor.embed.out_features, "pred_depth": len(predictor.blocks),
            "num_mask_tokens": len(predictor.mask_tokens)}
    config = hf_vjepa2.config(arch, frames, size, predictor.blocks[0].attn.num_heads)
    hf = transformers.VJEPA2Model(transformers.VJEPA2Config(**config))
    state = hf_vjepa2.write({k: v.detach().cpu() for k, v in encoder.model.state_dict().items()},
                            {k: v.detach().cpu() for k, v in predictor.state_dict().items()})
    hf.load_state_dict(state, strict=True)
    processor = video_processor(size, data.mean, data.std)

    def write(folder: Path) -> None:
        hf.save_pretrained(str(folder))
        processor.save_pretrained(str(folder))

    return write
