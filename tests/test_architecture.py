"""The architecture's rules, checked on the source: layering, no import cycle, a method is one module."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PKG = REPO / "jepa_zoo"
LOWER = ("models", "losses", "masks", "data", "weights")
UPPER = ("jepa_zoo.config", "jepa_zoo.methods", "jepa_zoo.registry")


def modules() -> dict:
    out = {}
    for p in PKG.rglob("*.py"):
        name = ".".join(p.relative_to(REPO).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def imports(path: Path, top_level_only: bool = False) -> set:
    """Every jepa_zoo module ``path`` imports (``from a import b`` counts ``a`` and ``a.b``),
    in functions too unless ``top_level_only``."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("jepa_zoo")}


def test_lower_layers_import_neither_config_nor_methods():
    bad = {name: sorted(m for m in imports(path) if m.startswith(UPPER))
           for name, path in modules().items() if name.split(".")[1:2] and name.split(".")[1] in LOWER}
    assert {k: v for k, v in bad.items() if v} == {}


RUN = ("jepa_zoo.config", "jepa_zoo.registry", "jepa_zoo.runs", "jepa_zoo.callbacks", "jepa_zoo.checkpointing",
       "jepa_zoo.loggers", "jepa_zoo.parallel", "jepa_zoo.optim")


def test_the_run_layer_never_imports_methods():
    """The run layer reaches a method only through the registry (by name) and the module it is given."""
    bad = {name: sorted(m for m in imports(path) if m.startswith("jepa_zoo.methods"))
           for name, path in modules().items() if name.startswith(RUN)}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_import_graph_has_no_cycle():
    mods = modules()
    graph = {m: {d for d in imports(p) if d in mods and d != m} for m, p in mods.items()}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_a_cycle_is_caught(tmp_path, monkeypatch):
    """The cycle check can fail: two modules importing each other (inside functions) are found."""
    pkg = tmp_path / "jepa_zoo"
    pkg.mkdir()
    (pkg / "a.py").write_text("def f():\n    from jepa_zoo.b import g\n")
    (pkg / "b.py").write_text("from jepa_zoo.a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", pkg)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    with pytest.raises(AssertionError):
        test_the_import_graph_has_no_cycle()


def test_every_method_module_declares_itself():
    from jepa_zoo.config import MethodConfig
    from jepa_zoo.methods.base import JEPAModule
    from jepa_zoo.registry import builtin_methods, method_spec

    from test_config import options, preset_module

    # every method module has a yaml, and every yaml is a preset over a method module
    assert builtin_methods() == sorted({preset_module(p) for p in options("method")})
    for name in builtin_methods():
        spec = method_spec(name)
        assert spec.name == name and issubclass(spec.module, JEPAModule) and issubclass(spec.schema, MethodConfig)
        assert spec.schema().name == name  # the schema's defaults are the method's


@pytest.mark.integration
def test_a_method_defined_outside_the_package_trains_through_the_entry_point(tmp_path):
    """tests/toy/toy_method.py + tests/toy/conf/method/toy.yaml, nothing else: online probe,
    monitors, checkpoint, resume=auto and evaluation work for it through the public entry points."""
    toy = REPO / "tests" / "toy"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(toy), os.environ.get("PYTHONPATH", "")]),
           "HYDRA_FULL_ERROR": "0"}
    common = [f"hydra.searchpath=[file://{toy / 'conf'}]", "method=toy", "data=fake", "+backbone.kwargs.depth=1",
              "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1",
              f"hydra.run.dir={tmp_path}"]

    def train(*extra):
        return subprocess.run([sys.executable, "-m", "jepa_zoo.train", *common, *extra], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)

    r = train("trainer.max_steps=2")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    r = train("trainer.max_steps=4", "resume=auto")  # continues to the end of the fake epoch, then validates
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "resume=auto: continuing from" in r.stdout + r.stderr
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == 4 and summary["method"] == "toy"
    for key in ("train/loss", "probe/train_acc", "probe/val_acc", "val/rankme", "val/knn_top1"):
        assert key in summary["metrics"], key
    e = subprocess.run([sys.executable, "-m", "jepa_zoo.eval", f"ckpt={tmp_path / 'checkpoints' / 'last.ckpt'}",
                        "knn.k=[5]", f"hydra.run.dir={tmp_path / 'eval'}"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert e.returncode == 0, (e.stdout + e.stderr)[-3000:]
    assert json.loads(e.stdout.strip().splitlines()[-1])["train_images"] == 64


@pytest.mark.integration
def test_a_module_that_drops_the_required_callbacks_is_refused(monkeypatch, compose_cfg):
    import jepa_zoo.train as train
    from jepa_zoo.methods.lejepa import LeJEPA

    monkeypatch.setattr(LeJEPA, "configure_callbacks", lambda self: [])  # no super(): no skipping, no position
    with pytest.raises(RuntimeError, match="dropped TookBatch, NonFiniteGuard"):
        train.run(compose_cfg("data=fake", "+backbone.kwargs.depth=1", "method.views.num_local=0",
                              "method.proj_hidden_dim=32", "method.num_slices=16", "trainer.max_steps=1",
                              "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"))


@pytest.mark.integration
def test_the_schemas_import_neither_torch_nor_lightning():
    """Configs are checked (and Hydra composes) before any heavy import; the schemas are dependency-free."""
    code = ("import sys, jepa_zoo.config, jepa_zoo.registry\n"
            "heavy = sorted(m for m in ('torch', 'lightning', 'timm', 'torchvision') if m in sys.modules)\n"
            "print(','.join(heavy))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "", (r.stdout, r.stderr[-2000:])
