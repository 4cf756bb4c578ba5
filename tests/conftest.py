import os
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
