"""Gumbel / Budget against the dense network they start from: one markdown row per run.

For each seed, trains the run file's seed graph dense (its own initial weights, no masks) with the run file's
schedule, then runs the method, and prints both rows: test accuracy, non-zero and dense parameters, MACs (dense and
non-zero), wall time, prune events and epochs.

    python benchmarks/masks_table.py examples/digits_gumbel.yaml examples/digits_budget.yaml --seeds 0 1
    python benchmarks/masks_table.py examples/mnist_budget.yaml --data-root ../shared/data --seeds 0

Wall times are for this machine at the moment of the run (threads as the config says); compare rows of one run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from run_rows import clear, header, row  # noqa: E402


def main(argv=None) -> int:
    import archgraph
    from archgraph.cli.grow import parse_settings
    from archgraph.train.config import load_config
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="+", help="Gumbel or Budget run files")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--data-root")
    p.add_argument("--no-dense", action="store_true", help="skip the dense baseline")
    p.add_argument("--out", default="runs/bench_masks", help="where the runs go (replaced)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a run-file field")
    args = p.parse_args(argv)
    extra = parse_settings(args.set)
    print(header(growth=False), flush=True)
    results = []
    for config in args.configs:
        cfg = load_config(config)
        name = cfg.name or Path(config).stem
        for seed in args.seeds:
            out = Path(args.out) / f"{Path(config).stem}-seed{seed}"
            clear(out)
            settings = {**extra, "schedule.seed": seed}
            entry = {"config": config, "seed": seed}
            if not args.no_dense:
                entry["dense"] = archgraph.grow(config, out / "dense", data_root=args.data_root, quiet=True,
                                                settings={**settings, "method": {"name": "dense"}})
                print(row(f"dense {Path(cfg.seed).stem if isinstance(cfg.seed, str) else 'seed'}", seed,
                          entry["dense"], growth=False), flush=True)
            entry["method"] = archgraph.grow(config, out / cfg.method.name, data_root=args.data_root, quiet=True,
                                             settings=settings)
            print(row(f"{cfg.method.name} {name}", seed, entry["method"], growth=False), flush=True)
            results.append(entry)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "masks_table.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
