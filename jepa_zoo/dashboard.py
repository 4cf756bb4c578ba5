"""W&B dashboards as code: ``python -m jepa_zoo.dashboard entity=<e> project=<p> [method=<m>] [group=<g>]``.

Builds one W&B workspace per method (every built-in method unless ``method=`` names one) from the
panels the method and the shared plug-ins declare beside their metrics (:mod:`jepa_zoo.panels`,
gathered by :func:`jepa_zoo.callbacks.assemble.panels`), with ``wandb-workspaces``, and creates or
updates it (the same command updates the same workspace).  ``group=`` shows only that W&B group's
runs (a sweep's runs share the group ``<method>/<timestamp>``); ``sweep=<sweep dir>`` takes the
group, the method and the swept keys from a local sweep dir and adds a parallel-coordinates panel
of the swept keys.  ``report=true`` writes a W&B report of the group instead: the sweep table of
``python -m jepa_zoo.report`` (with ``sweep=``) and, as W&B panels, each accuracy against each
swept key, the training curves and the method's sweep panels.

Offline (``offline=true``, or no W&B API key): nothing is sent and nothing prompts; the
specification (what was asked, the panels, and the W&B spec ``wandb-workspaces`` builds) goes to
``<out>/workspace_<method>[_<group>].json`` or ``<out>/report_<group>.json``;
``python -m jepa_zoo.dashboard publish=<that file>`` publishes it later.  A sketch of each
workspace's layout is drawn to ``<out>/workspace_<method>[_<group>].png`` in both modes.
Bad input: one line on stderr, exit 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

FORMAT = "jepa_zoo.dashboard/1"
ACCURACIES = ("probe/val_acc", "val/knn_top1")  # what a sweep is judged by, in W&B (logged by every method)
OFFLINE_MODES = ("offline", "dryrun", "disabled")  # WANDB_MODE values that mean: send nothing
log = logging.getLogger("jepa_zoo.dashboard")


@dataclass
class DashboardConfig:
    entity: Optional[str] = None  # W&B entity (user or team)
    project: Optional[str] = None  # W&B project the runs log to (logger.project)
    method: Optional[str] = None  # one method's workspace; default: every built-in method
    module: Optional[str] = None  # a method outside jepa_zoo: its importable module (as method.module)
    group: Optional[str] = None  # only this W&B group's runs (a sweep: <method>/<timestamp>)
    sweep: Optional[str] = None  # a local sweep dir: its group, method and swept keys
    report: bool = False  # a W&B report of the group instead of a workspace
    offline: Optional[bool] = None  # true: write the specification only; default: offline iff no API key
    out: str = "dashboards"  # where specifications and layout sketches go
    publish: Optional[str] = None  # a specification written offline: publish it


class UsageError(ValueError):
    """Bad input, reported as one line (exit 2)."""


def parse(argv: Sequence[str]) -> DashboardConfig:
    """``key=value`` arguments into a :class:`DashboardConfig` (OmegaConf checks names and types)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    names = [f.name for f in dataclasses.fields(DashboardConfig)]
    for arg in argv:
        key = arg.split("=", 1)[0]
        if "=" not in arg or key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {near[0]}?" if near else f"; keys: {', '.join(names)}"
            raise UsageError(f"not a key=value argument of the dashboard: {arg!r}{hint}")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(DashboardConfig), OmegaConf.from_dotlist(list(argv)))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise UsageError((f"{key}: " if key else "") + str(e).splitlines()[0]) from None
    return DashboardConfig(**OmegaConf.to_container(cfg))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def read_sweep(path: str) -> Tuple[str, List[str], List[str], str]:
    """A local sweep dir's (W&B group, methods, swept keys, Markdown table of ``jepa_zoo.report``)."""
    from jepa_zoo.loggers import sweep_group
    from jepa_zoo.report import collect, config_value, select_metrics, to_markdown

    root = Path(path)
    if not root.is_dir():
        raise UsageError(f"sweep: no such directory: {root}")
    runs, swept, fixed = collect(root)
    if not runs:
        raise UsageError(f"sweep: no run dirs in {root} (a sweep dir of python -m jepa_zoo.train --multirun)")
    methods = sorted({config_value(r.path, "method.name") or "?" for r in runs})
    table = to_markdown(root, runs, swept, fixed, select_metrics(runs))
    return sweep_group("MULTIRUN", str(root.resolve())), methods, list(swept), table


def sections_for(method: str, swept: Sequence[str], module: Optional[str] = None) -> tuple:
    """The method's dashboard sections, plus a parallel-coordinates panel of ``swept`` if any."""
    from jepa_zoo.callbacks.assemble import panels
    from jepa_zoo.panels import Parallel, Section, merge
    from jepa_zoo.registry import method_spec

    own = panels(method_spec(method, module))
    if not swept:
        return own
    return merge(own, (Section("Sweep", (Parallel(tuple(swept), ACCURACIES, "swept keys → accuracy"),), sweep=True),))


def report_sections(method: str, swept: Sequence[str], module: Optional[str] = None) -> tuple:
    """The report's panels: each validation metric of the method (``val/``, ``probe/``: what
    ``jepa_zoo.report`` plots, as logged to W&B) against each swept key, the swept keys into the
    accuracies, the training curves, and the method's own sweep panels."""
    from jepa_zoo.panels import Line, Parallel, Scatter, Section, metric_keys

    own = sections_for(method, (), module)
    judged = [k for k in metric_keys(own) if k.startswith(("val/", "probe/val"))]
    by_key = tuple(Scatter(k, m, title=f"{m} against {k}", x_config=True) for k in swept for m in judged)
    sweep = (Section("Metrics against the swept keys", by_key + (Parallel(tuple(swept), ACCURACIES),)),) if swept else ()
    curves = Section("Training curves", (Line(("train/loss",), "loss", smoothing=0.6),
                                         Line(("probe/val_acc",), "online linear probe (%)"),
                                         Line(("val/knn_top1",), "online kNN (%)")))
    return sweep + (curves,) + tuple(sec for sec in own if sec.sweep)


def write_json(path: Path, data: dict) -> None:
    """``path`` written whole or not at all (:func:`jepa_zoo.runs.atomic_write`)."""
    from jepa_zoo.runs import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def api_key_available() -> bool:
    """Whether publishing is meant: an API key (``WANDB_API_KEY``, ``~/.netrc``) and a ``WANDB_MODE``
    that sends."""
    from jepa_zoo.loggers import _wandb_key_available

    return os.environ.get("WANDB_MODE") not in OFFLINE_MODES and _wandb_key_available()


def build(job: dict, online: bool = False) -> Tuple[object, tuple]:
    """(the ``wandb-workspaces`` workspace or report, its sections) of one job; ``online``: the
    report's run sets look their project up on the server (needed to save it)."""
    from jepa_zoo import dashboard_wandb as dw

    if job["kind"] == "workspace":
        sections = sections_for(job["method"], job["swept"], job.get("module"))
        return dw.workspace(job["entity"], job["project"], job["method"], sections, job["group"]), sections
    sections = report_sections(job["method"], job["swept"], job.get("module"))
    text = [f"Runs of the W&B group {job['group']} (method {job['method']}); swept: "
            f"{', '.join(job['swept']) or 'nothing'}. Made by python -m jepa_zoo.dashboard report=true."]
    return dw.report(job["entity"], job["project"], job["method"], job["group"], sections, text, job.get("table"),
                     resolve_project=online), sections


def spec_path(out: Path, job: dict) -> Path:
    if job["kind"] == "report":
        return out / f"report_{slug(job['group'])}.json"
    return out / (f"workspace_{job['method']}" + (f"_{slug(job['group'])}" if job["group"] else "") + ".json")


def option_method(option: str) -> str:
    """The method of a training ``method=<option>`` (``conf/method/<option>.yaml`` composed as training
    composes it: vjepa2 is V-JEPA's module, iwm_inv IWM's); a name with no such file is taken as a
    method's own."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from jepa_zoo.train import register_resolvers

    conf = Path(__file__).parent / "conf"
    if not (conf / "method" / f"{option}.yaml").is_file():
        return option
    register_resolvers()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        name = OmegaConf.select(compose("train", overrides=[f"method={option}"]), "method.name", default=None)
    return name if isinstance(name, str) else option


def jobs(cfg: DashboardConfig, offline: bool) -> List[dict]:
    """What the command builds: one job per workspace, or the report. Online, the swept keys of a
    ``group=`` without ``sweep=`` are read from the group's runs in W&B."""
    from jepa_zoo.errors import ConfigError
    from jepa_zoo.registry import builtin_methods, method_spec

    if not cfg.entity or not cfg.project:
        raise UsageError("entity=<W&B entity> and project=<W&B project> are required")
    if cfg.module and not cfg.method:
        raise UsageError("module= names the module of method=<name>; give both")
    group, methods, swept, table = cfg.group, [option_method(cfg.method)] if cfg.method else builtin_methods(), [], None
    if cfg.sweep:
        sweep_group, sweep_methods, swept, table = read_sweep(cfg.sweep)
        if cfg.group and cfg.group != sweep_group:
            raise UsageError(f"group={cfg.group} but the sweep dir's runs log to the W&B group {sweep_group}")
        if len(sweep_methods) != 1 or (cfg.method and cfg.method != sweep_methods[0]):
            raise UsageError(f"sweep: its runs are of method(s) {', '.join(sweep_methods)}"
                             + (f", not {cfg.method}" if cfg.method else "; choose one with method="))
        group, methods = sweep_group, sweep_methods
    for m in methods:
        try:
            method_spec(m, cfg.module)
        except ConfigError:
            raise UsageError(f"method: unknown method {m!r}" + (f" in module {cfg.module}" if cfg.module else "")
                             + f"; built-in methods: {', '.join(builtin_methods())} (a method of your own: "
                             "module=<its importable module>)") from None
    if group and not cfg.sweep:
        if offline:
            log.info("group=%s offline: the swept keys are not known here (sweep=<sweep dir> gives them)", group)
        else:
            from jepa_zoo.dashboard_wandb import swept_in_group

            swept = swept_in_group(cfg.entity, cfg.project, group)
    base = {"entity": cfg.entity, "project": cfg.project, "group": group, "swept": list(swept),
            **({"module": cfg.module} if cfg.module else {})}
    if cfg.report:
        if not group or len(methods) != 1:
            raise UsageError("report=true needs one sweep: group=<W&B group> method=<method>, or sweep=<sweep dir>")
        return [{**base, "kind": "report", "method": methods[0], "table": table}]
    return [{**base, "kind": "workspace", "method": m} for m in methods]


def publish_errors() -> tuple:
    """What a failed publication raises: W&B's errors (no network shows as a failed credential
    check), its service's, or the HTTP client's."""
    import requests
    from wandb.errors import CommError
    from wandb.sdk.lib.service.service_connection import WandbApiFailedError

    return requests.exceptions.RequestException, CommError, WandbApiFailedError


def run(cfg: DashboardConfig) -> int:
    """Build, publish or write each job; 0, or 1 when W&B refused or could not be reached (the
    specification is then written, to publish later)."""
    import importlib.util

    if importlib.util.find_spec("wandb_workspaces") is None:
        raise UsageError("needs wandb-workspaces: pip install 'jepa_zoo[dashboard]' (or wandb-workspaces)")
    from jepa_zoo import dashboard_wandb as dw
    from jepa_zoo.dashboard_sketch import sketch

    offline = cfg.offline if cfg.offline is not None else not api_key_available()
    if cfg.publish:
        path = Path(cfg.publish)
        try:
            spec = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"publish: cannot read {path}: {e}") from None
        if not isinstance(spec, dict) or spec.get("format") != FORMAT or not isinstance(spec.get("job"), dict):
            raise UsageError(f"publish: {path} is not a specification written by python -m jepa_zoo.dashboard")
        if offline:
            raise UsageError("publish: no W&B API key (run `wandb login` or set WANDB_API_KEY), or WANDB_MODE is "
                             "offline")
        todo, out = [spec["job"]], path.parent
    else:
        try:
            todo = jobs(cfg, offline)
        except publish_errors() as e:
            log.warning("W&B: cannot read the runs of group %s (%s: %s); its swept keys are left out", cfg.group,
                        type(e).__name__, str(e).splitlines()[0])
            todo = jobs(cfg, offline=True)
        out = Path(cfg.out)
    failed = False
    for job in todo:
        path = spec_path(out, job)
        obj, sections = build(job)
        if job["kind"] == "workspace":
            sketch(sections, f"{job['project']}: {obj.name}", path.with_suffix(".png"))
        if not offline:
            try:
                if job["kind"] == "workspace":
                    url = dw.publish_workspace(obj, job["method"], job["group"])
                else:
                    url = dw.publish_report(build(job, online=True)[0])
                log.info("W&B: %s", url)
                continue
            except dw.ProjectNotFound as e:
                raise UsageError(str(e)) from None
            except publish_errors() as e:
                failed = True
                log.warning("W&B: could not publish (%s: %s)", type(e).__name__, str(e).splitlines()[0])
        wandb_spec = dw.workspace_spec(obj) if job["kind"] == "workspace" else dw.report_spec(obj)
        write_json(path, {"format": FORMAT, "job": job, "sections": [dataclasses.asdict(s) for s in sections],
                          "wandb": wandb_spec})
        log.info("%s: wrote %s; publish it with `python -m jepa_zoo.dashboard publish=%s` once W&B is reachable "
                 "with an API key (wandb login)", "offline" if offline else "not published", path, path)
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)  # others' INFO stays out
    log.setLevel(logging.INFO)
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        print("\nkeys (key=value):")
        for f in dataclasses.fields(DashboardConfig):
            print(f"  {f.name}")
        return 0
    try:
        return run(parse(args))
    except UsageError as e:
        print(f"dashboard: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
