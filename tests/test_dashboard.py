"""W&B dashboards as code (``python -m jepa_zoo.dashboard``): every panel's keys are logged by real
runs, the offline specification, idempotent publishing (W&B mocked), bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from jepa_zoo.callbacks.assemble import panels
from jepa_zoo.panels import Line, Section, config_keys, media_keys, metric_keys
from jepa_zoo.registry import builtin_methods, method_spec

from conftest import REPO

pytest.importorskip("wandb_workspaces")

# one epoch of fake data (64 images / batch 16; video methods: 64 synthetic clips): 4 steps, one
# validation at step 4
FAST = ["+backbone.kwargs.depth=2", "trainer.max_steps=4", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1"]


def data_for(method: str) -> list:
    video = ["data=moving_shapes", "data.fake_size=64", "data.num_frames=4", "method.pred_depth=1"]
    return video if method_spec(method).video else ["data=fake"]


def offline_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "HOME": str(home), "HYDRA_FULL_ERROR": "0"}  # no ~/.netrc: no API key


def dashboard(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jepa_zoo.dashboard", *args], cwd=cwd, env=offline_env(cwd),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One short real run per built-in method (LeJEPA's as a two-point λ sweep), by method name."""
    root = tmp_path_factory.mktemp("dash_runs")
    out = {}
    for method in builtin_methods():
        sweep = method == "lejepa"
        extra = ["method.lambd=0.02,0.05", f"hydra.sweep.dir={root / 'sweep'}"] if sweep else \
            [f"hydra.run.dir={root / method}", *(["trainer.max_time=00:00:30:00"] if method == "iwm" else [])]
        r = subprocess.run([sys.executable, "-m", "jepa_zoo.train", *(["-m"] if sweep else []), f"method={method}",
                            *data_for(method), *FAST, *extra], cwd=REPO,
                           env=offline_env(root), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        out[method] = root / "sweep" / "0_method.lambd=0.02" if sweep else root / method
    out["sweep"] = root / "sweep"
    return out


def logged(run_dir: Path) -> tuple:
    """(metric names in the run's metrics.csv header, image panel keys of its PNGs, the hyper-parameters
    the loggers got: ``{"cfg": <config>, ...}``, as W&B holds them)."""
    header = (run_dir / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    images = {f"images/{p.name.rsplit('_step', 1)[0]}" for p in (run_dir / "images").glob("*_step*.png")}
    hparams = yaml.safe_load((run_dir / "csv" / "version_0" / "hparams.yaml").read_text())
    return set(header), images, hparams


# each `when` a panel may carry, and whether it holds in a run (its hyper-parameters): a new
# condition must be added here, so that its keys are checked whenever a run meets it
WHEN = {
    "method.optim.final_weight_decay is set": lambda c: c["method"]["optim"]["final_weight_decay"] is not None,
    "trainer.max_time is set": lambda c: c["trainer"].get("max_time") is not None,
    "a GPU whose peak FLOP/s Lightning knows": lambda c: False,  # tested on PerfMonitor.metrics below
}


def missing(sections, header: set, images: set, hparams: dict) -> list:
    """The keys the panels reference that the run did not log (or its config lacks), the keys of
    conditional panels included when their condition holds in the run."""
    cfg = hparams["cfg"]

    def has(key: str) -> bool:
        node = cfg
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    metrics = [k for sec in sections for p in sec.panels if isinstance(p, Line) and p.when and WHEN[p.when](cfg)
               for k in p.keys] + list(metric_keys(sections))
    return ([k for k in metrics if k not in header] + [k for k in media_keys(sections) if k not in images]
            + [k for k in ("method.name", *config_keys(sections)) if not has(k)])


@pytest.mark.integration
@pytest.mark.parametrize("method", ["lejepa", "ijepa", "iwm"])
def test_every_panel_key_is_logged_by_a_real_run(runs, method, tmp_path):
    header, images, hparams = logged(runs[method])
    sections = panels(method_spec(method))
    assert missing(sections, header, images, hparams) == []
    checked = {"ijepa": "train/wd", "iwm": "train/horizon"}.get(method)  # conditional panels, met in these runs
    assert checked is None or checked in header
    # the workspace the command builds (offline) references those keys, and no other metric
    r = dashboard(tmp_path, "entity=me", "project=p", f"method={method}")
    assert r.returncode == 0, r.stderr
    spec = json.loads((tmp_path / "dashboards" / f"workspace_{method}.json").read_text())
    text = json.dumps(spec["wandb"])
    for key in metric_keys(sections, conditional=True) + media_keys(sections):
        assert f'"{key}"' in text or f":{key}" in text, key
    for key in config_keys(sections):  # W&B holds a nested config key as cfg.value.<path>
        assert f"cfg.value.{key}" in text, key


@pytest.mark.integration
def test_a_renamed_metric_is_caught(runs):
    """The check above fails when a panel names a metric no run logs (a rename on either side)."""
    header, images, hparams = logged(runs["lejepa"])
    renamed = panels(method_spec("lejepa")) + (Section("x", (Line(("train/sigreg",)),)),)
    assert missing(renamed, header, images, hparams) == ["train/sigreg"]
    assert missing(panels(method_spec("lejepa")), header - {"train/sigreg_loss"}, images, hparams) == ["train/sigreg_loss"]
    header, images, hparams = logged(runs["iwm"])  # a conditional key, in a run that meets its condition
    assert missing(panels(method_spec("iwm")), header - {"train/horizon"}, images, hparams) == ["train/horizon"]
    assert missing(panels(method_spec("iwm")), header, images - {"images/pairs"}, hparams) == ["images/pairs"]


def test_the_gpu_only_perf_key_is_the_one_perf_monitor_logs():
    import torch

    from jepa_zoo.callbacks.perf import PANELS, PerfMonitor

    monitor = PerfMonitor(lambda batch: 1)
    monitor.flops_per_step, monitor.available_flops = 10 ** 12, 10 ** 14  # as on a GPU Lightning knows
    logged_keys = set(monitor.metrics(1.0, 1, 8, 1, torch.device("cpu")))
    assert set(metric_keys(PANELS, conditional=True)) <= logged_keys and "perf/mfu" in logged_keys


@pytest.mark.integration
def test_offline_spec_sketch_and_rerun(tmp_path):
    r = dashboard(tmp_path, "entity=me", "project=p")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "dashboards"
    for method in builtin_methods():
        spec = json.loads((out / f"workspace_{method}.json").read_text())
        assert spec["format"] == "jepa_zoo.dashboard/1" and spec["job"]["method"] == method
        names = [s["name"] for s in spec["sections"]]
        assert names[:4] == ["Optimisation", "Representation quality", "Speed", "Images"], names
        assert (out / f"workspace_{method}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"publish=dashboards/workspace_{method}.json" in r.stderr
    first = (out / "workspace_lejepa.json").read_text()
    assert dashboard(tmp_path, "entity=me", "project=p", "method=lejepa").returncode == 0
    assert (out / "workspace_lejepa.json").read_text() == first  # the same command, the same specification
    assert not list(out.glob("*.tmp*"))
    r = dashboard(tmp_path, "publish=dashboards/workspace_lejepa.json")
    assert r.returncode == 2 and "no W&B API key" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.integration
def test_sweep_workspace_and_report_offline(runs, tmp_path):
    sweep = runs["sweep"]
    r = dashboard(tmp_path, "entity=me", "project=p", f"sweep={sweep}")
    assert r.returncode == 0, r.stderr
    (spec_file,) = (tmp_path / "dashboards").glob("workspace_lejepa_*.json")
    spec = json.loads(spec_file.read_text())
    group = "/".join(sweep.parts[-2:])
    assert spec["job"]["group"] == group and spec["job"]["swept"] == ["method.lambd"]
    sweep_panels = [p for s in spec["sections"] if s["name"] == "Sweep" for p in s["panels"]]
    assert sweep_panels and sweep_panels[0]["columns"] == ["method.lambd"]
    assert group in json.dumps(spec["wandb"])  # the runset is filtered to the sweep's group
    r = dashboard(tmp_path, "entity=me", "project=p", f"sweep={sweep}", "report=true")
    assert r.returncode == 0, r.stderr
    (report_file,) = (tmp_path / "dashboards").glob("report_*.json")
    report = json.loads(report_file.read_text())
    text = json.dumps(report["wandb"])
    assert "config:cfg.value.method.lambd" in text and "probe/val_acc" in text and "Sweep report" in text  # + the table


@pytest.fixture
def fake_wandb(monkeypatch, tmp_path):
    """W&B's server as wandb-workspaces and wandb.Api see it, in memory: views by name, reports by
    title, the runs of a group; ``state["down"]``: every call fails as it does here without network."""
    import wandb
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb.errors import AuthenticationError
    from wandb_workspaces.workspaces import internal

    from jepa_zoo import dashboard

    state = {"views": [], "stored": {}, "reports": [], "saved": [], "runs": [], "down": False, "project": True}

    def online():
        if state["down"]:  # what wandb 0.31 raises with a key and no network
            raise AuthenticationError("Failed to verify credentials with https://api.wandb.ai: Failed to execute "
                                      "API request")

    def get_view_dict(entity, project, url_name):  # as W&B's: the name in a workspace URL
        online()
        if not state["project"]:
            raise ValueError(f"Project `{entity}/{project}` not found.  Do you have access to this project?")
        name = internal._url_query_str_to_internal_name(url_name)
        if name not in state["stored"]:
            raise ValueError(f"Workspace `{url_name}` not found in project `{project}`")
        return {"id": state["stored"][name]}

    def upsert_view2(view):
        online()
        state["views"].append((view.name, view.id, view.display_name))
        state["stored"].setdefault(view.name, f"id{len(state['stored'])}")
        return {"upsertView": {"view": {"name": view.name, "id": state["stored"][view.name]}}}

    class Api:
        def __init__(self):
            online()

        def reports(self, path):
            return [SimpleNamespace(display_name=t, id=i) for t, i in state["reports"]]

        def runs(self, path, filters):
            return [SimpleNamespace(config={"cfg": c}) for g, c in state["runs"] if g == filters["group"]]

    def save(self, draft=False, clone=False):
        online()
        state["saved"].append((self.title, self.id))
        if not self.id:
            state["reports"].append((self.title, f"r{len(state['reports'])}"))

    monkeypatch.setattr(internal, "get_view_dict", get_view_dict)
    monkeypatch.setattr(internal, "upsert_view2", upsert_view2)
    monkeypatch.setattr(wandb, "Api", Api)
    monkeypatch.setattr(ws.Workspace, "url", property(lambda self: f"https://w/{self._internal_name}"))
    monkeypatch.setattr(wr.Report, "save", save)
    monkeypatch.setattr(wr.Report, "url", property(lambda self: f"https://r/{self.id}"))
    resolve = wr.Runset._to_model  # saving a report looks each run set's project up on the server: not here
    monkeypatch.setattr(wr.Runset, "_to_model", lambda self: resolve(wr.Runset(name=self.name, filters=self.filters,
                                                                              entity="", project="")))
    monkeypatch.setattr(dashboard, "api_key_available", lambda: True)
    monkeypatch.chdir(tmp_path)
    return state


def test_publishing_is_idempotent(fake_wandb, tmp_path):
    from jepa_zoo import dashboard

    for _ in range(2):
        assert dashboard.main(["entity=me", "project=p", "method=iwm"]) == 0
    (name1, id1, title), (name2, id2, _) = fake_wandb["views"]
    assert name1 == name2 and id1 == "" and id2 == "id0" and title == "jepa_zoo iwm"  # created, then updated
    assert dashboard.main(["entity=me", "project=p", "method=iwm", "group=iwm/2026-11-30_10-00-00"]) == 0
    assert fake_wandb["views"][-1][0] != name1 and fake_wandb["views"][-1][1] == ""  # another group: another one
    assert not (tmp_path / "dashboards" / "workspace_iwm.json").exists()  # published: no specification left


def test_a_report_is_saved_over_the_one_of_the_same_title_and_reads_the_groups_swept_keys(fake_wandb, tmp_path):
    from jepa_zoo import dashboard

    group = "iwm/2026-11-30_10-00-00"
    fake_wandb["runs"] = [(group, {"method": {"name": "iwm", "pred_depth": d}, "run_dir": f"/r/{d}", "seed": 0})
                          for d in (4, 8)] + [("other", {"method": {"pred_depth": 12}})]
    args = ["entity=me", "project=p", "method=iwm", f"group={group}", "report=true"]
    assert dashboard.main(args) == 0 and dashboard.main(args) == 0
    (t1, id1), (t2, id2) = fake_wandb["saved"]
    assert t1 == t2 == f"jepa_zoo iwm sweep {group}" and id1 == "" and id2 == "r0"  # the second run updates it
    assert dashboard.jobs(dashboard.parse(args), offline=False)[0]["swept"] == ["method.pred_depth"]  # not run_dir


def test_a_failed_publication_writes_the_specification_and_exits_1(fake_wandb, tmp_path, caplog, capsys):
    from jepa_zoo import dashboard

    fake_wandb["down"] = True
    assert dashboard.main(["entity=me", "project=p", "method=iwm"]) == 1
    spec = json.loads((tmp_path / "dashboards" / "workspace_iwm.json").read_text())
    assert spec["job"]["method"] == "iwm" and "could not publish (AuthenticationError" in caplog.text
    fake_wandb["down"], fake_wandb["project"] = False, False
    assert dashboard.main(["entity=me", "project=nope", "method=iwm"]) == 2  # a missing project: one line
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dashboard: error: W&B project me/nope not found")


@pytest.mark.parametrize("args, message", [
    (["entity=me", "project=p", "methd=iwm"], "did you mean method?"),
    (["entity=me", "project=p", "method=nope"], "unknown method 'nope'"),
    (["project=p"], "entity=<W&B entity> and project=<W&B project> are required"),
    (["entity=me", "project=p", "method=iwm", "report=true"], "report=true needs one sweep"),
    (["entity=me", "project=p", "sweep=/no/such/dir"], "sweep: no such directory"),
    (["entity=me", "project=p", "report=maybe"], "report"),
    (["entity=me", "project=p", "publish=missing.json"], "publish: cannot read"),
])
@pytest.mark.integration
def test_bad_input_is_one_line(tmp_path, args, message):
    r = dashboard(tmp_path, *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "dashboards").exists()
