"""archgraph ops [--json]"""
from __future__ import annotations

from .args import command, json_argument
from .listing import fields_of, show, summary


def register(sub) -> None:
    p = command(sub, "ops", run, help="list the node kinds (ops) of the graph format and their fields",
                description="List every op a graph file may use: its name, its family (the module of "
                            "archgraph/ops/ that defines it) and its fields with their types and defaults. Ops come "
                            "with archgraph only: the node union is the format itself (see docs/format.md).")
    json_argument(p, "print the list as JSON")


def entries() -> list[dict]:
    from archgraph.ops.registry import DEFS
    return [{"name": d.op, "family": d.kind.__module__.rpartition(".")[2], "summary": summary(d.kind),
             "fields": fields_of(d.kind, skip=("op",))} for d in sorted(DEFS, key=lambda d: d.op)]


def run(args) -> int:
    return show(entries(), args.json)
