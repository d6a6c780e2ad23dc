"""A run's history as one graphviz picture: the versions as a timeline, each edge labelled with the rule that made
the next version. Each version shows its number, its parameters (and non-zero parameters when pruning made them
differ) and the metric when it was made and after its last epoch.

>>> render_history("runs/gnap", "history.svg")   # doctest: +SKIP
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Optional, Union

from ..rules import RULES
from .render import plain, write_dot
from .run import Run, Version

GROWTH = "#198754"
PRUNE = "#dc3545"
ROW = 6  # versions per row of the timeline
METRICS = ("val_bpc", "val_acc", "train_acc", "test_acc", "val_loss", "train_loss")   # a text run: bits per char


#: the test score a picture's title shows: bits per character for a text run, else accuracy
SCORES = ("test_bpc", "test_acc")


def main_metric(run: Run) -> Optional[str]:
    """The metric the pictures show: a text run's validation bits per character, else validation accuracy when the
    log has it, else the first one it has."""
    for name in METRICS:
        if any(name in (e.get("metrics") or {}) for e in run.epochs):
            return name
    return None


def _defaults(rule: str) -> dict:
    """The rule's arguments that have defaults, with them (empty for a rule this archgraph does not know)."""
    cls = RULES.get(rule)
    if cls is None:
        return {}
    return {k: f.default for k, f in cls.model_fields.items() if not f.is_required()}


def key_args(version: Version, limit: int = 4) -> list[str]:
    """``key=value`` strings of a rule's arguments that differ from the rule's defaults, long lists summarised."""
    out = []
    defaults = _defaults(version.rule or "")
    for key, value in version.args.items():
        if value is None or (key in defaults and _same(defaults[key], value)):
            continue
        if isinstance(value, (list, tuple)):
            text = f"[{len(value)} items]" if len(value) > 4 else json.dumps(value, separators=(",", ":"))
        elif isinstance(value, float):
            text = f"{value:g}"
        else:
            text = str(value)
        if len(text) > 24:
            text = text[:21] + "..."
        out.append(f"{key}={text}")
    if len(out) > limit:
        out = out[:limit] + ["..."]
    return out


def _same(default: object, value: object) -> bool:
    if isinstance(default, tuple):
        default = list(default)
    return default == value


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))   # text from the history goes into an HTML-like label


def version_label(run: Run, v: Version, metric: Optional[str]) -> str:
    """HTML-like graphviz label of one version."""
    rows = [f'<B>v{v.version}</B>']
    params: Optional[int]
    try:
        params = run.graph(v.version).params
    except Exception:  # the graph file may be missing; the log's numbers still tell the story
        params = v.metrics.get("params")
    made = run.metrics_at(v.version) if v.version else {}
    end = run.metrics_end(v.version)
    nonzero = end.get("nonzero_params", v.metrics.get("nonzero_params"))
    if params is not None:
        rows.append(f"{_fmt(params)} params")
    if nonzero is not None and nonzero != params:
        rows.append(f"{_fmt(nonzero)} non-zero")
    if metric:
        before, after = made.get(metric), end.get(metric)
        if before is not None and after is not None:
            rows.append(f"{html.escape(metric)} {_fmt(before)} &#8594; {_fmt(after)}")
        elif after is not None or before is not None:
            rows.append(f"{html.escape(metric)} {_fmt(after if after is not None else before)}")
    if v.epoch is not None:
        rows.append(f'<FONT POINT-SIZE="8" COLOR="#6c757d">epoch {html.escape(str(v.epoch))}'
                    + (f", step {html.escape(str(v.step))}" if v.step is not None else "") + "</FONT>")
    return "<" + "<BR/>".join(rows) + ">"


def history_dot(run_dir: Union[str, os.PathLike, Run], *, row: int = ROW) -> str:
    """DOT source of the history timeline of a run directory."""
    import graphviz
    run = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    metric = main_metric(run)
    versions = run.versions
    dot = graphviz.Digraph("history")
    title = f"{run.name}: {len(versions)} version{'s' if len(versions) != 1 else ''}"
    summary = run.summary or (run.end or {}).get("summary") or {}
    score = next((k for k in SCORES if isinstance(summary.get(k), (int, float))), None)
    if score:
        title += f", {score} {summary[score]:.3f}"
    # left to right; every ``row`` versions a new row starts (its first edge does not constrain the layout, so
    # the row begins at the left again), keeping long runs readable
    dot.attr(rankdir="LR", fontname="Helvetica", label=plain(title), labelloc="t", nodesep="0.5", ranksep="0.6")
    dot.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10", fillcolor="#f8f9fa")
    dot.attr("edge", fontname="Helvetica", fontsize="9")
    for v in versions:
        last = v.version == versions[-1].version
        fill = "#e7f1ff" if v.version == 0 else ("#fde2e4" if v.kind == "prune" else "#e8f5e9")
        dot.node(f"v{v.version}", version_label(run, v, metric), fillcolor=fill, penwidth="2.5" if last else "1")
    for v in versions[1:]:
        colour = PRUNE if v.kind == "prune" else GROWTH
        label = "<" + "<BR/>".join([f"<B>{html.escape(v.rule or '')}</B>"]
                                   + [html.escape(a) for a in key_args(v)]) + ">"
        wraps = v.version % row == 0
        dot.edge(f"v{v.parent}", f"v{v.version}", label=label, color=colour, fontcolor=colour, penwidth="1.6",
                 constraint="false" if wraps else "true")
        if wraps:  # keep the new row below the previous one
            dot.edge(f"v{v.version - row}", f"v{v.version}", style="invis", constraint="false")
    legend = ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2">'
              f'<TR><TD><FONT COLOR="{GROWTH}">&#9644; growth</FONT></TD>'
              f'<TD><FONT COLOR="{PRUNE}">&#9644; prune</FONT></TD></TR></TABLE>>')
    dot.node("__legend", legend, shape="plaintext", style="", fontsize="9")
    return dot.source


def render_history(run_dir: Union[str, os.PathLike], out: Union[str, os.PathLike], dpi: Optional[int] = None) -> Path:
    """Draw the history timeline of a run directory to ``out`` (.svg, .png, .pdf or .dot)."""
    return write_dot(history_dot(run_dir), out, dpi)
