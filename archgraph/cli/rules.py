"""archgraph rules [--json]"""
from __future__ import annotations

from .listing import fields_of, not_loaded, register_listing, summary


def register(sub) -> None:
    register_listing(sub, "rules", entries, help="list the rewrite rules and their arguments (plugins' rules included)",
                     description="List every rewrite rule 'archgraph apply', run files and replay accept: its name, "
                                 "its kind (growth or prune), where it comes from (archgraph or the package of an "
                                 "'archgraph.rules' entry point) and its arguments with their types and defaults.")


def entries() -> list[dict]:
    from archgraph.format.plugins import source_of
    from archgraph.rules import RULES
    return [{"name": name, "kind": cls.kind, "source": source_of(cls, "archgraph.rules"), "summary": summary(cls),
             "fields": fields_of(cls)} for name, cls in sorted(RULES.items())] + not_loaded("archgraph.rules")
