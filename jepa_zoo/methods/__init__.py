"""Method registry: ``method.name`` -> LightningModule class (imported lazily)."""

from __future__ import annotations

import importlib
from typing import Dict

METHODS: Dict[str, str] = {
    "lejepa": "jepa_zoo.methods.lejepa:LeJEPA",
}


def get_method(name: str) -> type:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; allowed: {', '.join(sorted(METHODS))}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)
