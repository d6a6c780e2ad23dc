"""archgraph grow RUN.yaml --out DIR [--data-root PATH] [--device cpu|cuda] [--resume] [--quiet] [--set KEY=VALUE]

Several processes: ``torchrun --nproc_per_node=N -m archgraph grow RUN.yaml --out DIR`` (docs/scale.md)."""
from __future__ import annotations

import json
import os

from ..errors import ConfigError
from .args import command, run_file_argument, settings_argument, training_arguments


def register(sub) -> None:
    p = command(sub, "grow", run, help="train a seed with a growth/pruning method (GNAP, ...)",
                description="Train the seed graph a run file names with its method (GNAP grows and prunes it), "
                            "writing every graph version, the event history, checkpoints, the final weights and "
                            "summary.json into DIR. A run killed at any point continues from its last checkpoint "
                            "with --resume. Under torchrun (torchrun --nproc_per_node=N -m archgraph grow ...) each "
                            "process trains its share of every batch with DDP and only rank 0 writes DIR.")
    run_file_argument(p, "a run file: seed, data, method, schedule (examples/digits_gnap.yaml)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (must be new or empty unless --resume)")
    training_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    settings_argument(p, "override a run-file field by dotted name, e.g. --set schedule.epochs=2 (repeatable)")


def parse_settings(items: list[str]) -> dict:
    from ..format.yaml_io import parse_yaml
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set wants KEY=VALUE, got {item!r}", field="--set")
        out[key.strip()] = parse_yaml(value, f"--set {key}") if value.strip() else None
    return out


def run(args) -> int:
    from ..train import grow
    summary = grow(args.run_file, args.out, data_root=args.data_root, device=args.device, resume=args.resume,
                   quiet=args.quiet, settings=parse_settings(args.set))
    if args.quiet and os.environ.get("RANK", "0") == "0":   # one line per run, also under torchrun
        print(json.dumps({k: summary[k] for k in ("test_acc", "params", "nonzero_params", "macs", "versions",
                                                  "growth_events", "prune_events", "wall_s")}))
    return 0
