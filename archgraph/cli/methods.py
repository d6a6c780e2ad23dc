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
    from archgraph.train.config import METHOD_SETTINGS
    from archgraph.train.strategies import STRATEGIES
    out = []
    for settings in METHOD_SETTINGS:
        name = settings.model_fields["name"].default
        source = STRATEGIES.get(name, "")
        out.append({"name": name, "source": source.partition(".")[0] if source else "", "summary": summary(settings),
                    "fields": fields_of(settings, skip=("name",))})
    return sorted(out, key=lambda e: e["name"])


def run(args) -> int:
    return show(entries(), args.json)
