"""MNIST: accuracy against non-zero parameters of finished runs, beside the published and hand-designed points.

Each ``LABEL=RUN_DIR`` names a finished ``archgraph grow`` run (its ``summary.json`` is read: test and validation
accuracy, non-zero and dense parameters, epochs, wall time); a ``--sweep DIR`` adds the front of an ``archgraph
sweep`` (its ``pareto.json``). Writes a table (``--md``) and a figure (``--png``) of test accuracy against non-zero
parameters (log scale) with the runs' Pareto front, and the reference points, which are not run here:

    GNAP paper (Mixter & Akhtar 2023)     99.44% with 6.2k parameters
    hand-designed CNNs                    99.4% with about 7k, 99.5% with 8.9k (with augmentation)
    smallest known net at 98%             575 parameters

    python benchmarks/mnist_front.py "GNAP deep=runs/mnist_gnap_deep" "dense 5-conv=runs/dense_deep" \\
        --md benchmarks/results/mnist_front.md --png docs/img/mnist_front.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: (label, non-zero parameters, test accuracy) of the published points
REFERENCES = [("GNAP paper", 6200, 0.9944), ("hand-designed, ~7k", 7000, 0.994),
              ("hand-designed, 8.9k", 8900, 0.995), ("smallest at 98%", 575, 0.98)]


def read_run(label: str, run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    return {"label": label, "run": str(run), "method": summary.get("method"), "test_acc": summary["test_acc"],
            "val_acc": summary.get("val_acc"), "nonzero_params": summary["nonzero_params"],
            "params": summary["params"], "epochs": summary.get("epochs"), "wall_s": summary.get("wall_s")}


def read_sweep(folder: Path) -> list[dict]:
    data = json.loads((folder / "pareto.json").read_text())
    return [{"label": f"sweep trial {e['trial']}", "run": str(folder), "method": "sweep", "test_acc": e["test_acc"],
             "val_acc": e["val_acc"], "nonzero_params": e["nonzero_params"], "params": e["params_total"],
             "epochs": None, "wall_s": None} for e in data["front"] if e["test_acc"] is not None]


def pareto(points: list[dict]) -> list[dict]:
    """The points no other point beats on both test accuracy and non-zero parameters, fewest parameters first."""
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (p["nonzero_params"], -p["test_acc"])):
        if p["test_acc"] > best:
            front.append(p)
            best = p["test_acc"]
    return front


def markdown(points: list[dict]) -> str:
    on_front = {id(p) for p in pareto(points)}
    lines = ["| run | method | test acc | val acc | non-zero params | params | epochs | wall s | on the front |",
             "|---|---|---:|---:|---:|---:|---:|---:|:---:|"]
    for p in sorted(points, key=lambda p: p["nonzero_params"]):
        val = "-" if p["val_acc"] is None else f"{100 * p['val_acc']:.2f}%"
        wall = "-" if p["wall_s"] is None else f"{p['wall_s']:,.0f}"
        lines.append(f"| {p['label']} | {p['method']} | {100 * p['test_acc']:.2f}% | {val} | "
                     f"{p['nonzero_params']:,} | {p['params']:,} | {p['epochs'] or '-'} | {wall} | "
                     f"{'yes' if id(p) in on_front else ''} |")
    lines += ["", "Reference points (published, not run here): "
              + "; ".join(f"{label} {100 * acc:.2f}% with {n:,}" for label, n, acc in REFERENCES) + "."]
    return "\n".join(lines) + "\n"


def figure(points: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.scatter([p["nonzero_params"] for p in points], [100 * p["test_acc"] for p in points], s=22,
               color="#6c757d", zorder=2, label="archgraph runs (test)")
    for p in points:
        ax.annotate(p["label"], (p["nonzero_params"], 100 * p["test_acc"]), textcoords="offset points",
                    xytext=(4, -9), fontsize=7, color="#495057")
    front = pareto(points)
    ax.plot([p["nonzero_params"] for p in front], [100 * p["test_acc"] for p in front], color="#0d6efd",
            drawstyle="steps-post", linewidth=1.5, zorder=3, label="archgraph front")
    ax.scatter([n for _, n, _ in REFERENCES], [100 * a for _, _, a in REFERENCES], marker="*", s=90,
               color="#dc3545", zorder=4, label="published / hand-designed")
    for i, (label, n, acc) in enumerate(REFERENCES):
        ax.annotate(label, (n, 100 * acc), textcoords="offset points", xytext=(-20, 7 if i % 2 == 0 else -12),
                    fontsize=7, color="#dc3545")
    ax.set_xscale("log")
    ax.set_xlabel("non-zero parameters")
    ax.set_ylabel("MNIST test accuracy (%)")
    ax.set_title("MNIST: accuracy against non-zero parameters", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", metavar="LABEL=RUN_DIR", help="finished grow runs")
    ap.add_argument("--sweep", action="append", default=[], metavar="DIR", help="an archgraph sweep folder")
    ap.add_argument("--md", type=Path, help="write the table here (default: print it)")
    ap.add_argument("--json", type=Path, help="write the points here")
    ap.add_argument("--png", type=Path, help="write the figure here")
    args = ap.parse_args(argv)
    points = []
    for item in args.runs:
        label, sep, folder = item.partition("=")
        if not sep:
            ap.error(f"{item!r}: expected LABEL=RUN_DIR")
        points.append(read_run(label, Path(folder)))
    for folder in args.sweep:
        points += read_sweep(Path(folder))
    if not points:
        ap.error("give at least one LABEL=RUN_DIR or --sweep DIR")
    table = markdown(points)
    if args.md:
        args.md.write_text(table)
    else:
        sys.stdout.write(table)
    if args.json:
        args.json.write_text(json.dumps(points, indent=2) + "\n")
    if args.png:
        figure(points, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
