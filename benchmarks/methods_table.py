"""Every growth/pruning method on one dataset: one markdown row per method and a plot of accuracy against non-zero
parameters.

Runs ``examples/<dataset>_<method>.yaml`` for every registered method that has one (GNAP, CGaP, SCS, GbP, Gumbel,
Budget, ...) with each seed, plus the dense seed network of the first run file trained as it is (the baseline),
and prints one row per method: mean test accuracy (min-max over seeds), non-zero and dense parameters, MACs,
training MACs where the method counts them (CGaP, SCS, GbP: MACs of training forward passes; SCS with its
sampled structures, next to what the same steps cost with every structure active), wall time, growth and prune
events. The plot (every run a point, the dense seed a star) goes to ``docs/img/methods_<dataset>.png``.

    python benchmarks/methods_table.py                                   # digits, seeds 0 and 1
    python benchmarks/methods_table.py --dataset mnist --data-root ../shared/data --seeds 0
    python benchmarks/methods_table.py --methods cgap scs gbp --seeds 0 1 2

Wall times are for this machine at the moment of the run (threads as the run files say); compare rows of one run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from run_rows import clear  # noqa: E402

HEADER = ("| method | test acc (min-max) | non-zero params | params | MACs | train MACs | wall s | growth | prune |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
NAMES = {"dense": "dense seed", "gnap": "GNAP", "cgap": "CGaP", "scs": "SCS", "gbp": "GbP", "gumbel": "Gumbel",
         "budget": "Budget"}


def run_files(dataset: str, methods) -> dict[str, Path]:
    from archgraph.train.strategies import STRATEGIES
    wanted = methods or [m for m in STRATEGIES if m != "dense"]
    out = {}
    for m in wanted:
        path = ROOT / "examples" / f"{dataset}_{m}.yaml"
        if path.exists() and m in STRATEGIES:
            out[m] = path
    return out


def dense_config(path: Path) -> dict:
    """The first run file's seed, data and schedule with the dense method: the seed trained as it is."""
    from archgraph.train.config import load_config
    cfg = load_config(path).model_dump(mode="json")
    if isinstance(cfg["seed"], str):
        cfg["seed"] = str((path.parent / cfg["seed"]).resolve())
    cfg["method"] = {"name": "dense"}
    cfg["name"] = "dense-seed"
    return cfg


def fmt_macs(v) -> str:
    if v is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.2f}{unit}"
    return f"{v:.0f}"


def row(method: str, runs: list[dict]) -> str:
    accs = [100 * r["test_acc"] for r in runs]
    mean = lambda k: statistics.mean(r[k] for r in runs)        # noqa: E731
    acc = f"{statistics.mean(accs):.2f}%" + (f" ({min(accs):.2f}-{max(accs):.2f})" if len(runs) > 1 else "")
    train = None
    if all("train_macs" in r for r in runs):
        train = fmt_macs(mean("train_macs"))
        if all("train_macs_dense" in r for r in runs):
            train += f" of {fmt_macs(mean('train_macs_dense'))}"
    return (f"| {NAMES.get(method, method)} | {acc} | {mean('nonzero_params'):,.0f} | {mean('params'):,.0f} | "
            f"{mean('macs'):,.0f} | {train or '-'} | {mean('wall_s'):.1f} | {mean('growth_events'):.1f} | "
            f"{mean('prune_events'):.1f} |")


def plot(results: dict[str, list[dict]], dataset: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    fig, ax = plt.subplots(figsize=(7.4, 4.2), dpi=120)
    for method, runs in results.items():
        xs = [r["nonzero_params"] for r in runs]
        ys = [100 * r["test_acc"] for r in runs]
        style = dict(marker="*", s=160, color="black") if method == "dense" else dict(marker="o", s=40)
        ax.scatter(xs, ys, label=NAMES.get(method, method), alpha=0.85, **style)
    sizes = [r["nonzero_params"] for runs in results.values() for r in runs]
    if max(sizes) > 10 * min(sizes):
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel("non-zero parameters of the final network")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{dataset}: accuracy against size, one point per run")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a point
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    import archgraph
    from archgraph.cli.grow import parse_settings
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits", help="runs examples/<dataset>_<method>.yaml")
    p.add_argument("--methods", nargs="+", help="method names (default: every one with a run file)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--data-root")
    p.add_argument("--no-dense", action="store_true", help="leave out the dense seed baseline")
    p.add_argument("--out", default="runs/methods", help="where the runs go (replaced)")
    p.add_argument("--plot", help="plot path (default docs/img/methods_<dataset>.png)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of every run file (e.g. data.limit=2000)")
    args = p.parse_args(argv)
    extra = parse_settings(args.set)
    files = run_files(args.dataset, args.methods)
    if not files:
        p.error(f"no examples/{args.dataset}_<method>.yaml for {args.methods or 'any method'}")
    out = Path(args.out) / args.dataset
    clear(out)
    jobs = [(m, path) for m, path in files.items()]
    if not args.no_dense:
        jobs.insert(0, ("dense", dense_config(next(iter(files.values())))))
    results: dict[str, list[dict]] = {}
    print(HEADER, flush=True)
    for method, config in jobs:
        for seed in args.seeds:
            summary = archgraph.grow(config, out / f"{method}-seed{seed}", data_root=args.data_root, quiet=True,
                                     settings={**extra, "schedule.seed": seed})
            results.setdefault(method, []).append(summary)
        print(row(method, results[method]), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    figure = Path(args.plot) if args.plot else ROOT / "docs" / "img" / f"methods_{args.dataset}.png"
    plot(results, args.dataset, figure)
    print(f"\nplot: {figure}; runs and results.json: {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
