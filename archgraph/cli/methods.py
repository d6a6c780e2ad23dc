"""archgraph methods [--json]"""
from __future__ import annotations

from .args import command, json_argument
from .listing import fields_of, show, summary


def register(sub) -> None:
    p = command(sub, "methods", run, help="list the training methods and their settings",
                description="List every method a run file's 'method.name' may name, with its settings (the "
                            "fields of 'method:') and their types and defaults.")
    json_argument(p, "print the list as JSON")


def entries() -> list[dict]:
    from archgraph.plugins import load, source_of
    from archgraph.train.config import METHOD_SETTINGS
    out = [{"name": settings.model_fields["name"].default, "source": source_of(settings, "archgraph.methods"),
            "summary": summary(settings), "fields": fields_of(settings, skip=("name",))}
           for settings in METHOD_SETTINGS]
    out += [{"name": p.name, "source": p.dist, "error": p.error, "fields": []}
            for p in load("archgraph.methods") if p.error]
    return sorted(out, key=lambda e: e["name"])


def run(args) -> int:
    return show(entries(), args.json)
