"""Training curves of a run (matplotlib, no display needed): accuracy, loss, and parameters / non-zero parameters,
with every growth event marked by a green dashed line and every prune event by a red dotted one.

>>> plot_history("runs/gnap", "curves.png")   # doctest: +SKIP
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

from ..errors import ArchgraphError
from ..format.yaml_io import atomic_write_bytes
from .run import Run

PANELS = (
    ("accuracy", (("train_acc", "train"), ("val_acc", "validation"))),
    ("loss", (("train_loss", "train"), ("val_loss", "validation"))),
    ("parameters", (("params", "params"), ("nonzero_params", "non-zero params"))),
)
GROWTH = "#198754"
PRUNE = "#dc3545"
FORMATS = ("png", "svg", "pdf")


def history_figure(run_dir: Union[str, os.PathLike, Run]):
    """The matplotlib Figure of a run's curves (three panels sharing the x axis)."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    run = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    if not run.epochs:
        raise ArchgraphError("the run has no epoch events yet: nothing to plot", file=str(run.path / "history.jsonl"))
    fig = Figure(figsize=(8, 8.5), layout="constrained")
    axes = fig.subplots(len(PANELS), 1, sharex=True)
    events = [(run.x_of(e), e.get("kind")) for e in run.rewrites if run.x_of(e) is not None]
    for ax, (title, series) in zip(axes, PANELS):
        drawn = False
        for key, label in series:
            xs, ys = run.series(key, with_rewrites=title == "parameters")
            if xs:
                ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=label,
                        drawstyle="steps-post" if title == "parameters" else "default")
                drawn = True
        for x, kind in events:
            ax.axvline(x, color=PRUNE if kind == "prune" else GROWTH, linestyle=":" if kind == "prune" else "--",
                       linewidth=1, alpha=0.8)
        ax.set_ylabel(title)
        ax.grid(True, alpha=0.3)
        if title == "parameters":
            ax.ticklabel_format(axis="y", style="plain")
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        if drawn:
            handles, labels = ax.get_legend_handles_labels()
            if title == "accuracy" and events:
                handles += [Line2D([], [], color=GROWTH, linestyle="--"), Line2D([], [], color=PRUNE, linestyle=":")]
                labels += ["growth", "prune"]
            ax.legend(handles, labels, loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", va="center", color="#6c757d")
    axes[-1].set_xlabel(run.x_axis)
    fig.suptitle(f"{run.path.name}: {len(run.epochs)} epochs, {len(run.versions)} versions")
    return fig


def plot_history(run_dir: Union[str, os.PathLike, Run], out: Union[str, os.PathLike], dpi: int = 120) -> Path:
    """Write the curves of a run to ``out`` (.png, .svg or .pdf), atomically."""
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ArchgraphError(f"unknown picture format '.{fmt}'; use .png, .svg or .pdf", file=str(out))
    fig = history_figure(run_dir)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    atomic_write_bytes(out, buf.getvalue())
    return out
