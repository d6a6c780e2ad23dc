"""archgraph summary FILE [--json]"""
from __future__ import annotations

import json

import archgraph
from archgraph.errors import shown
from archgraph.graph import summary

from .args import command, json_argument


def register(sub) -> None:
    p = command(sub, "summary", run, help="layers, output shapes, params and MACs of a graph",
                description="Print a table of the graph's layers with output shapes, parameters and MACs "
                            "(multiply-accumulates of conv and linear layers, per sample).")
    p.add_argument("file", metavar="FILE", help="a graph file")
    json_argument(p, "print JSON (params, macs, shapes, layers) instead")


def input_text(spec) -> str:
    """An input as people read it: ``[1, 28, 28]``, or ``[32] token ids < 65`` for a token input."""
    if isinstance(spec, dict):
        shape = list(spec.get("shape", []))
        return f"{shape} token ids < {spec['vocab']}" if spec.get("vocab") is not None else str(shape)
    return str(list(spec))


def run(args) -> int:
    info = summary(archgraph.load(args.file))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = [("node", "op", "output", "params", "MACs")]
    rows += [(layer["id"], layer["op"], "x".join(map(str, layer["shape"])), f"{layer['params']:,}",
              f"{layer['macs']:,}") for layer in info["layers"]]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    print(shown(f"{info['name']}: inputs " + ", ".join(f"{k} {input_text(v)}" for k, v in info["inputs"].items())))
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) if j < 3 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"total: {info['params']:,} params, {info['macs']:,} MACs per sample")
    return 0
