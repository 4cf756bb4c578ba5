"""The method registry, built from the method modules themselves.

A method is one module plus one yaml.  The module declares everything about itself in a
module-level ``METHOD = MethodSpec(...)``: its name, its LightningModule, its config schema (a
dataclass deriving from :class:`jepa_zoo.config.MethodConfig`, defaults included) and the
maskings it accepts.  ``conf/method/<preset>.yaml`` selects it by ``name``; the module is
``jepa_zoo.methods.<name>`` unless the yaml's ``module`` names another importable module (a
method that lives outside this package, e.g. a research prototype or a test's toy method)::

    # my_project/conf/method/mine.yaml          (hydra.searchpath=[file://my_project/conf])
    name: mine
    module: my_project.mine                     # defines METHOD = MethodSpec("mine", Mine, MineConfig)

Nothing else is edited to add a method: the schema check, the masking check, training,
evaluation and export all look the method up here.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from jepa_zoo.errors import ConfigError

PACKAGE = "jepa_zoo.methods"
# what a method with a target encoder and a predictor takes (I-JEPA, IWM, V-JEPA): its paper's EMA first
COLLAPSES_WITH_TARGETS = ("ema", "frozen", "sigreg", "vicreg")


@dataclass(frozen=True)
class MethodSpec:
    """What a method module declares about itself (its module-level ``METHOD``)."""

    name: str
    module: type  # the LightningModule class (a jepa_zoo.methods.base.JEPAModule)
    schema: type  # the dataclass of its ``method:`` section
    maskings: Tuple[str, ...] = ("none",)  # the masking=... values it accepts
    retired: Tuple[str, ...] = ()  # keys of its section that older checkpoints hold; dropped when they load
    panels: Tuple[Any, ...] = ()  # its own dashboard sections (jepa_zoo.panels.Section), beside its metrics
    video: bool = False  # it trains on clips (a video data group), not on images
    inputs: str = "images"  # its batch: images | views | pair | clip | frames (jepa_zoo.models.parts.INPUT_KINDS)
    collapses: Tuple[str, ...] = ("none",)  # the collapse=... it takes, its default first (none: its own business)
    collapse_refusals: Dict[str, str] = field(default_factory=dict)  # collapse=<name> it refuses: why (the error says)

    def __post_init__(self) -> None:  # video=True (declared before inputs existed) and inputs="clip" say one thing
        if self.video and self.inputs == "images":
            object.__setattr__(self, "inputs", "clip")
        object.__setattr__(self, "video", self.inputs == "clip")


def builtin_methods() -> List[str]:
    """The names of the methods in ``jepa_zoo.methods`` (every module there that declares ``METHOD``)."""
    pkg = importlib.import_module(PACKAGE)
    names = []
    for info in pkgutil.iter_modules(pkg.__path__):
        spec = getattr(importlib.import_module(f"{PACKAGE}.{info.name}"), "METHOD", None)
        if isinstance(spec, MethodSpec):
            names.append(spec.name)
    return sorted(names)


def method_spec(name: Optional[str], module: Optional[str] = None) -> MethodSpec:
    """The :class:`MethodSpec` of method ``name``, from ``module`` (default ``jepa_zoo.methods.<name>``).

    Raises:
        ConfigError: naming ``method.name`` / ``method.module`` when there is no such method."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"method.name: missing; built-in methods: {', '.join(builtin_methods())}")
    path = module or f"{PACKAGE}.{name}"
    try:
        mod = importlib.import_module(path)
    except ModuleNotFoundError as e:
        if e.name is None or not (path == e.name or path.startswith(e.name + ".")):  # a module it imports is missing
            raise
        key = "method.module" if module else "method.name"
        raise ConfigError(f"{key}: unknown method {name!r} (no module {path}); built-in methods: "
                          f"{', '.join(builtin_methods())} (a method of your own: module: <importable module> in its yaml, "
                          f"or +method.module=<importable module>)"
                          ) from None
    spec = getattr(mod, "METHOD", None)
    if not isinstance(spec, MethodSpec):
        key = "method.module" if module else "method.name"
        raise ConfigError(f"{key}: {path} declares no METHOD = MethodSpec(...); built-in methods: "
                          f"{', '.join(builtin_methods())}")
    if spec.name != name:
        raise ConfigError(f"method.name: {path} declares the method {spec.name!r}, not {name!r}")
    return spec


def register_schemas() -> None:
    """Put every built-in method's schema in Hydra's ConfigStore as ``schema/method/<name>``, the base
    its ``conf/method/<name>.yaml`` extends (``defaults: [/schema/method/<name>@_here_, _self_]``): the
    defaults are written once, in the schema, and every key can be overridden on the command line.
    Called before Hydra composes (``jepa_zoo.train.register_resolvers``)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    pkg = importlib.import_module(PACKAGE)
    for info in pkgutil.iter_modules(pkg.__path__):
        spec = getattr(importlib.import_module(f"{PACKAGE}.{info.name}"), "METHOD", None)
        if isinstance(spec, MethodSpec):
            store.store(group="schema/method", name=spec.name, node=spec.schema)
    from jepa_zoo.masks.schema import MASKINGS
    from jepa_zoo.models.parts import CollapseConfig

    store.store(group="schema", name="collapse", node=CollapseConfig)
    for name, masking in MASKINGS.items():
        store.store(group="schema/masking", name=name, node=masking.schema)
