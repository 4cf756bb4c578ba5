"""Data sources are one table (jepa_zoo/data/schema.py DATA_SOURCES), and a source of one's own is one module
(``data.module``): tests/toy/toy_data.py is such a source."""

import sys

import pytest

from conftest import REPO
from jepa_zoo.config import ConfigError
from jepa_zoo.data.schema import DATA_SOURCES, DataConfig, data_source

TOY = str(REPO / "tests" / "toy")


@pytest.fixture
def toy_path(monkeypatch):
    monkeypatch.syspath_prepend(TOY)


def test_every_source_the_table_names_composes_and_says_what_it_gives(compose_cfg):
    from test_config import options

    for name in options("data"):
        cfg = compose_cfg(f"data={name}", "data.root=/nonexistent")
        source = data_source(cfg.data.name)
        assert source is DATA_SOURCES[cfg.data.name]
        assert source.build is None or not source.root  # a source without folders builds its own splits


def test_a_source_of_ones_own_builds_both_splits(toy_path):
    from jepa_zoo.data.datamodule import JEPADataModule

    data = DataConfig(name="stripes", module="toy_data", img_size=16, batch_size=4, num_workers=0,
                      kwargs={"n": 12})
    assert data.source.sample == "image" and not data.video
    dm = JEPADataModule(data, train_transform=None, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 12 and len(dm.val_set) == 3 and dm.num_classes == 2
    x, y = dm.val_set[1]
    assert tuple(x.shape) == (3, 16, 16) and y == 1  # the evaluation transform of images: a centre crop


def test_a_missing_module_or_one_without_a_source_is_one_line(toy_path):
    with pytest.raises(ConfigError, match="data.module: no module nowhere_data"):
        DataConfig(name="x", module="nowhere_data").source
    with pytest.raises(ConfigError, match="data.module: toy_method declares no SOURCE"):
        DataConfig(name="x", module="toy_method").source
    with pytest.raises(ConfigError, match="data.name: must be one of"):
        DataConfig(name="nope")


@pytest.mark.integration
def test_a_method_trains_on_a_source_of_ones_own(compose_cfg, tmp_path, toy_path):
    """``data.module=toy_data`` through ``jepa_zoo.train.run``: no edit to jepa_zoo."""
    import jepa_zoo.train as train
    from test_train_entry import read_metrics

    train.run(compose_cfg("method=lejepa", "data=fake", "data.name=stripes", "+data.module=toy_data",
                          "data.num_classes=null", "+backbone.kwargs.depth=1", "method.views.num_local=0",
                          "method.proj_hidden_dim=32", "method.num_slices=16", "trainer.max_steps=2",
                          "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"))
    assert [r for r in read_metrics(tmp_path) if r.get("probe/val_acc")]
