"""archgraph rules [--json]"""
from __future__ import annotations

from .args import command, json_argument
from .listing import fields_of, show, summary


def register(sub) -> None:
    p = command(sub, "rules", run, help="list the rewrite rules and their arguments (plugins' rules included)",
                description="List every rewrite rule 'archgraph apply', run files and replay accept: its name, its "
                            "kind (growth or prune), where it comes from (archgraph or the package of an "
                            "'archgraph.rules' entry point) and its arguments with their types and defaults.")
    json_argument(p, "print the list as JSON")


def entries() -> list[dict]:
    from archgraph.plugins import load, source_of
    from archgraph.rules import RULES
    out = [{"name": name, "kind": cls.kind, "source": source_of(cls, "archgraph.rules"), "summary": summary(cls),
            "fields": fields_of(cls)} for name, cls in sorted(RULES.items())]
    out += [{"name": p.name, "source": p.dist, "error": p.error, "fields": []}
            for p in load("archgraph.rules") if p.error]
    return out


def run(args) -> int:
    return show(entries(), args.json)
