"""The W&B side of ``python -m jepa_zoo.dashboard``: panels (:mod:`jepa_zoo.panels`) as a
``wandb-workspaces`` workspace or report, and their publication.

Workspaces are upserted under a name derived from (method, group), so running the command again
updates the same workspace instead of adding one.  The config keys of the panels are the run
config's (``cfg.<override path>``: the module's hyper-parameters are ``{"cfg": <config>}``), and
the x-axis is Lightning's ``trainer/global_step`` (the step every metric of a run is logged
against in W&B).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional, Sequence

from jepa_zoo.panels import Bar, Line, Media, Parallel, Scatter, Section

X_AXIS = "trainer/global_step"
CONFIG_PREFIX = "cfg."


class ProjectNotFound(ValueError):
    """The W&B project does not exist or cannot be read with this API key."""


def _libs():
    """``wandb_workspaces``' workspace and report modules (the ``dashboard`` extra)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    return ws, wr


def _config(wr: Any, key: str) -> Any:
    return wr.Config(CONFIG_PREFIX + key)


def panel(p: Any) -> Any:
    """One ``wandb_workspaces`` panel from a :mod:`jepa_zoo.panels` panel."""
    _, wr = _libs()
    if isinstance(p, Line):
        title = p.title + (f" (collapse: {p.collapse})" if p.collapse else "")
        return wr.LinePlot(title=title or None, x=X_AXIS, y=list(p.keys), log_y=p.log_y or None,
                           smoothing_factor=p.smoothing or None, smoothing_type="exponential" if p.smoothing else None)
    if isinstance(p, Media):
        return wr.MediaBrowser(title=p.title or None, media_keys=list(p.keys), mode="gallery", gallery_axis="step")
    if isinstance(p, Scatter):
        x = _config(wr, p.x) if p.x_config else wr.SummaryMetric(p.x)
        return wr.ScatterPlot(title=p.title or None, x=x, y=wr.SummaryMetric(p.y),
                              **({"z": _config(wr, p.color)} if p.color else {}))
    if isinstance(p, Parallel):
        columns = [wr.ParallelCoordinatesPlotColumn(metric=_config(wr, c), display_name=c) for c in p.columns]
        columns += [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(m)) for m in p.metrics]
        return wr.ParallelCoordinatesPlot(title=p.title or None, columns=columns)
    if isinstance(p, Bar):
        return wr.BarPlot(title=p.title or None, metrics=[p.metric], groupby=_config(wr, p.group_by),
                          groupby_aggfunc="mean", groupby_rangefunc="stderr")
    raise TypeError(f"not a dashboard panel: {p!r}")


def _stable(panels: list, *names: str) -> list:
    """``panels`` with ids derived from ``names`` and their position instead of random ones, so the
    same command builds the same specification (and an update keeps each panel's id)."""
    for i, p in enumerate(panels):
        p._id = hashlib.sha1("\0".join((*names, str(i))).encode()).hexdigest()[:10]
    return panels


def _filters(ws: Any, method: str, group: Optional[str]) -> list:
    out = [_config(ws, "method.name") == method]
    return out + [ws.Metric("Group") == group] if group else out


def workspace(entity: str, project: str, method: str, sections: Sequence[Section], group: Optional[str]) -> Any:
    """The workspace of ``method`` (runs of ``group`` only, when given): one open section per section."""
    ws, _ = _libs()
    return ws.Workspace(
        entity=entity, project=project, name=workspace_title(method, group),
        sections=[ws.Section(name=s.name, panels=_stable([panel(p) for p in s.panels], method, s.name), is_open=True)
                  for s in sections],
        settings=ws.WorkspaceSettings(x_axis=X_AXIS, max_runs=50),
        runset_settings=ws.RunsetSettings(filters=_filters(ws, method, group)),
    )


def workspace_title(method: str, group: Optional[str]) -> str:
    return f"jepa_zoo {method}" + (f" ({group})" if group else "")


def view_name(method: str, group: Optional[str]) -> str:
    """The workspace's stable internal name (``nw-<id>-v``, as W&B names views): the same for the
    same (method, group), so publishing again updates it."""
    digest = hashlib.sha1(f"{method}\0{group or ''}".encode()).hexdigest()[:11]
    return f"nw-jz{digest}-v"


def report(entity: str, project: str, method: str, group: str, sections: Sequence[Section],
           text: Sequence[str], table: Optional[str] = None, resolve_project: bool = True) -> Any:
    """A report of the runs of ``group``: a heading, ``text`` paragraphs, the Markdown ``table`` of
    ``python -m jepa_zoo.report`` (when the sweep dir is at hand), then one panel grid per section
    over the group's runs. ``resolve_project=False`` leaves the run sets' project unresolved
    (W&B looks its id up on the server), for a specification written offline."""
    _, wr = _libs()
    filters = f"Config('{CONFIG_PREFIX}method.name') = '{method}' and Metric('Group') = '{group}'"
    runset = (lambda: wr.Runset(entity=entity, project=project, name=group, filters=filters)) if resolve_project \
        else (lambda: wr.Runset(entity="", project="", name=group, filters=filters))
    blocks: list = [wr.H1(f"jepa_zoo sweep {group}"), *(wr.P(t) for t in text)]
    if table:
        blocks.append(wr.MarkdownBlock(text=table))
    for s in sections:
        blocks += [wr.H2(s.name), wr.PanelGrid(runsets=[runset()],
                                               panels=_stable([panel(p) for p in s.panels], group, s.name))]
    return wr.Report(entity=entity, project=project, title=f"jepa_zoo {method} sweep {group}"[:128],
                     description=f"python -m jepa_zoo.dashboard report=true (group {group})", blocks=blocks)


def workspace_spec(w: Any) -> dict:
    """The workspace as W&B stores it (the view's spec), built offline."""
    return w._to_model().spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def report_spec(r: Any) -> dict:
    """The report as W&B stores it (run-set projects unresolved when built offline)."""
    return r._to_model().spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def publish_workspace(w: Any, method: str, group: Optional[str]) -> str:
    """Create or update the workspace under its stable name; returns its URL.

    Raises:
        ProjectNotFound: the project is missing or not readable."""
    from wandb_workspaces.workspaces import internal

    view = w._to_model()
    view.name = view_name(method, group)
    try:  # the lookup takes the name as it appears in a workspace URL (the id without nw-/-v)
        view.id = internal.get_view_dict(w.entity, w.project, internal._internal_name_to_url_query_str(view.name))["id"]
    except ValueError as e:  # wandb-workspaces says which: the project, or the workspace, is not there
        if str(e).startswith("Project"):
            raise ProjectNotFound(f"W&B project {w.entity}/{w.project} not found or not readable with this API key "
                                  "(a run logged to it creates it)") from None
        view.id = ""  # no workspace of that name yet: create it
    resp = internal.upsert_view2(view)
    w._internal_name, w._internal_id = resp["upsertView"]["view"]["name"], resp["upsertView"]["view"]["id"]
    return w.url


def swept_in_group(entity: str, project: str, group: str) -> list:
    """The config keys (override paths) whose values differ between the runs of a W&B group."""
    import wandb

    from jepa_zoo.runs import PATH_KEYS

    def flat(node: Any, prefix: str = "") -> dict:
        if not isinstance(node, dict):
            return {prefix: json.dumps(node, sort_keys=True, default=str)}
        out: dict = {}
        for k, v in node.items():
            out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out

    configs = [flat(run.config.get("cfg") or {}) for run in wandb.Api().runs(f"{entity}/{project}", {"group": group})]
    keys = sorted({k for c in configs for k in c})
    where = (*PATH_KEYS, "run_dir")  # where a run is, not what it is
    return [k for k in keys if len({c.get(k) for c in configs}) > 1 and k not in where and not k.startswith("logger.")]


def publish_report(r: Any) -> str:
    """Save the report, over the project's report of the same title if there is one; its URL."""
    import wandb

    for existing in wandb.Api().reports(f"{r.entity}/{r.project}"):
        if existing.display_name == r.title:
            object.__setattr__(r, "id", existing.id)  # Report is a frozen dataclass; save() updates this id
            break
    r.save()
    return r.url
