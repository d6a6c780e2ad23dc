"""One self-contained HTML report of a run: a slider over the versions showing each version's graph, its diff from
the previous version, the rule applied and the metric curves with the current position marked.

The page is the template in ``viz/`` (HTML, CSS and JS, shipped inside the installed package as ``archgraph/viz``)
with the run's data inlined as JSON and the pictures as inline SVG made by graphviz. It needs no network: a
Content-Security-Policy in the page forbids fetching anything.

>>> write_report("runs/gnap")        # doctest: +SKIP
PosixPath('runs/gnap/report.html')
"""
from __future__ import annotations

import html
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Optional, Union

from ..errors import ArchgraphError
from ..format.yaml_io import atomic_write_text
from .diff import diff_dot, graph_diff
from .render import dot_binary, to_dot
from .run import Run
from .timeline import main_metric

TEMPLATE_FILES = ("report.html.template", "report.css", "report.js")
_PLACEHOLDER = re.compile(r"\{\{(title|css|js|data)\}\}")


def template_dir() -> Path:
    """The folder holding the report template: ``archgraph/viz`` of an installed package, else ``viz/`` of the
    source checkout the package is imported from (a plain checkout or an editable install)."""
    from importlib.resources import files
    candidates = []
    try:
        candidates.append(Path(str(files("archgraph") / "viz")))
    except (ModuleNotFoundError, TypeError):
        pass
    candidates.append(Path(__file__).resolve().parents[2] / "viz")
    for folder in candidates:
        if all((folder / name).is_file() for name in TEMPLATE_FILES):
            return folder
    raise ArchgraphError("the report template is missing (looked in " + ", ".join(map(str, candidates)) +
                         "); reinstall archgraph")


def load_template() -> dict[str, str]:
    folder = template_dir()
    return {name: (folder / name).read_text(encoding="utf-8") for name in TEMPLATE_FILES}


def _svgs(sources: list[str]) -> list[str]:
    """Render many DOT sources with one ``dot`` process: it writes one SVG document per input graph."""
    if not sources:
        return []
    result = subprocess.run([dot_binary(), "-Tsvg"], input="\n".join(sources).encode(), capture_output=True,
                            timeout=600)
    if result.returncode != 0:
        raise ArchgraphError(f"graphviz failed: {result.stderr.decode(errors='replace').strip()}")
    docs = [d for d in result.stdout.decode().split("<?xml") if d.strip()]
    if len(docs) != len(sources):
        raise ArchgraphError(f"graphviz returned {len(docs)} pictures for {len(sources)} graphs")
    # inline SVG in HTML takes no XML prolog or doctype
    return [d[d.index("<svg"):] for d in docs]


def report_data(run: Union[Run, str, os.PathLike]) -> dict:
    """Everything the page shows, as JSON-able data (pictures as SVG text)."""
    run = run if isinstance(run, Run) else Run(run)
    versions: list[dict] = []
    sources: list[str] = []
    previous = None
    for v in run.versions:
        try:
            graph = run.graph(v.version)
        except ArchgraphError:
            graph = None
        versions.append(_version_entry(run, v, graph, previous, sources))
        previous = graph
    pictures = _svgs(sources)
    for entry in versions:
        for key in ("graph_svg", "diff_svg"):
            if entry[key] is not None:
                entry[key] = pictures[entry[key]]
    names = ("train_acc", "val_acc", "train_loss", "val_loss", "params", "nonzero_params", "train_bpc", "val_bpc")
    series = {}
    for name in names:
        xs, ys = run.series(name, with_rewrites=name in ("params", "nonzero_params"))
        series[name] = [[x, y] for x, y in zip(xs, ys)]
    events = [{"x": run.x_of(e), "kind": e.get("kind") or "growth", "version": e["version"], "rule": e["rule"],
               "exact": e.get("exact")} for e in run.rewrites if run.x_of(e) is not None]
    return {"run": run.name, "folder": run.path.name, "x_axis": run.x_axis, "metric": main_metric(run),
            "config": run.config, "summary": run.summary or (run.end or {}).get("summary") or {},
            "versions": versions, "series": series, "events": events}


def _version_entry(run: Run, v, graph, previous, sources: list[str]) -> dict:
    """One version's entry; its pictures are appended to ``sources`` (DOT) and named by their index there."""
    entry = {
        "version": v.version, "hash": v.hash, "rule": v.rule or "seed", "label": v.rule_label(),
        "args": dict(v.args), "kind": "seed" if v.version == 0 else (v.kind or "growth"),
        "epoch": v.epoch, "step": v.step, "exact": v.exact, "reason": v.reason,
        "x": None if v.version == 0 else run.x_of({"epoch": v.epoch, "step": v.step}),
        "params": graph.params if graph is not None else v.metrics.get("params"),
        "macs": graph.macs if graph is not None else v.metrics.get("macs"),
        "at": run.metrics_at(v.version) if v.version else {}, "end": run.metrics_end(v.version),
        "changes": [], "focus": None, "graph_svg": None, "diff_svg": None,
    }
    if graph is None:
        return entry
    entry["graph_svg"] = len(sources)
    sources.append(to_dot(graph, title=f"version {v.version}"))
    if previous is not None:
        d = graph_diff(previous, graph)
        entry["changes"] = d.lines() or ["no node changed"]
        # the node the rule was about; a reader that was merely rewired only when nothing else changed
        order = [*dict.fromkeys([*graph.nodes, *previous.nodes])]
        main = set(d.added) | set(d.widened) | set(d.pruned) | set(d.removed)
        entry["focus"] = next((n for n in order if n in (main or set(d.changed))), None)
        entry["diff_svg"] = len(sources)
        sources.append(diff_dot(previous, graph, title=f"version {v.version - 1} -> {v.version}"))
    return entry


def render_report(data: dict, title: Optional[str] = None) -> str:
    """The report page for ``data`` (see :func:`report_data`)."""
    parts = load_template()
    # "<" escaped inside the JSON, so no string in the data can close the <script> element that holds it
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    values = {"title": html.escape(title or data.get("run") or "run"), "css": parts["report.css"],
              "js": parts["report.js"], "data": blob}
    # one pass, so text inside the CSS, JS or data is never taken for a placeholder
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], parts["report.html.template"])


def write_report(run_dir: Union[str, os.PathLike], out: Union[str, os.PathLike, None] = None) -> Path:
    """Write ``DIR/report.html`` (or ``out``) for a run directory, atomically; returns its path."""
    run = Run(run_dir)
    out = Path(out) if out is not None else run.path / "report.html"
    atomic_write_text(out, render_report(_finite(report_data(run))))
    return out


def _finite(value):
    """NaN and infinities become ``None``: JSON has no spelling for them."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
