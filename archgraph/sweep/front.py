"""The Pareto front of a sweep: ``DIR/pareto.json``, ``DIR/pareto.md`` and ``DIR/pareto.png``.

The front is the complete trials no other complete trial dominates (at least as accurate on the validation split
and at most as many non-zero parameters, better in one). The test accuracy of its members is read once, here, from
their runs' ``summary.json`` (median over seeds); the search never sees it, and it is not stored in the study.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any, Container, Optional

from ..errors import ArchgraphError, ConfigError
from ..format.yaml_io import MAX_FILE_BYTES, atomic_write_bytes, read_limited

if TYPE_CHECKING:   # optuna and matplotlib are imported where a sweep runs and draws
    import optuna
    from matplotlib.figure import Figure
    from optuna.trial import FrozenTrial, TrialState

    from .runner import SweepSpec

OBJECTIVES = [{"name": "val_acc", "direction": "maximize"}, {"name": "nonzero_params", "direction": "minimize"}]


def _shown_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the given URL"


def _read_summary(out_dir: Path, run: str) -> Optional[dict]:
    path = run_path(out_dir, run) / "summary.json"
    try:
        summary = json.loads(read_limited(path, MAX_FILE_BYTES))
    except (ArchgraphError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def run_path(out_dir: Path, run: Any) -> Path:
    """A trial's run folder as the study records it (relative to the sweep folder), resolved inside the sweep
    folder; a path that leads out of it (``../../victim``, an absolute path, a link) is refused: the study may have
    been edited."""
    base = Path(out_dir).resolve()
    if not isinstance(run, str) or not run or "\x00" in run:
        raise ConfigError(f"the study records a run path {run!r} that is not a relative path", file=str(out_dir))
    path = (base / run).resolve()
    if Path(run).is_absolute() or not path.is_relative_to(base):
        raise ConfigError(f"the study records a run path {run!r} that leads out of the sweep folder; refused (was "
                          "the study edited?)", file=str(out_dir))
    return path


def _seed_records(trial: FrozenTrial, seeds: list[int], out_dir: Path) -> list[dict]:
    """The trial's per-seed records (user attributes written by the runner), each checked: a dict with a run path
    inside the sweep folder and a finite parameter count."""
    out = []
    for s in seeds:
        record = trial.user_attrs.get(f"seed-{s}")
        if record is None:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("params"), (int, float)) \
                or isinstance(record.get("params"), bool) or not math.isfinite(record["params"]):
            raise ConfigError(f"trial {trial.number}: its record of seed {s} in the study is not what the sweep "
                              f"writes ({str(record)[:80]!r}); was the study edited?", file=str(out_dir))
        run_path(out_dir, record.get("run"))
        out.append(record)
    return out


def _plain(value: Any) -> Any:
    """Optuna keeps objective values as floats: a whole number of parameters reads back as an int."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def dominates(a: dict, b: dict) -> bool:
    """Whether front entry ``a`` dominates ``b`` (val_acc up, nonzero_params down)."""
    return (a["val_acc"] >= b["val_acc"] and a["nonzero_params"] <= b["nonzero_params"]
            and (a["val_acc"] > b["val_acc"] or a["nonzero_params"] < b["nonzero_params"]))


def _entry(trial: FrozenTrial, out_dir: Path, seeds: list[int], with_test: bool) -> dict:
    runs = _seed_records(trial, seeds, out_dir)
    entry: dict[str, Any] = {"trial": trial.number, "params": dict(trial.params),
                             "val_acc": trial.values[0], "nonzero_params": _plain(trial.values[1]),
                             "params_total": _plain(statistics.median(r["params"] for r in runs)) if runs else None,
                             "wall_s": trial.user_attrs.get("wall_s")}
    if with_test:
        seeds_out = []
        for r in runs:
            summary = _read_summary(out_dir, r["run"])
            seeds_out.append({**r, "test_acc": summary.get("test_acc") if summary else None})
        tests = [s["test_acc"] for s in seeds_out if s["test_acc"] is not None]
        entry["test_acc"] = statistics.median(tests) if len(tests) == len(seeds_out) and tests else None
        entry["seeds"] = seeds_out
    return entry


def read_trials(study: optuna.Study, spec: SweepSpec,
                states: Optional[Container[TrialState]] = None) -> list[FrozenTrial]:
    """The study's trials (those in ``states``); a trial attribute that is not JSON (an edited study.db) is a
    :class:`ConfigError`, not the JSON decoder's traceback."""
    try:
        return study.get_trials(deepcopy=False, states=states)
    except ValueError as err:
        raise ConfigError(f"study '{spec.study_name}' in {_shown_url(spec.storage_url)} holds a trial attribute "
                          f"that is not JSON ({err}); was it edited?") from None


def front_data(study: optuna.Study, spec: SweepSpec) -> dict:
    """pareto.json's content: every complete trial's objectives, and the front (fewest parameters first) with its
    members' per-seed runs and test accuracy."""
    from optuna.trial import TrialState
    out_dir = Path(spec.out_dir)
    seeds = list(spec.seeds)
    complete = read_trials(study, spec, states=(TrialState.COMPLETE,))
    for t in complete:
        if len(t.values or ()) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in t.values):
            raise ConfigError(f"trial {t.number} in the study has objective values {t.values!r}, not two finite "
                              "numbers; was the study edited?", file=str(out_dir))
    best = {t.number for t in study.best_trials} if complete else set()
    front = [_entry(t, out_dir, seeds, True) for t in complete if t.number in best]
    front.sort(key=lambda e: (e["nonzero_params"], -e["val_acc"], e["trial"]))
    trials = [{"trial": t.number, "params": dict(t.params), "val_acc": t.values[0],
               "nonzero_params": _plain(t.values[1])} for t in complete]
    missing = [e["trial"] for e in front if e["test_acc"] is None]
    return {"archgraph_sweep": 1, "study": spec.study_name, "storage": _shown_url(spec.storage_url),
            "run_file": spec.run_file, "search_space": {p.key: p.spec for p in spec.params},
            "settings": dict(spec.settings), "seeds": seeds, "objectives": OBJECTIVES, "aggregate": "median",
            "trials_complete": len(complete), "trials_requested": spec.trials, "front": front,
            "test_acc_missing": missing, "trials": trials}


def _num(value: Any, digits: int = 4) -> str:
    """A searched value: a float to ``digits`` significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.{digits}g}"
    return f"{value:,.0f}"


def _count(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def front_markdown(data: dict) -> str:
    keys = list(data["search_space"])
    seeds = ", ".join(map(str, data["seeds"]))
    lines = [f"# Pareto front of sweep '{data['study']}'", "",
             f"{len(data['front'])} of {data['trials_complete']} complete trials are non-dominated (maximise "
             f"validation accuracy, minimise non-zero parameters). Every number is the median over seeds {seeds}; "
             "the test accuracy is read once, at the end, from each member's summary.json.", "",
             f"Run file: `{Path(data['run_file']).name}`; search space: "
             + ", ".join(f"`{k}={v}`" for k, v in data["search_space"].items())
             + ("; fixed: " + ", ".join(f"`{k}={v}`" for k, v in data["settings"].items()) if data["settings"]
                else "") + ".", ""]
    head = ["trial", *keys, "val acc", "non-zero params", "test acc", "params", "runs"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---:" if h != "runs" else "---" for h in head) + "|")
    for e in data["front"]:
        runs = Path(e["seeds"][0]["run"]).parent.as_posix() if e["seeds"] else ""
        row = [str(e["trial"]), *(_num(e["params"].get(k), 4) for k in keys), f"{e['val_acc']:.4f}",
               _count(e["nonzero_params"]), "n/a" if e["test_acc"] is None else f"{e['test_acc']:.4f}",
               _count(e["params_total"]), f"`{runs}`"]
        lines.append("| " + " | ".join(row) + " |")
    if data["test_acc_missing"]:
        lines += ["", "n/a: the trial's runs are not under this folder (another machine ran them)."]
    return "\n".join(lines) + "\n"


def front_figure(data: dict) -> Figure:
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    trials = data["trials"]
    front = data["front"]
    ax.scatter([t["nonzero_params"] for t in trials], [t["val_acc"] for t in trials], s=18, color="#adb5bd",
               label="trials (validation)", zorder=2)
    if front:
        xs = [e["nonzero_params"] for e in front]
        ax.plot(xs, [e["val_acc"] for e in front], color="#0d6efd", marker="o", markersize=5, linewidth=1.5,
                drawstyle="steps-post", label="Pareto front (validation)", zorder=3)
        tested = [e for e in front if e["test_acc"] is not None]
        if tested:
            ax.scatter([e["nonzero_params"] for e in tested], [e["test_acc"] for e in tested], marker="x", s=36,
                       color="#dc3545", label="front, test accuracy", zorder=4)
        for e in front:
            ax.annotate(str(e["trial"]), (e["nonzero_params"], e["val_acc"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color="#0d6efd")
    values = [t["nonzero_params"] for t in trials if t["nonzero_params"] > 0]
    if values and max(values) / min(values) > 20:
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel("non-zero parameters (median over seeds)")
    ax.set_ylabel("accuracy (median over seeds)")
    ax.set_title(f"sweep '{data['study']}': {len(front)} of {data['trials_complete']} trials on the front",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def write_front(study: optuna.Study, spec: SweepSpec) -> dict:
    """Write DIR/pareto.json, DIR/pareto.md and DIR/pareto.png; return the JSON data."""
    import io
    out = Path(spec.out_dir)
    data = front_data(study, spec)
    atomic_write_bytes(out / "pareto.json", (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())
    atomic_write_bytes(out / "pareto.md", front_markdown(data).encode())
    buf = io.BytesIO()
    front_figure(data).savefig(buf, format="png", dpi=120)
    atomic_write_bytes(out / "pareto.png", buf.getvalue())
    return data


__all__ = ["dominates", "front_data", "front_markdown", "write_front"]
