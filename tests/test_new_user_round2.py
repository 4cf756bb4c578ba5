"""What a new user found in the second round (issue 33), through the entry points with the defaults a
user types where the launch is what is tested, in-process otherwise."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from test_new_user import ENV, run
from test_train_entry import FAST, train


def one_line_refusal(r: subprocess.CompletedProcess, needle: str) -> None:
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in out, out[-3000:]
    assert needle in out, out[-3000:]


@pytest.mark.integration
def test_eval_without_a_checkpoint_says_what_to_give(tmp_path):
    r = run("jepa_zoo.eval", cwd=tmp_path)
    one_line_refusal(r, "ckpt: which weights to evaluate? ckpt=<run dir>/checkpoints/last.ckpt")
    assert not (tmp_path / "outputs").exists()  # nothing left behind


@pytest.mark.integration
def test_a_run_dir_under_a_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = train(tmp_path / "afile" / "run", *FAST)
    one_line_refusal(r, f"hydra.run.dir: cannot make {tmp_path}/afile/run there: {tmp_path}/afile is a file")
    # the default run dir (outputs/ under the working dir) too, and a sweep's
    (tmp_path / "outputs").write_text("x")
    r = run("jepa_zoo.train", *FAST, cwd=tmp_path)
    one_line_refusal(r, f"hydra.run.dir: cannot make outputs there: {tmp_path}/outputs is a file")
    r = run("jepa_zoo.eval", "ckpt=x", f"hydra.run.dir={tmp_path}/afile/e", cwd=tmp_path)
    one_line_refusal(r, "hydra.run.dir: cannot make")


def test_an_output_dir_that_cannot_be_written_is_named(tmp_path, monkeypatch, capsys):
    """A read-only folder (as root, only a read-only mount refuses: simulated here)."""
    import tempfile

    from jepa_zoo.cli import check_paths

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    check_paths([f"hydra.run.dir={tmp_path}/a/b"])  # writable: passes, and leaves nothing
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(SystemExit) as e:
        check_paths(["--multirun", f"hydra.sweep.dir={tmp_path}/s/${{now:%H}}", "method.lambd=0.1,0.2"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: hydra.sweep.dir: cannot make {tmp_path}/s/${{now:%H}} there: {tmp_path} is not writable "
        "(Permission denied); give another hydra.sweep.dir=<dir>")


@pytest.mark.integration
def test_a_training_folder_with_one_class_is_refused_in_one_line(tmp_path):
    from PIL import Image

    root = tmp_path / "data"
    (root / "cats").mkdir(parents=True)
    for i in range(8):
        Image.new("RGB", (40, 40), (i * 30, 0, 0)).save(root / "cats" / f"{i}.jpg")
    r = train(tmp_path / "run", "data=folder", f"data.root={root}", "backbone=resnet18", "backbone.cifar_stem=true",
              "data.img_size=32", "data.batch_size=4", "data.num_workers=0", "trainer.max_steps=1")
    one_line_refusal(r, f"data.root: {root} holds one class folder: the online probe needs 2 or more classes")
    assert not (tmp_path / "run").exists()  # a refused launch leaves no run dir (not even a logger's csv/)


def test_the_verdict_on_trained_against_init_is_a_paired_test():
    from jepa_zoo.callbacks.learned import verdict

    def hits(right_only_trained: int, right_only_init: int, both: int, n: int = 1000):
        t = torch.zeros(n, dtype=torch.bool)
        i = torch.zeros(n, dtype=torch.bool)
        t[:right_only_trained] = True
        i[right_only_trained:right_only_trained + right_only_init] = True
        t[-both:] = i[-both:] = True
        return t, i

    # +1.5 points on 1,000 queries with 249 discordant pairs: within noise (band 1.96*sqrt(249)/10 = 3.09)
    assert verdict(*hits(132, 117, 200)).startswith("+1.50 points: within the noise band ±3.09 on 1000 queries")
    assert verdict(*hits(160, 100, 200)).endswith("it learned")  # 60 > 1.96*sqrt(260) = 31.6
    assert verdict(*hits(100, 160, 200)).endswith("worse than its initialisation")
    assert "within the noise band ±0.00" in verdict(*hits(0, 0, 5))  # identical answers


def test_the_progress_bar_total_follows_the_time_budget():
    """Under trainer.max_time the epoch ends when the time does: the total is the batches the budget
    allows (it showed 7/781 and an ETA of hours in a 2-minute run)."""
    from lightning.pytorch.callbacks import Timer

    from jepa_zoo.callbacks.progress import StepProgressBar

    timer = Timer(duration="00:00:02:00")
    timer._start_time["train"] = 0.0  # started: time_remaining is known
    bar = StepProgressBar()
    bar._train_progress_bar = SimpleNamespace(total=781, n=7, refresh=lambda: None)
    trainer = SimpleNamespace(callbacks=[timer], global_step=7, accumulate_grad_batches=1, num_training_batches=781)
    bar._trainer = trainer
    module = SimpleNamespace(total_steps=20.4)
    with pytest.MonkeyPatch.context() as mp:  # Lightning's own update is not under test
        from lightning.pytorch.callbacks import TQDMProgressBar

        mp.setattr(TQDMProgressBar, "on_train_batch_end", lambda *a, **k: None)
        bar.on_train_batch_end(trainer, module, None, None, batch_idx=6)
        assert bar.train_progress_bar.total == 7 + 14  # 14 steps left of 20.4
        module.total_steps = 5000.0
        bar.on_train_batch_end(trainer, module, None, None, batch_idx=6)
        assert bar.train_progress_bar.total == 781  # capped by the epoch
        trainer.callbacks = []  # no time budget: Lightning's total stays
        bar.train_progress_bar.total = 100
        bar.on_train_batch_end(trainer, module, None, None, batch_idx=6)
        assert bar.train_progress_bar.total == 100


@pytest.mark.integration
def test_a_sigterm_during_the_final_knn_skips_it_and_ends_the_run(tmp_path):
    """The end-of-run kNN is skipped at a SIGTERM (under SLURM a kill follows): the test's feature
    extraction sends the SIGTERM, then sleeps a minute and would leave a marker file if not stopped."""
    marker = tmp_path / "slept"
    code = ("import os, runpy, signal, sys, time; from pathlib import Path\n"
            "import jepa_zoo.evaluation.features as f\n"
            "def get(self, *a, **k):\n"
            "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(60)\n"
            f"    Path({str(marker)!r}).write_text('not stopped')\n"
            "f.FeatureCache.get = get\n"
            f"sys.argv = ['train.py', {f'hydra.run.dir={tmp_path}/run'!r}, *{FAST!r}, 'monitors.final_knn=64']\n"
            "runpy.run_module('jepa_zoo.train', run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not marker.exists()
    log = (tmp_path / "run" / "train.log").read_text()
    assert "SIGTERM: the end-of-run kNN (monitors.final_knn) is skipped" in log
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    assert summary["status"] == "finished" and "final/knn_trained" not in summary["metrics"]
    assert Path(tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_every_setting_that_changes_an_evaluation_names_its_own_record():
    """A smoke test with test_limit=200 replaced the full record: the limits, the clip length and
    spacing have readable tags, other settings a hash; workers, paths and progress do not count."""
    from omegaconf import OmegaConf

    from jepa_zoo.evaluation.records import result_tag

    cfg = OmegaConf.create({"protocol": "knn", "features": "encoder", "weights": "target", "shots": None,
                            "fraction": None, "seeds": 1, "folds": None, "train_limit": None, "test_limit": None})
    video = SimpleNamespace(video=True, img_size=64, eval_clips=1, num_frames=8, frame_step=2, fps=None)
    assert result_tag(cfg, video, None, ["num_workers=0", "ckpt=a.ckpt", "data_root=/d", "progress_bar=true"]) == "knn"
    clips = SimpleNamespace(video=True, img_size=64, eval_clips=1, num_frames=16, frame_step=4, fps=None)
    assert result_tag(cfg, clips, "weizmann", ["data=video_folder", "data.num_frames=16", "data.frame_step=4"]) == \
        "knn_on-weizmann_16f_every4"
    limited = OmegaConf.merge(cfg, {"train_limit": 500, "test_limit": 200})
    assert result_tag(limited, video, None, ["train_limit=500", "test_limit=200"]) == "knn_train500_test200"
    a = result_tag(cfg, video, None, ["knn.k=[5]"])
    b = result_tag(cfg, video, None, ["knn.k=[10]"])
    assert a.startswith("knn_s") and b.startswith("knn_s") and a != b
    assert result_tag(cfg, video, None, ["knn.k=[5]", "num_workers=3"]) == a  # a neutral key changes nothing
    assert result_tag(cfg, video, None, ["+data.mean=[0.5,0.5,0.5]"]).startswith("knn_s")  # no readable tag: hashed


def corrupt_folder(root: Path) -> Path:
    """train/{a,b}: 6 images and one corrupt file each; test/{a,b}: 3 images, and one corrupt file in a."""
    from PIL import Image

    for split, n in (("train", 6), ("test", 3)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 40), (40 * i, 120 * (c == "a"), 0)).save(root / split / c / f"{i}.jpg")
    for where in ("train/a", "train/b", "test/a"):
        (root / where / "zz_corrupt.jpg").write_bytes(b"not a jpeg")
    return root


def test_evaluation_drops_an_unreadable_sample_instead_of_replacing_it(tmp_path):
    from jepa_zoo.data.datasets import SkipUnreadable, Unreadable, drop_unreadable, image_folder

    root = corrupt_folder(tmp_path / "data")
    from torchvision.transforms.v2.functional import pil_to_tensor

    ds = SkipUnreadable(image_folder(root / "train", pil_to_tensor), "drop")
    bad = [i for i in range(len(ds)) if isinstance(ds[i], Unreadable)]
    assert [Path(ds[i].path).name for i in bad] == ["zz_corrupt.jpg"] * 2 and len(ds) == 14
    skip = SkipUnreadable(image_folder(root / "train", pil_to_tensor), "skip")
    assert torch.equal(skip[bad[0]][0], ds[bad[0] + 1][0])  # training: the next one stands in
    batch, dropped = drop_unreadable([ds[bad[0] - 1], ds[bad[0]]])
    assert list(dropped) == [1] and batch is not None  # the readable one, collated


@pytest.mark.integration
@pytest.mark.parametrize("args,queries,train", [(["protocol=knn"], 6, 12), (["protocol=knn", "folds=2"], 12, 6),
                                                (["protocol=linear", "probe.cache=false", "probe.max_steps=2"], 6, 11)],
                         ids=["knn", "folds", "on-the-fly"])
def test_an_evaluation_set_with_corrupt_files_counts_only_readable_samples(tmp_path, args, queries, train):
    """24 good + 2 corrupt gave "queries": 26 (the next readable sample stood in, under folds possibly a
    sample of another fold): now the corrupt ones are dropped and listed."""
    root = corrupt_folder(tmp_path / "data")
    r = run("jepa_zoo.eval", "ckpt=timm:resnet18", "data=folder", f"data.root={root}", "data.img_size=32",
            "num_workers=0", "knn.k=[3]", *args, f"hydra.run.dir={tmp_path}/ev")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    record = json.loads(r.stdout.strip().splitlines()[-1])
    assert record["queries"] == queries and record["train_images"] == train
    expected = ["train/a", "train/b"] + ([] if "folds=2" in args else ["test/a"])
    assert sorted(record["skipped"]) == sorted(str(root / w / "zz_corrupt.jpg") for w in expected)
    assert "unreadable samples dropped (not replaced)" in r.stdout + r.stderr


def test_the_world_model_mrr_is_bounded_by_limit_val_batches_and_shows_progress():
    """IWM's val/mrr ran minutes at every validation (16 images x 256 views) with no progress, whatever
    trainer.limit_val_batches said: now one image per validation batch at most, progress logged."""
    from test_iwm import PixelWorld

    from jepa_zoo.callbacks.mrr import MRRCallback
    from jepa_zoo.evaluation.mrr import world_model_mrr

    cb = MRRCallback(num_images=16)
    val = [None] * 40
    trainer = SimpleNamespace(num_val_batches=[2], datamodule=SimpleNamespace(val_set=val), limit_val_batches=2)
    assert cb._count(trainer) == 2
    trainer.limit_val_batches = 1.0  # not limited: the 4 batches of a small validation set do not cap it
    assert cb._count(trainer) == 16
    trainer.limit_val_batches = 2
    trainer.num_val_batches = [float("inf")]
    assert cb._count(trainer) == 16
    trainer.num_val_batches, trainer.datamodule.val_set = [50], val[:5]
    assert cb._count(trainer) == 5
    seen = []
    imgs = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    world_model_mrr(PixelWorld(True), imgs, PixelWorld.mean, PixelWorld.std, 8,
                    generator=torch.Generator().manual_seed(0), progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_training_validates_on_the_split_evaluation_tests_on(tmp_path):
    """A folder with train/ and validation/: training turned validation off ("no validation split
    'val/'") while evaluation found it; one rule for both now."""
    from jepa_zoo.data.datamodule import JEPADataModule
    from jepa_zoo.data.schema import DataConfig
    from jepa_zoo.evaluation.eval_data import find_test_split

    root = corrupt_folder(tmp_path / "data")
    (root / "test").rename(root / "validation")
    data = DataConfig(name="folder", root=str(root), img_size=32)
    dm = JEPADataModule(data, train_transform=None)
    dm.setup("fit")
    assert dm.val_set is not None and len(dm.val_set) == 7
    assert find_test_split(data).val_split == "validation"


@pytest.mark.parametrize("option,method", [("vjepa2", "vjepa"), ("iwm_inv", "iwm"), ("lejepa", "lejepa")])
def test_the_dashboard_takes_every_method_option_of_training(option, method):
    from jepa_zoo.dashboard import DashboardConfig, jobs

    (job,) = jobs(DashboardConfig(entity="e", project="p", method=option), offline=True)
    assert job["method"] == method


def test_dashboard_help_prints_the_usage(capsys):
    from jepa_zoo.dashboard import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "python -m jepa_zoo.dashboard entity=<e> project=<p>" in out and "  publish" in out


def test_weights_of_another_depth_say_which_setting_fits_them():
    from torch import nn

    from jepa_zoo.errors import ConfigError
    from jepa_zoo.pretrained import load_part

    def blocks(n):
        return nn.ModuleDict({"blocks": nn.ModuleList([nn.Linear(2, 2) for _ in range(n)])})

    with pytest.raises(ConfigError, match=r"^init_from: backbone: the file has 2 blocks and the model 1: set "
                                          r"\+backbone.kwargs.depth=2$"):
        load_part(blocks(1), blocks(2).state_dict(), "backbone", "init_from")
    with pytest.raises(ConfigError, match=r"predictor: the file has 1 blocks and the model 3: set method.pred_depth=1"):
        load_part(blocks(3), blocks(1).state_dict(), "predictor", "init_from")
    assert load_part(blocks(2), blocks(2).state_dict(), "backbone", "init_from") == []


def test_resume_from_a_corrupt_last_checkpoint_points_to_an_intact_step_checkpoint(tmp_path):
    from jepa_zoo.checkpointing import check_compatible
    from jepa_zoo.errors import ConfigError

    torch.save({"x": torch.zeros(1000)}, tmp_path / "full.ckpt")
    (tmp_path / "last.ckpt").write_bytes((tmp_path / "full.ckpt").read_bytes()[:3000])  # killed while written
    (tmp_path / "full.ckpt").rename(tmp_path / "step00000002.ckpt")
    with pytest.raises(ConfigError) as e:
        check_compatible(str(tmp_path / "last.ckpt"), None)
    message = str(e.value)
    assert "truncated or corrupt" in message and message.endswith(
        f"the newest step checkpoint beside it may be intact: resume={tmp_path / 'step00000002.ckpt'}")


def test_a_suite_column_of_errors_only_says_so_in_the_footer():
    from jepa_zoo.suite import footer

    rows = [{"records": {"knn": {"metric": "knn20_top1"}}}, {"records": {"knn": {"metric": "knn20_top1"}}}]
    assert footer(["knn", "clothing_10shot"], rows) == "knn = knn20_top1 (%), clothing_10shot: failed (see the log)"


def test_the_loss_accuracy_correlation_never_mixes_methods_or_datasets():
    from jepa_zoo.report_sections import loss_correlation

    def r(method, data, loss, acc):
        return SimpleNamespace(method=method, data=data, metrics={"train/loss": (loss, 1), "val/knn_top1": (acc, 1)})

    runs = [r("lejepa", "cifar10", 1.0, 30), r("lejepa", "cifar10", 2.0, 20), r("lejepa", "cifar10", 3.0, 10),
            r("ijepa", "cifar10", 0.1, 5), r("ijepa", "cifar10", 0.2, 50), r("vjepa", "weizmann", 9.0, 90)]
    md = "\n".join(loss_correlation(runs, ["val/knn_top1"], lambda run: None, lambda run: (run.method, run.data)))
    rows = [ln for ln in md.splitlines() if ln.startswith("| lejepa")]
    assert rows == ["| lejepa / cifar10 | val/knn_top1 | 3 | -1.000 | – |"]
    assert "ijepa" not in md and "vjepa" not in md  # 2 runs and 1 run: no ρ; never pooled with the others


def test_a_time_boxed_run_that_ends_in_its_warm_up_says_the_comparison_says_little(compose_cfg, caplog):
    """The quickstart made 7 of its ~100 steps on a busy machine and printed a verdict as usual."""
    from jepa_zoo.callbacks.learned import TrainedVsInit
    from jepa_zoo.config import validate
    from jepa_zoo.methods import build_model

    cfg = validate(compose_cfg(*FAST, "data.fake_size=64", "trainer.max_time=00:00:02:00", "trainer.max_steps=-1",
                               "method.optim.warmup_steps=10"))
    model = build_model(cfg)
    for step, warned in ((7, True), (25, False)):
        caplog.clear()
        trainer = SimpleNamespace(global_rank=0, global_step=step, received_sigterm=False, loggers=[])
        TrainedVsInit(images=32).on_train_end(trainer, model)
        said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert bool(said) == warned, said
        if warned:
            assert said[0].startswith("this run made 7 optimiser steps in its time budget (trainer.max_time="
                                      "00:00:02:00; warm-up 10 steps)")


def test_cached_linear_probe_trains_on_one_thread_by_default(monkeypatch):
    """fit_linear_grid runs its steps on ``threads`` intra-op threads (default 1), restores torch's
    count afterwards, and gives the same heads with torch's count (threads=None)."""
    from jepa_zoo.evaluation import linear_cached

    seen = []
    real = torch.nn.functional.cross_entropy

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    g = torch.Generator().manual_seed(0)
    train = (torch.randn(128, 8, generator=g), torch.randint(0, 3, (128,), generator=g))
    held = (torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g))
    outer = torch.get_num_threads()
    torch.set_num_threads(2)  # two even on a one-core runner, so that the settings differ
    try:
        out = {}
        for threads in (1, None):
            with monkeypatch.context() as m:
                m.setattr(linear_cached.F, "cross_entropy", spy)
                out[threads] = linear_cached.fit_linear_grid(train, held, held, 3, [1e-2], [0.0], epochs=2,
                                                             batch_size=32, threads=threads)
            assert seen and set(seen) == {1 if threads == 1 else 2}, (threads, set(seen))
            assert torch.get_num_threads() == 2
            seen.clear()
    finally:
        torch.set_num_threads(outer)
    assert out[1]["heads"] == out[None]["heads"]


def test_records_of_several_checkpoints_in_one_out_folder_stay_apart(tmp_path):
    """out=<dir> for two runs (or a suite over a sweep) wrote both to <dir>/eval_knn_trained.json."""
    from omegaconf import OmegaConf

    from jepa_zoo.errors import ConfigError
    from jepa_zoo.evaluation.records import record_path

    def path(ckpt, out=tmp_path / "res"):
        return record_path(OmegaConf.create({"out": str(out), "ckpt": ckpt, "timm_file": None}), "knn", "trained",
                           tmp_path)

    a, b = path("sweeps/a/0_x=1/checkpoints/last.ckpt"), path("sweeps/b/0_x=1/checkpoints/last.ckpt")
    assert a != b and a.name == b.name == "eval_knn_trained.json" and a.parent.name.startswith("0_x=1-")
    assert path("run/checkpoints/step00000004.ckpt").parent.name.startswith("run_step00000004-")
    assert record_path(OmegaConf.create({"out": None, "ckpt": "x"}), "knn", "trained", tmp_path) == \
        tmp_path / "eval_knn_trained.json"  # without out=: beside the checkpoint, as before
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="out: cannot make the folder"):
        path("run/checkpoints/last.ckpt", out=tmp_path / "file" / "res")


def test_an_unreadable_training_clip_the_scan_missed_is_dropped_from_the_batch():
    """A partly corrupt video passes the scan (its middle clip reads) and a random training clip past
    its readable part comes back Unreadable: the probes' loader drops it (it was a TypeError)."""
    from jepa_zoo.data.datasets import DataError, Unreadable
    from jepa_zoo.evaluation.trained import _readable

    x, y = _readable([(torch.zeros(3), 0), Unreadable("a.mp4", "truncated"), (torch.ones(3), 1)])
    assert x.shape == (2, 3) and y.tolist() == [0, 1]
    with pytest.raises(DataError, match="a whole batch of 1 training samples could not be read"):
        _readable([Unreadable("a.mp4", "truncated")])


def test_the_depth_hint_counts_top_level_blocks_only():
    from jepa_zoo.pretrained import _depth

    assert _depth({"model.blocks.11.norm1.weight": 0, "blocks.3.x": 0}) == 12
    assert _depth({"stages.3.blocks.26.conv.weight": 0}) == 0  # ConvNeXt-style: no hint
