"""archgraph methods [--json]"""
from __future__ import annotations

from .listing import fields_of, not_loaded, register_listing, summary


def register(sub) -> None:
    register_listing(sub, "methods", entries, help="list the training methods and their settings (plugins' included)",
                     description="List every method a run file's 'method.name' may name: where it comes from "
                                 "(archgraph or the package of an 'archgraph.methods' entry point) and its settings "
                                 "(the fields of 'method:') with their types and defaults.")


def entries() -> list[dict]:
    from archgraph.format.plugins import source_of
    from archgraph.train.config import METHOD_SETTINGS
    out = [{"name": settings.model_fields["name"].default, "source": source_of(settings, "archgraph.methods"),
            "summary": summary(settings), "fields": fields_of(settings, skip=("name",))}
           for settings in METHOD_SETTINGS]
    return sorted(out + not_loaded("archgraph.methods"), key=lambda e: e["name"])
