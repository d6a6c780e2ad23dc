"""archgraph validate FILE..."""
from __future__ import annotations

import archgraph


def register(sub) -> None:
    p = sub.add_parser("validate", help="check graph files against the format",
                       description="Check one or more graph files: YAML, fields, references, cycles and shapes. "
                                   "Exits with status 2 and names the file, node and field of the first problem.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=run)


def run(args) -> int:
    for path in args.files:
        g = archgraph.load(path)
        print(f"{path}: ok ({len(g.nodes)} nodes, {g.params:,} params, {g.macs:,} MACs)")
    return 0
