"""archgraph schema [-o DIR]"""
from __future__ import annotations

from pathlib import Path

from .args import command, output_argument


def register(sub) -> None:
    p = command(sub, "schema", run, help="write the JSON Schemas of the file formats",
                description="Write the JSON Schemas generated from the pydantic models (for editors such as VS Code's "
                            "YAML extension) into DIR (default: schemas/).")
    output_argument(p, "DIR", "folder to write graph.schema.json and run.schema.json into (default schemas/; its "
                              "schema files are replaced, which is what regenerating them means)", default="schemas")


def run(args) -> int:
    from archgraph.errors import ConfigError
    from archgraph.format.schemas import write_schemas
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise ConfigError("is a file; the output must be a folder", file=args.output, field="-o")
    for path in write_schemas(Path(args.output)):
        print(f"wrote {path}")
    return 0
