"""GNAP against a dense baseline: one markdown row per run.

For each seed, runs the GNAP config, then trains the *final* GNAP architecture dense from scratch (its initial
weights, no masks) for as many epochs as GNAP trained, with the same optimizer, learning rate (cosine-decayed),
augmentation and label smoothing, and the seed architecture the same way (a dense network of about GNAP's non-zero
size), and prints the three rows: test accuracy, non-zero and dense parameters, MACs (dense and
non-zero), wall time and GNAP's growth/prune events.

    python benchmarks/gnap_table.py examples/digits_gnap.yaml --seeds 0 1 2
    python benchmarks/gnap_table.py examples/mnist_gnap.yaml --data-root ../shared/data --seeds 0

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
    from archgraph.train.config import load_config
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", help="a GNAP run file")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--data-root")
    p.add_argument("--out", default="runs/bench", help="where the runs go (replaced)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a run-file field")
    args = p.parse_args(argv)
    from archgraph.cli.grow import parse_settings
    extra = parse_settings(args.set)
    cfg = load_config(args.config)
    name = cfg.name or Path(args.config).stem
    print(header(growth=True), flush=True)
    results = []
    for seed in args.seeds:
        out = Path(args.out) / f"{Path(args.config).stem}-seed{seed}"
        clear(out)
        gnap = archgraph.grow(args.config, out / "gnap", data_root=args.data_root, quiet=True,
                              settings={**extra, "schedule.seed": seed})
        print(row(f"GNAP {name}", seed, gnap, growth=True), flush=True)
        final = (out / "gnap" / "versions" / f"{gnap['final_version']:04d}.yaml").resolve()
        dense_cfg = cfg.model_dump(mode="json")
        dense_cfg.update(seed=str(final), method={"name": "dense"})
        dense_cfg["schedule"].update(seed=seed, epochs=gnap["epochs"], lr_schedule="cosine")
        for key, value in extra.items():
            if key.startswith(("data.", "schedule.")) and key not in ("schedule.epochs", "schedule.seed"):
                section, field = key.split(".", 1)
                dense_cfg[section][field] = value
        dense = archgraph.grow(dense_cfg, out / "dense", data_root=_root(args, cfg), quiet=True)
        print(row("dense, GNAP's final architecture", seed, dense, growth=True), flush=True)
        seed_cfg = dict(dense_cfg, seed=str((out / "gnap" / "versions" / "0000.yaml").resolve()))
        small = archgraph.grow(seed_cfg, out / "dense-seed", data_root=_root(args, cfg), quiet=True)
        print(row("dense, the seed", seed, small, growth=True), flush=True)
        results.append({"seed": seed, "gnap": gnap, "dense": dense, "dense_seed": small})
    (Path(args.out) / f"{Path(args.config).stem}.json").write_text(json.dumps(results, indent=2))
    return 0


def _root(args, cfg):
    """Data root for the dense run: the override, else the run file's (relative to the working directory)."""
    return args.data_root or cfg.data.root


if __name__ == "__main__":
    raise SystemExit(main())
