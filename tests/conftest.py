import os
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import jepa_zoo

CONF_DIR = Path(jepa_zoo.__file__).parent / "conf"
REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """Where the shared datasets are: $JEPA_ZOO_DATA or ../shared/data beside the repo."""
    for cand in (os.environ.get("JEPA_ZOO_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "cifar10-jpg.tar.gz").exists():
            return Path(cand)
    return None


@pytest.fixture
def shared_data() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("shared data not found (set JEPA_ZOO_DATA)")
    return d


@pytest.fixture
def compose_cfg(tmp_path):
    """compose(overrides) -> DictConfig, with run_dir pointed at tmp_path."""

    from jepa_zoo.train import register_resolvers

    register_resolvers()  # what `python -m jepa_zoo.train` does before Hydra composes

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("train", overrides=[f"run_dir={tmp_path}", *overrides])

    return _compose


# -- the unit tier: ``pytest -m "not integration"`` --------------------------------------------------
# A test that launches a process, fits a Trainer or decodes video is an integration test and says so
# (@pytest.mark.integration); in any other test (and the fixtures it sets up) these raise, so the unit
# tier stays fast and the marker stays true.
_REAL: dict = {}


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise RuntimeError(f"a test without @pytest.mark.integration {what} (tests/conftest.py): mark the test "
                           "integration, or keep it in the unit tier without doing this")
    return refuse


def _guards():
    """(owner, attribute, what) for each thing a unit-tier test may not do."""
    import lightning.pytorch as pl

    out = [(subprocess.Popen, "__init__", "launched a process"), (pl.Trainer, "fit", "fitted a Trainer")]
    try:
        import av
    except ImportError:
        return out
    return out + [(av, "open", "decoded video (av.open)")]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.get_closest_marker("integration") is not None:
        return
    for owner, name, what in _guards():
        _REAL[(owner, name)] = getattr(owner, name)
        setattr(owner, name, _refuse(what))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    for (owner, name), real in _REAL.items():
        setattr(owner, name, real)
    _REAL.clear()
