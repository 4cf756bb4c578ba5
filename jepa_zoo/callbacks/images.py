"""Callback: image panels at the end of validation, for every logger and as PNG files.

Panels (see :mod:`jepa_zoo.evaluation.visual`):

* the method's own, from ``JEPAModule.image_panels``: I-JEPA and IWM draw ``masks`` (their
  multi-block collator on validation images), IWM also ``pairs`` (its training transform's
  source view, target view and action, on validation images with their normalisation undone,
  so the eval resize / centre crop is kept);
* ``retrievals`` (every method): validation queries and their nearest validation neighbours by
  cosine similarity of ``eval_encoder`` features (clips are shown by their middle frame).

Each panel goes to W&B (``images/<name>``), TensorBoard (tag ``images/<name>``) and, always, to
``<run dir>/images/<name>_step<global step>.png`` (CSV-logger runs have nothing else).  Rank 0
only; masks and views come from a fixed seed inside a forked RNG, so successive panels show the
same draws and the training random streams are left untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torch import Tensor
from torchvision.transforms.v2.functional import to_pil_image

from jepa_zoo.evaluation.visual import retrievals_panel
from jepa_zoo.panels import Media, Section

# every method's image panel; a method's own (masks, pairs) are in its MethodSpec's panels
PANELS = (Section("Images", (Media(("images/retrievals",), "nearest validation neighbours"),)),)


class ImageLogger(L.Callback):
    def __init__(self, every_n_epochs: int = 1, num_images: int = 8, *, k: int = 5, bank_size: int = 128,
                 seed: int = 0):
        """``num_images`` rows per panel; retrieval searches the first ``bank_size`` validation
        images (queries: the first ``num_images``) for ``k`` neighbours each."""
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.k = k
        self.bank_size = max(bank_size, num_images)
        self.seed = seed
        self.min_size = 128  # images smaller than this are upscaled by an integer factor in the panels

    # -- inputs ---------------------------------------------------------------------------
    @staticmethod
    def _stats(dm) -> Tuple[Tensor, Tensor]:
        return torch.tensor(dm.cfg.mean).view(1, 3, 1, 1), torch.tensor(dm.cfg.std).view(1, 3, 1, 1)

    def _denorm(self, x: Tensor, dm) -> Tensor:
        mean, std = self._stats(dm)
        return (x.cpu() * std + mean).clamp(0, 1)

    @staticmethod
    def still(x: Tensor) -> Tensor:
        """What a panel shows of a batch: images ``[n, C, H, W]`` as they are; of clips
        ``[n, C, T, H, W]`` (``[n, clips, C, T, H, W]``) the middle frame (of the first clip)."""
        if x.dim() == 6:
            x = x[:, 0]
        return x[:, :, x.shape[2] // 2] if x.dim() == 5 else x

    @torch.no_grad()
    def _features(self, pl_module, x: Tensor, batch: int) -> Tensor:
        enc = pl_module.eval_encoder
        dtype = next(enc.parameters()).dtype
        return torch.cat([enc(c.to(pl_module.device, dtype)).float().cpu() for c in x.split(batch)])

    # -- panels ---------------------------------------------------------------------------
    def panels(self, pl_module, dm, step: Optional[int] = None) -> Dict[str, Tensor]:
        """The uint8 ``[3, H, W]`` panels that apply to ``pl_module``, by name."""
        n_bank = min(self.bank_size, len(dm.val_set))
        items = [dm.val_set[i] for i in range(n_bank)]
        x = torch.stack([img for img, _ in items])  # normalised, as the encoder sees them
        labels = torch.tensor([int(y) for _, y in items])
        raw = self._denorm(self.still(x), dm)
        n = min(self.num_images, n_bank)
        up = max(1, self.min_size // raw.shape[-2])  # small images (CIFAR) drawn larger, pixels kept sharp
        shown = F.interpolate(raw, scale_factor=up, mode="nearest") if up > 1 else raw
        with torch.random.fork_rng(devices=[]):  # the CPU generator only (which collators and transforms use)
            torch.default_generator.manual_seed(self.seed)
            out: Dict[str, Tensor] = dict(pl_module.image_panels(raw[:n], shown[:n], up, step))
        if n_bank >= 2:
            feats = self._features(pl_module, x, dm.cfg.val_batch_size or dm.cfg.batch_size)
            out["retrievals"] = retrievals_panel(shown[:n], shown, feats[:n], feats, self.k, torch.arange(n),
                                                 labels[:n], labels, getattr(dm.val_set, "classes", None), step)
        return out

    # -- output ---------------------------------------------------------------------------
    @staticmethod
    def send(trainer: L.Trainer, name: str, image: Tensor) -> Path:
        """``image`` (uint8 ``[3, H, W]``) to every W&B / TensorBoard logger of ``trainer`` as
        ``images/<name>``, and to ``<default_root_dir>/images/<name>_step<step>.png``."""
        key, step = f"images/{name}", trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=key, images=[image.permute(1, 2, 0).numpy()], step=step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(key, image, step)
        path = Path(trainer.default_root_dir) / "images" / f"{name}_step{step}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        to_pil_image(image).save(path, format="PNG")
        return path

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        from jepa_zoo.parallel import is_sharded

        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        # sharded weights (fsdp) are gathered collectively: every process runs the forwards, rank 0 sends
        if not trainer.is_global_zero and not is_sharded(pl_module):
            return
        dm = trainer.datamodule
        if getattr(dm, "val_set", None) is None or len(dm.val_set) == 0:
            return  # no validation split: nothing to show
        panels = self.panels(pl_module, dm, trainer.global_step)
        if trainer.is_global_zero:
            for name, image in panels.items():
                self.send(trainer, name, image)
