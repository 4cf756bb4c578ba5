"""Evaluation on any dataset (issue 17): cached features, low-shot, suites, timm baselines, bad input."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import REPO
from test_train_entry import FAST, train

from jepa_zoo.data.datasets import DataError

ENV = {**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def run_eval(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jepa_zoo.eval", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=900)


def last_line(r: subprocess.CompletedProcess) -> str:
    """The error line of a refused command (the eval's ``ERROR`` log line, or the CLI's ``error:``)."""
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "ERROR" in ln or ln.startswith("error:")]
    assert len(lines) == 1, (r.stdout + r.stderr)[-3000:]
    return lines[0]


def clusters(n: int, seed: int, dim: int = 16, classes: int = 4, noise: float = 1.6):
    """Features of ``classes`` overlapping Gaussian clusters (a probe gets most, not all, right)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 1.5
    y = torch.arange(n) % classes
    return centres[y] + noise * torch.randn(n, dim, generator=g), y


@pytest.mark.integration
def test_a_cached_linear_probe_matches_the_probe_on_the_frozen_encoder_given_the_same_features():
    """The same features, the same grid and schedule: the cached heads (tensors) and ProbeModule
    (Lightning, the encoder run every step) reach the same accuracy within noise."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from jepa_zoo.evaluation.linear_cached import fit_linear_grid
    from jepa_zoo.evaluation.probes import ProbeModule

    train_xy, select_xy, test_xy = clusters(800, 0), clusters(200, 1), clusters(400, 2)
    cached = fit_linear_grid(train_xy, select_xy, test_xy, 4, lrs=[1e-3, 1e-2], wds=[0.0], epochs=10, batch_size=64)

    class Features(torch.nn.Module):  # the "encoder": its input is already the feature
        embed_dim = 16

        def forward(self, x):
            return x

    probe = ProbeModule(Features(), 4, "linear", lrs=[1e-3, 1e-2], wds=[0.0])
    trainer = L.Trainer(max_epochs=10, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    torch.manual_seed(0)
    trainer.fit(probe, DataLoader(TensorDataset(*train_xy), batch_size=64, shuffle=True, drop_last=True))
    trainer.limit_val_batches = 1.0
    (sel,) = trainer.validate(probe, DataLoader(TensorDataset(*select_xy), batch_size=256), verbose=False)
    (tst,) = trainer.validate(probe, DataLoader(TensorDataset(*test_xy), batch_size=256), verbose=False)
    online = probe.results(sel, tst)
    assert 50 < cached["top1"] < 100 and 50 < online["top1"] < 100  # a task with errors to make
    assert abs(cached["top1"] - online["top1"]) < 4, (cached["top1"], online["top1"])
    assert cached["steps"] == 10 * (800 // 64)


def test_a_low_shot_set_trains_for_at_least_min_steps():
    from jepa_zoo.evaluation.linear_cached import fit_linear_grid

    few = clusters(20, 0)
    r = fit_linear_grid(few, clusters(50, 1), clusters(50, 2), 4, [1e-2], [0.0], epochs=10, batch_size=256,
                        min_steps=200)
    assert r["steps"] == 200  # one 20-image batch an epoch: 200 epochs, not 10


def test_low_shot_draws_are_per_class_seeded_and_refuse_too_few_images():
    from jepa_zoo.evaluation.lowshot import draw, summarize

    labels = [0] * 30 + [1] * 20 + [2] * 10
    pool = list(range(0, 60, 1))
    a = draw(labels, pool, seed=0, shots=5)
    assert len(a) == 15 and all(sum(labels[i] == c for i in a) == 5 for c in range(3))
    assert a == draw(labels, pool, seed=0, shots=5) and a != draw(labels, pool, seed=1, shots=5)
    f = draw(labels, pool, seed=0, fraction=0.1)
    assert [sum(labels[i] == c for i in f) for c in range(3)] == [3, 2, 1]  # the split's balance kept
    assert set(draw(labels, pool[::2], seed=0, shots=2)) <= set(pool[::2])  # only from the pool
    with pytest.raises(DataError, match="class 'bird' has 10 training images to draw from, fewer than shots=11"):
        draw(labels, pool, seed=0, shots=11, class_names=["cat", "dog", "bird"])
    with pytest.raises(DataError, match="class 'bird' has 0 training images"):  # a class the pool lacks
        draw(labels, pool[:50], seed=0, shots=1, class_names=["cat", "dog", "bird"])
    with pytest.raises(DataError, match="fraction: class '2' has 0"):
        draw(labels, pool[:50], seed=0, fraction=0.5)
    s = summarize([{"top1": 50.0, "best_head": "a"}, {"top1": 60.0, "best_head": "b"}])
    assert s["top1"] == 55.0 and abs(s["top1_std"] - 7.0710678) < 1e-6 and len(s["per_seed"]) == 2


def test_features_are_extracted_once_per_image():
    from torch.utils.data import TensorDataset

    from jepa_zoo.evaluation.features import FeatureCache

    seen = []

    class Enc(torch.nn.Module):
        def forward(self, x):
            seen.append(len(x))
            return x * 2

    ds = TensorDataset(torch.arange(10.0)[:, None], torch.arange(10))
    cache = FeatureCache(Enc(), batch_size=4, num_workers=0)
    f, y = cache.get("train", ds, [3, 1, 5])
    assert f[:, 0].tolist() == [6.0, 2.0, 10.0] and y.tolist() == [3, 1, 5]
    f, y = cache.get("train", ds, [5, 7, 1])  # only 7 is new
    assert f[:, 0].tolist() == [10.0, 14.0, 2.0] and y.tolist() == [5, 7, 1]
    assert sum(seen) == 4 == cache.images


def test_datasets_an_evaluation_cannot_use_are_refused_by_name(tmp_path):
    from jepa_zoo.data.schema import DataConfig
    from jepa_zoo.evaluation.eval_data import check_labels, find_test_split

    class DS(list):
        classes = ["a", "b"]

    with pytest.raises(DataError, match="test split is empty"):
        check_labels(DS([1, 2]), DS(), [0, 1], "r")
    with pytest.raises(DataError, match="not in class folders"):
        check_labels(DS([1, 2]), DS([1]), [-1, -1], "r")
    with pytest.raises(DataError, match="has 1 class"):
        check_labels(DS([1, 2]), DS([1]), [0, 0], "r")
    other = DS([1])
    other.classes = ["a", "c"]
    with pytest.raises(DataError, match=r"only in training: \['b'\]; only in test: \['c'\]"):
        check_labels(DS([1, 2]), other, [0, 1], "r")
    with pytest.raises(DataError, match="the test images are not in class folders"):
        check_labels(DS([1, 2]), DS([1]), [0, 1], "r", test_labels=[-1])
    assert check_labels(DS([1, 2]), DS([1]), [0, 1], "r", test_labels=[1]) == 2
    for split in ("train", "validation"):
        (tmp_path / "d" / split / "x").mkdir(parents=True)
    assert find_test_split(DataConfig(name="folder", root=str(tmp_path / "d"))).val_split == "validation"
    with pytest.raises(DataError, match="no test split: looked for val, test, validation"):
        find_test_split(DataConfig(name="folder", root=str(tmp_path / "d" / "train")))


def odd_images(root: Path, classes=("cat", "dog"), per_class=4) -> Path:
    """Greyscale, RGBA and palette images of odd sizes in train/ and validation/ (no val/ or test/)."""
    modes = [("L", (40, 50)), ("RGBA", (70, 30)), ("P", (33, 45)), ("RGB", (64, 64))]
    for split in ("train", "validation"):
        for ci, c in enumerate(classes):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                mode, size = modes[i % len(modes)]
                Image.new(mode, size, color=(60 * ci + 10 * i) % 255 if mode in ("L", "P") else
                          tuple([60 * ci, 10 * i, 100, 200][:len(mode)])).save(root / split / c / f"{i}.png")
    return root


@pytest.mark.integration
def test_a_timm_baseline_on_a_folder_of_odd_images_and_its_bad_inputs(tmp_path):
    """ckpt=timm:<name> on a folder whose test split is 'validation', with greyscale / RGBA / palette
    images of any size; then each bad input is one line, exit 2, no result file."""
    data = odd_images(tmp_path / "odd")
    common = ["ckpt=timm:resnet18", "data=folder", f"data.root={data}", "data.img_size=32", "num_workers=0",
              "knn.k=[3]"]
    r = run_eval(*common, f"hydra.run.dir={tmp_path}/ok")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    (path,) = (tmp_path / "ok").glob("eval_knn_on-odd_32px_s*_random.json")  # no weights: random; s*: knn.k
    record = json.loads(path.read_text())
    assert record["split"] == "validation" and record["img_size"] == 32 and record["train_images"] == 8
    assert "evaluating on split 'validation'" in r.stdout + r.stderr
    r = run_eval(*common, "protocol=linear", "shots=5", "seeds=2", f"hydra.run.dir={tmp_path}/shots")
    assert r.returncode == 2 and "fewer than shots=5" in last_line(r) and "class 'cat'" in last_line(r)
    r = run_eval(*common[:1], "data=folder", f"data.root={data / 'train'}", "data.train_split=cat",
                 "data.val_split=dog", "data.img_size=32", f"hydra.run.dir={tmp_path}/flat")  # no class folders
    assert r.returncode == 2 and "not in class folders" in last_line(r), (r.stdout + r.stderr)[-2000:]
    r = run_eval(*common, "shots=abc", f"hydra.run.dir={tmp_path}/type")
    assert r.returncode == 2 and last_line(r).endswith("shots: must be a whole number or null, got 'abc'")
    r = run_eval("ckpt=timm:resnet_eighteen", *common[1:], f"hydra.run.dir={tmp_path}/name")
    assert r.returncode == 2 and "resnet_eighteen" in last_line(r) and "Traceback" not in r.stdout + r.stderr
    one = tmp_path / "one"
    odd_images(one, classes=("cat",))
    r = run_eval(*common[:2], f"data.root={one}", *common[3:], f"hydra.run.dir={tmp_path}/oneclass")
    assert r.returncode == 2 and "1 class" in last_line(r)
    for bad in ("shots", "flat", "type", "name", "oneclass"):  # a refused evaluation leaves no run dir, so no result
        assert not (tmp_path / bad).exists()


@pytest.mark.integration
@pytest.mark.data
def test_a_cifar10_checkpoint_transfers_to_the_clothing_photos(tmp_path, shared_data):
    """A checkpoint trained on CIFAR-10 (32 px): kNN and linear on the clothing photos (160 px,
    evaluated at the checkpoint's 32 px) and on CIFAR-10; a 5-shot probe over 3 seeds."""
    run_dir = tmp_path / "run"
    cifar = ["data=cifar10", f"data.root={shared_data}"]
    r = train(run_dir, *FAST[1:], *cifar, "trainer.max_steps=2", "data.batch_size=16", "trainer.limit_val_batches=1")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    clothing = ["data=folder", f"data.root={shared_data / 'clothing-small-160.tar'}", "train_limit=300",
                "test_limit=100", "num_workers=0"]
    # (kNN only here: the linear protocol runs below, 5-shot; both read the same features at 32 px)
    r = run_eval(f"ckpt={ckpt}", *clothing, "protocol=knn", f"hydra.run.dir={tmp_path}/knn")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    rec = json.loads((ckpt.parent / "eval_knn_on-clothing-small-160_train300_test100_trained.json").read_text())
    assert rec["img_size"] == 32 and rec["split"] == "test" and rec["queries"] == 100
    assert rec["data"] == "clothing-small-160" and 0 <= rec["knn20_top1"] <= 100
    r = run_eval(f"ckpt={ckpt}", *cifar, "train_limit=1000", "test_limit=200", "protocol=linear", "shots=5", "seeds=3",
                 "num_workers=0", f"hydra.run.dir={tmp_path}/shots")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    rec = json.loads((ckpt.parent / "eval_linear_5shot_3seeds_on-cifar10_train1000_test200_trained.json").read_text())
    assert rec["shots"] == 5 and rec["seeds"] == 3 and rec["train_images"] == 50 and len(rec["per_seed"]) == 3
    tops = [s["top1"] for s in rec["per_seed"]]
    assert abs(rec["top1"] - sum(tops) / 3) < 1e-9 and rec["top1_std"] > 0  # three different draws
    r = run_eval(f"ckpt={ckpt}", "train_limit=500", "test_limit=200", "num_workers=0", f"hydra.run.dir={tmp_path}/own")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert json.loads((ckpt.parent / "eval_knn_train500_test200_trained.json").read_text())["data"] == "cifar10"


@pytest.mark.integration
def test_a_suite_table_over_a_two_run_sweep_with_one_random_baseline(tmp_path):
    """suite=<name> over a sweep dir: a row per run plus one random-init row (both runs share the
    architecture and seed), a column per entry, in Markdown, CSV and JSON; the report includes it."""
    sweep = tmp_path / "sweep"
    r = subprocess.run([sys.executable, "-m", "jepa_zoo.train", "--multirun", *FAST, "trainer.max_steps=1",
                        "method.lambd=0.01,0.1", f"hydra.sweep.dir={sweep}"], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    conf = tmp_path / "conf" / "suite"
    conf.mkdir(parents=True)
    # a fine-tuning entry first: it trains its encoder, which must not be the one later entries extract with
    (conf / "mini.yaml").write_text("# @package suite\nname: mini\nbaseline: true\nentries:\n"
                                    "  fake_ft: [data=fake, protocol=finetune, finetune.max_steps=2, finetune.lr=0.5]\n"
                                    "  fake_knn: [data=fake, protocol=knn]\n"
                                    "  fake_2shot: [data=fake, protocol=linear, shots=2, seeds=2]\n"
                                    "  fake_48px: [data=fake, data.img_size=48, protocol=knn]\n")
    (conf / "typo.yaml").write_text("# @package suite\nname: typo\nentries:\n  ok: [data=fake]\n"
                                    "  bad: [data=fake, protocl=knn]\n")
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    r = run_eval("suite=typo", f"ckpt={sweep}", search, f"hydra.run.dir={tmp_path}/typo")
    assert r.returncode == 2 and "suite.entries.bad: " in last_line(r) and "protocl" in last_line(r)
    assert not (sweep / "suite_typo.md").exists()
    r = run_eval("suite=mini", f"ckpt={sweep}", "knn.k=[5]", "num_workers=0", search, f"hydra.run.dir={tmp_path}/suite")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    table = json.loads((sweep / "suite_mini.json").read_text())
    assert [(row["run"], row["init"]) for row in table["rows"]] == [
        ("0_method.lambd=0.01", "trained"), ("0_method.lambd=0.01", "random"), ("1_method.lambd=0.1", "trained")]
    for row in table["rows"]:
        assert row["records"]["fake_knn"]["metric"] == "knn5_top1" and row["records"]["fake_2shot"]["seeds"] == 2
    first = sweep / "0_method.lambd=0.01" / "checkpoints"
    (path,) = first.glob("eval_knn_on-fake_48px_s*_trained.json")  # s*: the command's knn.k
    assert json.loads(path.read_text())["img_size"] == 48  # the entry's
    md = (sweep / "suite_mini.md").read_text()
    assert "| run | init | fake_ft | fake_knn | fake_2shot | fake_48px |" in md and " ± " in md
    header = (sweep / "suite_mini.csv").read_text().splitlines()[0]
    assert header == "run,init,fake_ft,fake_knn,fake_2shot,fake_48px,fake_ft_std,fake_knn_std,fake_2shot_std,fake_48px_std"
    # the kNN entry after the fine-tuning one scored the checkpoint's own encoder: as kNN alone does
    alone = run_eval(f"ckpt='{first / 'last.ckpt'}'", "data=fake", "knn.k=[5]", "num_workers=0",
                     f"hydra.run.dir={tmp_path}/alone")
    assert alone.returncode == 0, alone.stderr[-2000:]
    knn_alone = json.loads(alone.stdout.strip().splitlines()[-1])["knn5_top1"]
    assert table["rows"][0]["records"]["fake_knn"]["value"] == knn_alone
    r = subprocess.run([sys.executable, "-m", "jepa_zoo.report", str(sweep)], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = (sweep / "report.md").read_text()
    assert "## Suite `mini`" in report and re.search(r"eval/knn_on-fake_s[0-9a-f]{8}/knn5_top1", report)  # knn.k


def test_spearman_of_the_loss_against_accuracy():
    from jepa_zoo.report_sections import spearman

    x, y = [3.0, 1.0, 2.0, 2.0, 5.0], [1.0, 2.0, 2.0, 3.0, 0.0]  # ties on both sides
    assert abs(spearman(x, y) - (-0.7631578947368421)) < 1e-12  # scipy.stats.spearmanr(x, y).statistic
    assert spearman([1, 2, 3], [3, 2, 1]) == -1.0 and spearman([1, 2], [2, 1]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None
