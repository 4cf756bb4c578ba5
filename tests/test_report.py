"""``python -m jepa_zoo.report``: a fake Hydra sweep written file by file (no training)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from jepa_zoo import report, report_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]
FIXED = ["backbone=vit_t", "trainer.max_steps=300"]


def _run_dir(sweep: Path, name: str, overrides, log_lines=(), ckpt=False) -> Path:
    d = sweep / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (d / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "config.yaml").write_text("seed: 0\nmethod:\n  name: lejepa\n  lambd: 0.05\n")
    if ckpt:
        (d / "checkpoints" / "last.ckpt").write_bytes(b"not a real checkpoint")
    (d / "train.log").write_text("".join(f"[2026-11-23 12:00:0{i},000][jepa_zoo.train][{lvl}] - {msg}\n"
                                         for i, (lvl, msg) in enumerate(log_lines)))
    return d


def _csv(d: Path, version: int, text: str) -> None:
    (d / "csv" / f"version_{version}").mkdir(parents=True)
    (d / "csv" / f"version_{version}" / "metrics.csv").write_text(text)


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Four runs, swept over method.lambd and seed; written in job order, which is not the sorted order."""
    s = tmp_path / "multirun" / "lejepa" / "2026-11-23_12-00-00"
    s.mkdir(parents=True)
    (s / "multirun.yaml").write_text(  # what Hydra's sweeper writes: the command line's overrides
        "hydra:\n  sweeper:\n    params: null\n  overrides:\n    task:\n    - method.lambd=0.1,0.05,0.01\n"
        "    - seed=2,10\n    - backbone=vit_t\n    - trainer.max_steps=300\n")
    ov = lambda lambd, seed, i: [f"method.lambd={lambd}", f"seed={seed}", *FIXED, f"data.root=/data/{i}",  # noqa: E731
                                 "hydra.verbose=false"]
    done = ("INFO", "final metrics: {'train/loss': 1.0}")

    a = _run_dir(s, "0_method.lambd=0.1,seed=2", ov("0.1", 2, 0), [("INFO", "start"), done], ckpt=True)
    _csv(a, 0, "epoch,probe/val_acc,step,train/loss,train/lr,val/knn_top1\n"
               "0,,9,2.5,0.001,\n"
               "0,,19,2.0,0.001,\n"
               "0,0.1,19,,,30.5\n"
               "1,,29,1.5,0.0005,\n"
               "1,0.123456,29,,,35.25\n")
    record = {"ckpt": "x", "protocol": "knn", "features": "encoder", "init": "trained", "step": 29,
              "train_images": 50000, "queries": 10000, "knn20_top1": 41.2, "knn20_top5": 80.5, "ok": True}
    (a / "checkpoints" / "eval_knn_trained.json").write_text(json.dumps(record))
    (a / "checkpoints" / "eval_knn_random.json").write_text(json.dumps({"step": 29, "knn20_top1": 10.1}))

    # resumed from the step-19 checkpoint: version_0 had logged steps 29 and 34 before the kill, version_1
    # redid step 29 (its 34 is never logged); a later launch's curve replaces the earlier one from where it starts
    b = _run_dir(s, "1_method.lambd=0.05,seed=2", ov("0.05", 2, 1),
                 [("INFO", "start"), ("ERROR", "stopped by SIGTERM"), ("INFO", "resume=auto: continuing"), done],
                 ckpt=True)
    _csv(b, 0, "epoch,step,train/loss,val/knn_top1\n0,9,3.0,\n0,19,2.8,\n0,19,,20.0\n0,29,2.6,\n0,34,2.55,\n")
    _csv(b, 1, "epoch,probe/val_acc,step,train/loss,val/knn_top1\n0,,29,2.4,\n0,,39,2.2,\n0,0.4,39,,25.0\n")

    # preempted before logging anything, relaunched, no metrics yet
    _run_dir(s, "2_method.lambd=0.01,seed=2", ov("0.01", 2, 2),
             [("INFO", "start"), ("ERROR", "stopped by SIGTERM"), ("INFO", "resume=auto: no last.ckpt yet")])

    d = _run_dir(s, "3_method.lambd=0.05,seed=10", ov("0.05", 10, 3),
                 [("INFO", "start"), ("ERROR", "NonFiniteLossError: loss is nan")], ckpt=True)
    _csv(d, 0, "epoch,step,train/loss,val/knn_top1\n0,9,2.9,\ngarbage\n0,19,2.7,\n0,19,,22.5\n0,29,,22")  # cut short
    return s


ORDER = ["2_method.lambd=0.01,seed=2", "1_method.lambd=0.05,seed=2", "3_method.lambd=0.05,seed=10",
         "0_method.lambd=0.1,seed=2"]


def test_runs_swept_fixed_and_sort_order(sweep):
    runs, swept, fixed = report.collect(sweep)
    assert swept == ["method.lambd", "seed"]
    assert fixed == {"backbone": "vit_t", "trainer.max_steps": "300"}  # data.root varies but is excluded, hydra.* too
    assert [r.name for r in runs] == ORDER  # numeric: seed 2 before 10, lambd 0.01 < 0.05 < 0.1
    assert [r.status for r in runs] == ["running", "finished", "failed", "finished"]
    assert [r.has_ckpt for r in runs] == [False, True, True, True]
    assert [r.step for r in runs] == [None, 39, 19, 29]


def test_metric_values(sweep):
    runs = {r.name: r for r in report.collect(sweep)[0]}
    a, b, c, d = (runs[n] for n in ("0_method.lambd=0.1,seed=2", "1_method.lambd=0.05,seed=2",
                                    "2_method.lambd=0.01,seed=2", "3_method.lambd=0.05,seed=10"))
    assert a.metrics["train/loss"] == (1.5, 29)
    assert a.metrics["val/knn_top1"] == (35.25, 29)
    assert a.metrics["probe/val_acc"] == (0.123456, 29)
    assert a.metrics["train/lr"] == (0.0005, 29)
    assert a.metrics["eval/knn/knn20_top1"] == (41.2, 29)
    assert "eval/knn/train_images" not in a.metrics and "eval/knn/queries" not in a.metrics  # counts, not figures
    assert a.metrics["eval/knn_random/knn20_top1"] == (10.1, 29)
    assert "eval/knn/step" not in a.metrics and "eval/knn/ok" not in a.metrics and "epoch" not in a.metrics
    # the resumed run: the later launch wins, a metric only in it is kept, the loss curve is not doubled
    assert b.metrics["val/knn_top1"] == (25.0, 39)
    assert b.metrics["train/loss"] == (2.2, 39)
    assert b.metrics["probe/val_acc"] == (0.4, 39)
    assert b.loss_curve == [(9, 3.0), (19, 2.8), (29, 2.4), (39, 2.2)]
    assert c.metrics == {} and c.loss_curve == []
    # the truncated last line (and the garbage line) are skipped
    assert d.metrics == {"train/loss": (2.7, 19), "val/knn_top1": (22.5, 19)}


def test_read_metrics_csv_skips_bad_rows(tmp_path):
    p = tmp_path / "metrics.csv"
    p.write_text("epoch,step,train/loss\n0,1,1.0\n0,2\nx,3,2.0\n0,4,,\n0,nan,1.0\n0,5,\n0,6,0.5")
    assert report.read_metrics_csv(p) == [{"epoch": 0.0, "step": 1.0, "train/loss": 1.0},
                                          {"epoch": 0.0, "step": 5.0}]
    p.write_text("epoch,st")
    assert report.read_metrics_csv(p) == []


def test_versions_merge_in_numeric_order(tmp_path):
    for v, loss in ((2, 2.0), (10, 1.0), (9, 3.0)):  # version_10 is the latest launch, though "10" < "2" < "9"
        _csv(tmp_path, v, f"epoch,step,train/loss\n0,{v},{loss}\n")
    final, curve, step = report.csv_metrics(tmp_path)
    assert final == {"train/loss": (1.0, 10)} and step == 10 and curve == [(2, 2.0), (9, 3.0), (10, 1.0)]


def test_select_metrics(sweep):
    runs = report.collect(sweep)[0]
    assert report.select_metrics(runs) == [
        "train/loss", "eval/knn/knn20_top1", "eval/knn/knn20_top5", "eval/knn_random/knn20_top1", "probe/val_acc",
        "val/knn_top1"]
    assert report.select_metrics(runs, ["val/knn_top1", "eval/knn/*top1", "nope/x"]) == [
        "val/knn_top1", "eval/knn/knn20_top1", "nope/x"]


def test_small_helpers():
    assert report.parse_override("+method.lambd=0.01") == ("method.lambd", "0.01")
    assert report.parse_override("data.root=/x") is None and report.parse_override("hydra.job.name=a") is None
    assert report_plots.use_log_x([0.001, 0.01, 0.1]) and not report_plots.use_log_x([0.01, 0.1])
    assert not report_plots.use_log_x([-1.0, 100.0])
    assert report_plots.safe_name("val/knn_top1") == "val_knn_top1"
    assert report.fmt(0.123456) == "0.1235" and report.fmt(12345.678) == "1.235e+04" and report.fmt(None) == "–"
    assert report.fmt(50000.0) == "50000" and report.fmt(2.0e7) == "2e+07" and report.fmt(0.1, None) == "0.1"


def _md_rows(md: str, table: int = 0):
    """(header, rows) of the ``table``-th Markdown table of ``md``."""
    tables, current = [], None
    for line in md.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            current.append([c.strip() for c in line.strip().strip("|").split(" | ")])
        else:
            current = None
    return tables[table][0], tables[table][2:]


def test_main_writes_report_and_plots(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert report.main([str(sweep), "--out", str(out), "--metrics", "val/knn_top1,probe/val_acc,train/loss"]) == 0
    md = (out / "report.md").read_text()
    assert capsys.readouterr().out == md
    assert str(sweep) in md
    assert "fixed: `backbone=vit_t`, `trainer.max_steps=300`" in md
    header, rows = _md_rows(md)
    assert header == ["run", "status", "last.ckpt", "step", "method.lambd", "seed",
                      "val/knn_top1", "probe/val_acc", "train/loss"]
    assert rows == [
        ["2_method.lambd=0.01,seed=2", "running", "no", "–", "0.01", "2", "–", "–", "–"],
        ["1_method.lambd=0.05,seed=2", "finished", "yes", "39", "0.05", "2", "25", "0.4", "2.2"],
        ["3_method.lambd=0.05,seed=10", "failed", "yes", "19", "0.05", "10", "22.5", "–", "2.7"],
        ["0_method.lambd=0.1,seed=2", "finished", "yes", "29", "0.1", "2", "35.25", "0.1235", "1.5"],
    ]
    # the loss as a selection signal: the three runs with a loss and a kNN accuracy rank inversely
    # (loss 1.5 < 2.2 < 2.7, kNN 35.25 > 25 > 22.5); probe/val_acc has two such runs: no row
    assert "## Training loss as a model-selection signal" in md
    assert _md_rows(md, 1)[1] == [["lejepa", "val/knn_top1", "3", "-1.000", "-1.000"]]
    with open(out / "report.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["run"] for r in table] == ORDER
    assert table[3]["probe/val_acc"] == "0.123456" and table[3]["probe/val_acc@step"] == "29"
    assert table[0]["val/knn_top1"] == "" and table[1]["val/knn_top1"] == "25.0"
    plots = out / "plots"
    expected = {"loss_curves.png"} | {f"{m}_vs_{k}.png" for m in ("val_knn_top1", "probe_val_acc", "train_loss")
                                      for k in ("method.lambd", "seed")}
    assert {p.name for p in plots.iterdir()} == expected
    for p in plots.iterdir():
        data = p.read_bytes()
        assert len(data) > 100 and data[:8] == PNG_SIGNATURE


def test_single_and_nested_run_dirs_fill_defaults_from_config(tmp_path, capsys):
    root = tmp_path / "outputs"
    _run_dir(root / "lejepa" / "2026-11-23_10-00-00", "", ["method.lambd=0.1", "backbone=vit_t"])
    _run_dir(root / "lejepa" / "2026-11-23_11-00-00", "", ["backbone=vit_t"])  # lambd: the config's 0.05
    runs, swept, fixed = report.collect(root)
    assert swept == ["method.lambd"] and fixed == {"backbone": "vit_t"}
    assert [(r.name, r.overrides["method.lambd"]) for r in runs] == [
        ("lejepa/2026-11-23_11-00-00", "0.05"), ("lejepa/2026-11-23_10-00-00", "0.1")]
    single = root / "lejepa" / "2026-11-23_10-00-00"
    assert report.main([str(single)]) == 0
    assert "fixed: `backbone=vit_t`, `method.lambd=0.1`" in capsys.readouterr().out
    assert (single / "report.md").is_file() and (single / "plots" / "loss_curves.png").is_file()


def test_empty_dir_exits_2(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert report.main([str(tmp_path / "empty")]) == 2
    assert str(tmp_path / "empty") in capsys.readouterr().err
    assert not (tmp_path / "empty" / "report.md").exists()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "jepa_zoo.report", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.integration
def test_cli(sweep, tmp_path):
    ok = _cli(sweep, "--out", tmp_path / "cli")
    assert ok.returncode == 0, ok.stderr
    assert "| run | status | last.ckpt | step | method.lambd | seed |" in ok.stdout
    # default metrics: train/loss, then eval/knn/knn20_top1, eval/knn/knn20_top5, ...
    assert "| 0_method.lambd=0.1,seed=2 | finished | yes | 29 | 0.1 | 2 | 1.5 | 41.2 | 80.5 |" in ok.stdout
    missing = tmp_path / "no" / "such" / "sweep"
    bad = _cli(missing)
    assert bad.returncode == 2
    assert str(missing) in bad.stderr and "Traceback" not in bad.stderr


def test_plot_labels_are_short_and_titles_count_runs_and_images(sweep):
    runs, swept, _ = report.collect(sweep)
    assert report.sweep_keys(runs) == ["method.lambd", "seed"]  # from the sweep's multirun.yaml
    assert report_plots.label(runs[0], swept) == "lambd=0.01, seed=2"
    assert report_plots.short_key("a.seed", ["a.seed", "b.seed"]) == "a.seed"  # ambiguous: kept whole
    assert report_plots.counts(runs) == "4 runs"
    runs[0].val_images, runs[1].val_images = 2000, 10000
    assert report_plots.counts(runs) == "4 runs, 2000-10000 validation images"
