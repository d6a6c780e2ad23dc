"""archgraph validate FILE..."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from archgraph.errors import ArchgraphError, shown

from .args import command


def register(sub: Any) -> None:   # argparse's subparsers action (its class is private)
    p = command(sub, "validate", run, help="check graph files (and run files) against the format",
                description="Check graph files: YAML, fields, references, cycles, shapes and size limits. A run file "
                            "(the RUN.yaml that 'archgraph grow' takes) is checked too, with its seed graph, without "
                            "training. Every file is checked; each problem is reported with its file, node and field, "
                            "and the exit status is 2 if any file is bad.")
    p.add_argument("files", nargs="+", metavar="FILE", help="graph files (archgraph: 1) or run files")


def check_file(path: str) -> str:
    """The 'ok' line for one graph or run file; raises :class:`ArchgraphError` naming the culprit."""
    from archgraph.format.yaml_io import graph_from_data, is_run_data, parse_yaml, read_text
    data = parse_yaml(read_text(path), path)
    if is_run_data(data):
        from pathlib import Path

        from archgraph.train.config import (
            check_budget,
            check_machine,
            config_from_data,
            load_seed,
            method_files,
            seed_weights_path,
        )
        cfg = config_from_data(data, path)
        g = load_seed(cfg, Path(path).parent, path)
        seed_weights_path(cfg, Path(path).parent, path)   # the file exists (its tensors are checked by grow)
        method_files(cfg, Path(path).parent, path)        # so do the method's (distill's teacher and weights)
        check_machine(cfg, path)
        notes = "".join(f"; warning: {w}" for w in check_budget(cfg))
        # RunConfig.method is the union of the registered methods' settings, built at run time (train/config.py):
        # a type checker cannot see it, but every member has its name
        method = cfg.method.name  # type: ignore[attr-defined]
        return (f"{path}: ok (run file: method {method}, seed {len(g.nodes)} nodes, {g.params:,} params"
                f"{notes})")
    g = graph_from_data(data, path)
    return f"{path}: ok ({len(g.nodes)} nodes, {g.params:,} params, {g.macs:,} MACs)"


def run(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        try:
            print(shown(check_file(path)))
        except ArchgraphError as err:
            sys.stdout.flush()
            print(f"archgraph: error: {' '.join(str(err).split())}", file=sys.stderr)
            status = 2
    return status
