"""Reading and writing graphs as YAML, safely.

YAML is read with a safe loader that also refuses duplicate keys (a repeated node id is an error, not "last one
wins") and documents whose aliases expand past a limit (alias bombs); unknown tags such as ``!!python/object`` are
refused without constructing anything. Validation errors are turned into one :class:`GraphError` naming the file,
the node and the field.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import ValidationError

from .errors import ArchgraphError, GraphError, YamlError

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_EXPANDED_NODES = 200_000


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise YamlError(f"line {key_node.start_mark.line + 1}: a mapping key must be a plain value")
        if key in seen:
            raise YamlError(f"line {key_node.start_mark.line + 1}: duplicate key '{key}' "
                            f"(first defined on line {seen[key].start_mark.line + 1})", field=str(key))
        seen[key] = key_node
    return loader.construct_mapping_plain(node, deep=deep)


_Loader.construct_mapping_plain = yaml.SafeLoader.construct_mapping  # type: ignore[attr-defined]
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Number of nodes the document has once aliases are expanded; stops counting past ``limit``."""
    memo: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        memo[key] = 1  # guards recursive aliases
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total += size(child)
                if total > limit:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > limit:
                    break
        memo[key] = total
        return total

    return size(root)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text safely. Raises :class:`YamlError` naming ``source``."""
    try:
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                raise YamlError("the file is empty", file=source)
            if _expanded_size(root, MAX_EXPANDED_NODES) > MAX_EXPANDED_NODES:
                raise YamlError(f"YAML aliases expand to more than {MAX_EXPANDED_NODES} values (alias bomb?); "
                                "refused", file=source)
            return loader.construct_document(root)
        finally:
            loader.dispose()
    except YamlError as err:
        raise err.with_file(source)
    except yaml.constructor.ConstructorError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else "?"
        raise YamlError(f"line {line}: {err.problem} (only plain YAML data is accepted)", file=source) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise YamlError(f"{line}invalid YAML: {err.problem or err.context}", file=source) from None
    except yaml.YAMLError as err:
        raise YamlError(f"invalid YAML: {err}", file=source) from None
    except RecursionError:
        raise YamlError("the YAML nests too deeply", file=source) from None


def read_text(path: Union[str, os.PathLike]) -> str:
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ArchgraphError("no such file", file=str(path)) from None
    except OSError as err:
        raise ArchgraphError(f"cannot read: {err.strerror}", file=str(path)) from None
    if path.is_dir():
        raise ArchgraphError("is a directory, not a file", file=str(path))
    if size > MAX_FILE_BYTES:
        raise ArchgraphError(f"is {size} bytes; the limit is {MAX_FILE_BYTES}", file=str(path))
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise YamlError("is not UTF-8 text", file=str(path)) from None


def validation_error(err: ValidationError, source: str, root: str = "nodes") -> ArchgraphError:
    """One readable error from pydantic's: the first problem, with its node and field."""
    first = err.errors()[0]
    inner = (first.get("ctx") or {}).get("error")
    if isinstance(inner, ArchgraphError):
        return inner.with_file(source)
    loc = [str(x) for x in first["loc"]]
    node = field = None
    if len(loc) >= 2 and loc[0] == root:
        node = loc[1]
        rest = loc[2:]
        if rest and rest[0] in _op_names():
            rest = rest[1:]  # the union member's tag
        field = ".".join(rest) or None
        if first["type"] == "union_tag_invalid":
            field = "op"
        elif first["type"] == "union_tag_not_found":
            field = "op"
    elif loc:
        field = ".".join(loc)
    message = first["msg"]
    if first["type"] == "union_tag_invalid":
        message = f"unknown op {first['input'].get('op')!r}; known ops: {', '.join(sorted(_op_names()))}" \
            if isinstance(first.get("input"), dict) else message
    elif first["type"] == "extra_forbidden":
        message = f"unknown field '{loc[-1]}'" + _field_hint(loc, first)
        field = loc[-1] if field is None else field
    elif first["type"] == "missing":
        message = "required field is missing"
    elif "input" in first and not isinstance(first["input"], (dict, list)):
        message = f"{message} (got {first['input']!r})"
    count = len(err.errors())
    if count > 1:
        message += f" ({count - 1} more problem{'s' if count > 2 else ''} after this one)"
    return GraphError(message, file=source, node=node, field=field)


def _op_names() -> set[str]:
    from .ops.spec import KIND_BY_OP
    return set(KIND_BY_OP)


def _field_hint(loc: list[str], first: dict) -> str:
    import difflib
    from .ops.spec import KIND_BY_OP
    if len(loc) >= 4 and loc[2] in KIND_BY_OP:
        known = [f.alias or name for name, f in KIND_BY_OP[loc[2]].model_fields.items()]
        match = difflib.get_close_matches(loc[-1], known, n=1)
        if match:
            return f" (did you mean '{match[0]}'?)"
        return f"; {loc[2]} takes: {', '.join(k for k in known if k != 'op')}"
    return ""


def graph_from_data(data: Any, source: str = "<data>"):
    from .graph import Graph
    if not isinstance(data, dict):
        raise GraphError("the top level must be a mapping with archgraph, inputs, nodes and outputs", file=source)
    if "archgraph" not in data:
        raise GraphError("missing 'archgraph: 1' (the format version)", file=source, field="archgraph")
    if data.get("archgraph") != 1:
        raise GraphError(f"unsupported format version {data.get('archgraph')!r}; this archgraph reads version 1",
                         file=source, field="archgraph")
    nodes = data.get("nodes")
    if isinstance(nodes, dict):
        for nid, node in nodes.items():
            if isinstance(node, dict) and "op" not in node:
                raise GraphError("missing 'op'", file=source, node=str(nid), field="op")
    try:
        return Graph.model_validate(data)
    except ValidationError as err:
        raise validation_error(err, source) from None
    except ArchgraphError as err:
        raise err.with_file(source)


def loads(text: str, source: str = "<string>"):
    """Parse a graph from YAML text."""
    return graph_from_data(parse_yaml(text, source), source)


def load(path: Union[str, os.PathLike]):
    """Read and validate a graph file.

    >>> import archgraph
    >>> g = archgraph.load("examples/seeds/mlp.yaml")  # doctest: +SKIP
    """
    return loads(read_text(path), str(path))


def dumps(graph) -> str:
    """The graph as YAML text in the seed format: one line per node, defaults left out."""
    data = graph.to_dict()
    lines = [f"archgraph: {data['archgraph']}", f"name: {_scalar(data['name'])}", "inputs:"]
    for k, v in data["inputs"].items():
        lines.append(f"  {k}: {_flow(v)}")
    lines.append("nodes:")
    width = max(len(k) for k in data["nodes"]) + 1
    for k, node in data["nodes"].items():
        lines.append(f"  {(k + ':').ljust(width)} {_flow(node)}")
    lines.append(f"outputs: {_flow(data['outputs'])}")
    text = "\n".join(lines) + "\n"
    return text


def _scalar(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip().removesuffix("\n...").strip()


def _flow(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value)


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> None:
    """Write a file so that a crash leaves either the old content or the new, never half of it."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Union[str, os.PathLike], data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save(graph, path: Union[str, os.PathLike]) -> None:
    """Write ``graph`` as YAML (atomically); ``load(path) == graph``."""
    atomic_write_text(path, dumps(graph))


def content_hash(graph) -> str:
    """sha256 of the graph's canonical JSON (the name is excluded: it does not change the network)."""
    data = graph.to_dict()
    data.pop("name", None)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()
