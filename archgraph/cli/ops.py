"""archgraph ops [--json]"""
from __future__ import annotations

from .listing import fields_of, register_listing, summary


def register(sub) -> None:
    register_listing(sub, "ops", entries, help="list the node kinds (ops) of the graph format and their fields",
                     description="List every op a graph file may use: its name, its family (the module of "
                                 "archgraph/ops/ that defines it) and its fields with their types and defaults. Ops "
                                 "come with archgraph only: the node union is the format itself.")


def entries() -> list[dict]:
    from archgraph.ops.registry import DEFS
    return [{"name": d.op, "family": d.kind.__module__.rpartition(".")[2], "summary": summary(d.kind),
             "fields": fields_of(d.kind, skip=("op",))} for d in sorted(DEFS, key=lambda d: d.op)]
