"""The methods: each module here declares ``METHOD = MethodSpec(...)`` (:mod:`jepa_zoo.registry`)."""

from __future__ import annotations

from typing import Optional


def get_method(name: str, module: Optional[str] = None) -> type:
    """The LightningModule class of method ``name`` (declared in ``module``, default ``jepa_zoo.methods.<name>``)."""
    from jepa_zoo.registry import method_spec

    return method_spec(name, module).module


def build_model(cfg, num_classes: Optional[int] = None):
    """Seed, then build the method's LightningModule: the same weights for the same config and seed
    (``jepa_zoo.eval init=random`` relies on this to rebuild a run's initial encoder)."""
    import lightning as L

    L.seed_everything(cfg.seed, workers=True)
    return get_method(cfg.method.name, cfg.method.module)(cfg, num_classes=num_classes)
