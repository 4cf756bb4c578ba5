"""Method registry: ``method.name`` -> LightningModule class (imported lazily)."""

from __future__ import annotations

import importlib
from typing import Dict, Optional

METHODS: Dict[str, str] = {
    "lejepa": "jepa_zoo.methods.lejepa:LeJEPA",
    "ijepa": "jepa_zoo.methods.ijepa:IJEPA",
    "iwm": "jepa_zoo.methods.iwm:IWM",
}


def get_method(name: str) -> type:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; allowed: {', '.join(sorted(METHODS))}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_model(cfg, num_classes: Optional[int] = None):
    """Seed, then build the method's LightningModule: the same weights for the same config and seed
    (``jepa_zoo.eval init=random`` relies on this to rebuild a run's initial encoder)."""
    import lightning as L

    L.seed_everything(cfg.seed, workers=True)
    return get_method(cfg.method.name)(cfg, num_classes=num_classes)
