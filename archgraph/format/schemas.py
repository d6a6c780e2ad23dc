"""JSON Schemas of the file formats, generated from the pydantic models (never written by hand)."""
from __future__ import annotations

import json
from pathlib import Path

from ..graph import Graph


def graph_schema() -> dict:
    schema = Graph.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def all_schemas() -> dict[str, dict]:
    """File name -> schema, for every format archgraph reads."""
    schemas = {"graph.schema.json": graph_schema()}
    try:
        from ..train.config import run_schema  # the run file belongs to the training layer, above this one
    except ImportError:  # the training package is optional at this layer
        return schemas
    schemas["run.schema.json"] = run_schema()
    return schemas


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_schemas().items():
        path = directory / name
        path.write_text(render(schema))
        written.append(path)
    return written
