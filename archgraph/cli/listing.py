"""What ``archgraph rules``, ``archgraph methods`` and ``archgraph ops`` print: a pydantic model's fields, as text
or JSON, read from the live registries (so a plugin's rule or method is listed like a built-in one)."""
from __future__ import annotations

import json
import textwrap
import typing
from typing import Any, Callable

from pydantic import BaseModel

from .args import command, json_argument


def type_name(annotation: Any) -> str:
    """A short name of a field's type: ``int``, ``list[int]``, ``'relu' | 'gelu'``, ``float | none``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        return " | ".join(dict.fromkeys(type_name(a) for a in args))
    if annotation is type(None):
        return "none"
    if origin in (list, tuple, set, frozenset, dict):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    return getattr(annotation, "__name__", str(annotation))


def fields_of(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[dict]:
    """``[{name, type, required, default, description}]`` of a model's fields, in order."""
    out = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        out.append({"name": info.alias or name, "type": type_name(info.annotation), "required": info.is_required(),
                    "default": _jsonable(default), "description": info.description or ""})
    return out


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else str(value)


def show(entries: list[dict], as_json: bool) -> int:
    """Print ``entries`` (each ``{name, summary, fields, ...}``) as JSON or as a readable list."""
    if as_json:
        print(json.dumps(entries, indent=2))
        return 0
    for entry in entries:
        extra = "".join(f" [{k}: {entry[k]}]" for k in ("kind", "family", "source") if entry.get(k))
        print(f"{entry['name']}{extra}")
        if entry.get("summary"):
            print(textwrap.indent(textwrap.fill(entry["summary"], 100), "    "))
        if entry.get("error"):
            print(f"    not loaded: {entry['error']}")
        for f in entry.get("fields", []):
            value = "required" if f["required"] else f"default {json.dumps(f['default'])}"
            print(f"    {f['name']}: {f['type']} ({value})")
    return 0


def summary(obj: Any) -> str:
    """The first paragraph of a docstring, on one line."""
    doc = (obj.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split())


def register_listing(sub: Any, name: str, entries: Callable[[], list[dict]], help: str, description: str) -> None:
    """A listing command: ``archgraph NAME [--json]`` printing ``entries()``."""
    p = command(sub, name, lambda args: show(entries(), args.json), help=help, description=description)
    json_argument(p, "print the list as JSON")


def not_loaded(group: str) -> list[dict]:
    """The entries of the plugins of ``group`` that failed to load, with their errors."""
    from archgraph.format.plugins import load
    return [{"name": p.name, "source": p.dist, "error": p.error, "fields": []} for p in load(group) if p.error]
