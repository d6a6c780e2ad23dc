"""Reading and writing graphs as YAML, safely.

YAML is read with a safe loader that also refuses duplicate keys (a repeated node id is an error, not "last one
wins") and documents whose aliases expand past a limit (alias bombs); unknown tags such as ``!!python/object`` are
refused without constructing anything. Validation errors are turned into one :class:`GraphError` naming the file,
the node and the field.
"""
from __future__ import annotations

import difflib
import errno
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from yaml.constructor import SafeConstructor

from ..errors import ArchgraphError, GraphError, YamlError
from ..graph import FORMAT_VERSION, Graph
from ..ops.spec import KIND_BY_OP

MAX_FILE_BYTES = 8 * 1024 * 1024
#: values that aliases may add beyond the document's own (an alias bomb adds billions); the document's own size is
#: bounded by :data:`MAX_FILE_BYTES` alone, so a 50,000-node chain is fine however many values it holds
MAX_EXPANDED_NODES = 200_000


MAX_DEPTH = 64


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads booleans as YAML 1.2 does (only true/false), so an id such
    as ``on`` or ``no`` stays a string, as in editors that use the YAML 1.2 core schema."""


def _construct_mapping(loader: SafeConstructor, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # '<<: *base' merge keys: the explicit keys of this mapping override the merged ones
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise YamlError(f"line {key_node.start_mark.line + 1}: a mapping key must be a plain value")
        if key in seen:
            raise YamlError(f"line {key_node.start_mark.line + 1}: duplicate key '{key}' "
                            f"(first defined on line {seen[key].start_mark.line + 1})", field=str(key))
        seen[key] = key_node
    return SafeConstructor.construct_mapping(loader, node, deep=deep)


MAX_INT_DIGITS = 100


def _construct_int(loader: SafeConstructor, node: yaml.ScalarNode) -> int:
    """Integers as YAML 1.1 reads them, but a number with more than ``MAX_INT_DIGITS`` digits is an error naming
    its line (Python refuses to parse more than 4300 digits, and no size in a graph needs 100)."""
    digits = sum(c.isdigit() for c in str(node.value))
    if digits > MAX_INT_DIGITS:
        raise YamlError(f"line {node.start_mark.line + 1}: an integer with {digits} digits; the limit is "
                        f"{MAX_INT_DIGITS}")
    try:
        return SafeConstructor.construct_yaml_int(loader, node)
    except ValueError as err:
        raise YamlError(f"line {node.start_mark.line + 1}: cannot read the integer {_clip(node.value)} ({err})") \
            from None


def _clip(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def _configure(cls: type[Any]) -> None:
    bool_tag = "tag:yaml.org,2002:bool"
    cls.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != bool_tag]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    cls.add_implicit_resolver(bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    cls.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    cls.add_constructor("tag:yaml.org,2002:int", _construct_int)


_configure(_Loader)
#: the same loader on libyaml's parser, or None where PyYAML was built without libyaml
_FastLoader: Optional[type[yaml.CSafeLoader]] = None
if getattr(yaml, "__with_libyaml__", False):
    class _CLoader(yaml.CSafeLoader):
        """The same loader on libyaml's parser (about 5x faster). Its composer recurses in C, so documents are
        measured first with libyaml's event parser, which does not recurse (see :func:`_check_depth`)."""

    _configure(_CLoader)
    _FastLoader = _CLoader


def _check_depth(text: str) -> None:
    """Refuse documents nested deeper than ``MAX_DEPTH`` (a graph needs 4 levels) before libyaml composes them:
    its recursive composer would overflow the C stack on a deeply nested file instead of raising an error."""
    parser = yaml.cyaml.CParser(text)
    depth = 0
    try:
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise YamlError(f"line {event.start_mark.line + 1}: the YAML nests deeper than {MAX_DEPTH} "
                                    "levels; refused")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    finally:
        parser.dispose()


def _inspect(root: yaml.Node, limit: int) -> None:
    """Check the composed (not yet constructed) document: aliases must not add more than ``limit`` values to it
    (alias bombs; the document's own values are not counted, the file size bounds them) nor refer to themselves,
    and no mapping may repeat a key. Errors name the node id or field by path. Each composed value is visited
    once (sizes are memoised), so the check takes time in the document's own size, never its expanded size."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def where(path: tuple, key: str) -> dict:
        if path == ("nodes",):
            return {"node": key}
        if len(path) == 2 and path[0] == "nodes":
            return {"node": path[1], "field": key}
        return {"field": ".".join((*path, key))}

    def size(node: yaml.Node, path: tuple) -> int:
        key = id(node)
        if key in active:
            raise YamlError(f"line {node.start_mark.line + 1}: recursive alias (a value that contains itself)")
        if key in memo:
            return memo[key]
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total += size(child, path)
        elif isinstance(node, yaml.MappingNode):
            seen: dict[tuple, yaml.Node] = {}
            for k, v in node.value:
                name = k.value if isinstance(k, yaml.ScalarNode) else None
                if name is not None:
                    if (k.tag, name) in seen:
                        first = seen[(k.tag, name)].start_mark.line + 1
                        what = "node id" if path == ("nodes",) else "key"
                        raise YamlError(f"line {k.start_mark.line + 1}: duplicate {what} '{name}' (first defined "
                                        f"on line {first}); each key may appear once", **where(path, str(name)))
                    seen[(k.tag, name)] = k
                total += size(k, path) + size(v, (*path, str(name)) if len(path) < 2 else path)
        active.discard(key)
        memo[key] = total
        if total - len(memo) > limit:   # what aliases added so far (every composed value is in memo once)
            raise YamlError(f"YAML aliases add more than {limit:,} values to the document (alias bomb?); refused")
        return total

    size(root, ())


def _char_at(text: str, mark: Optional[yaml.Mark]) -> str:
    lines = text.splitlines()
    if mark is None or mark.line >= len(lines) or mark.column >= len(lines[mark.line]):
        return ""
    return lines[mark.line][mark.column]


def _mark(mark: Optional[yaml.Mark]) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text safely. Raises :class:`YamlError` naming ``source``.

    >>> parse_yaml("a: [1, 2]")
    {'a': [1, 2]}
    """
    try:
        if _FastLoader is not None:
            _check_depth(text)
        loader = (_Loader if _FastLoader is None else _FastLoader)(text)
        try:
            root = loader.get_single_node()
            if root is None:
                raise YamlError("the file is empty", file=source)
            _inspect(root, MAX_EXPANDED_NODES)
            return loader.construct_document(root)
        finally:
            loader.dispose()
    except YamlError as err:
        raise err.with_file(source)
    except yaml.constructor.ConstructorError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else "?"
        tag = re.search(r"tag '([^']*)'", err.problem or "")
        if tag:
            name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
            raise YamlError(f"line {line}: the tag '{name}' is not allowed: only plain YAML data is accepted "
                            "(tags that build objects or run code are refused)", file=source) from None
        raise YamlError(f"line {line}: {err.problem} (only plain YAML data is accepted)", file=source) from None
    except yaml.MarkedYAMLError as err:
        problem = f"{_mark(err.problem_mark)}: {err.problem}" if err.problem_mark else (err.problem or "")
        context = f"{err.context} ({_mark(err.context_mark)})" if err.context and err.context_mark else err.context
        message = "; ".join(x for x in (context, problem) if x)
        if _char_at(text, err.problem_mark) == "\t":
            message += " (a tab: indent with spaces, YAML does not allow tabs for indentation)"
        raise YamlError(f"invalid YAML: {message}", file=source) from None
    except yaml.YAMLError as err:
        raise YamlError(f"invalid YAML: {err}", file=source) from None
    except RecursionError:
        raise YamlError("the YAML nests too deeply", file=source) from None


def read_limited(path: Union[str, os.PathLike], limit: int = MAX_FILE_BYTES,
                 error: type[ArchgraphError] = ArchgraphError) -> bytes:
    """The bytes of ``path``, read with a bounded reader: never more than ``limit`` bytes are read, so a device or a
    pipe that never ends (``/dev/urandom``) is refused instead of filling memory. Pipes and devices that end are
    read like files (``archgraph validate <(cat seed.yaml)``).

    >>> read_limited("/dev/zero", 10)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    archgraph.errors.ArchgraphError: /dev/zero: is larger than the limit of 10 bytes ...
    """
    if os.fspath(path) == "":
        raise error("no file name given (an empty argument)", file="''")
    path = Path(path)
    try:
        if path.is_dir():
            raise error("is a directory, not a file", file=str(path))
        if stat.S_ISFIFO(path.stat().st_mode):
            data = _read_pipe(path, limit, error)
        else:
            with open(path, "rb") as fh:
                data = fh.read(limit + 1)
    except FileNotFoundError:
        raise error("no such file", file=str(path)) from None
    except IsADirectoryError:
        raise error("is a directory, not a file", file=str(path)) from None
    except OSError as err:
        raise error(f"cannot read: {err.strerror or err}", file=str(path)) from None
    if len(data) > limit:
        raise error(f"is larger than the limit of {limit:,} bytes (an endless device or stream, or a file far bigger "
                    "than any graph); refused", file=str(path))
    return data


#: seconds a named pipe (FIFO) may stay silent (no writer, or a writer that sends nothing) before it is refused
PIPE_TIMEOUT_S = 30.0


def _read_pipe(path: Path, limit: int, error: type[ArchgraphError]) -> bytes:
    """Read a named pipe without ever blocking for good: opened non-blocking (an open with no writer would wait
    forever), then read while data comes, refused after :data:`PIPE_TIMEOUT_S` seconds of silence."""
    import select
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        chunks, size = [], 0
        while size <= limit:
            ready, _, _ = select.select([fd], [], [], PIPE_TIMEOUT_S)
            if not ready:
                raise error(f"is a pipe that sent nothing for {PIPE_TIMEOUT_S:g} s (no writer?); refused",
                            file=str(path))
            try:
                chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            except BlockingIOError:
                continue
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: Union[str, os.PathLike]) -> str:
    """The UTF-8 text of a graph or run file, read with :func:`read_limited`."""
    data = read_limited(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise YamlError(f"is not UTF-8 text (line {line})", file=str(path)) from None


def validation_error(err: ValidationError, source: str, root: str = "nodes") -> ArchgraphError:
    """One readable error from pydantic's: the first problem, with its node and field.

    The culprit is the node (or top-level field) of pydantic's first error; among that culprit's errors an unknown
    field comes first (a misspelling also makes a required field look missing), then the most specific one (the
    union member that matched the value's type).
    """
    problems = [_problem(e, root) for e in err.errors()]
    first = problems[0]
    inner = (first["raw"].get("ctx") or {}).get("error")
    if isinstance(inner, ArchgraphError):
        return inner.with_file(source)
    if first["node"] is not None:
        same = [p for p in problems if p["node"] == first["node"] and p["section"] == first["section"]]
    else:  # a top-level field: a misspelled key ('node:') also makes the right one ('nodes') look missing
        same = [first] + [p for p in problems if p["node"] is None and len(p["loc"]) == 1]
    chosen = min(same, key=lambda p: (p["type"] != "extra_forbidden", -p["depth"]))
    explained = [p for p in same if chosen["type"] == "extra_forbidden" and p["type"] == "missing"]
    def culprit(p: dict) -> tuple:  # union members' errors about one field count once
        return p["section"], p["node"], re.split(r"[.\[]", p["field"] or "")[0]

    others = {culprit(p) for p in problems if p not in explained} - {culprit(chosen)}
    message = _message(chosen)
    if others:
        message += f" ({len(others)} more problem{'s' if len(others) > 1 else ''} after this one)"
    return GraphError(message, file=source, node=chosen["node"], field=chosen["field"])


def _is_branch(part: object) -> bool:
    """A pydantic location part that names a union member or a type, not a field (``str``, ``tuple[...]``)."""
    return isinstance(part, str) and ("[" in part or "-" in part or part in ("str", "int", "float", "bool", "none"))


def _problem(error: ErrorDetails, root: str) -> dict:
    loc = list(error["loc"])
    section = str(loc[0]) if loc else ""
    node = None
    key = False
    if loc and loc[-1] == "[key]":
        key = True
        loc = loc[:-1]
    if len(loc) >= 2 and loc[0] == root:
        node = str(loc[1])
        rest = loc[2:]
        if rest and rest[0] in _op_names():
            rest = rest[1:]  # the union member's tag
    else:
        rest = loc
    parts = [p for p in rest if not _is_branch(p)]
    field = ""
    for p in parts:
        field += f"[{p}]" if isinstance(p, int) else (f".{p}" if field else str(p))
    if key and section in ("inputs", "outputs") and loc:
        field = section
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        field = "op"
    return {"raw": error, "type": error["type"], "msg": error["msg"], "input": error.get("input"),
            "section": section, "node": node, "field": field or None, "key": key, "loc": loc,
            "depth": len(error["loc"])}


def _message(p: dict) -> str:
    """The message of one pydantic error ``p`` (see :func:`_place`): the checks that come before the error's type
    (a bad id, an empty value, a pair field), then the handler of its type, else pydantic's own message."""
    for special in (_id_message, _empty_message, _pair_message):
        text = special(p)
        if text:
            return text
    handler = _BY_TYPE.get(p["type"])
    text = handler(p) if handler is not None else None
    if text:
        return text
    message = p["msg"].replace(" after validation", "")
    if p["input"] is not None and not isinstance(p["input"], (dict, list)):
        message += f" (got {p['input']!r})"
    return message


def _id_message(p: dict) -> Optional[str]:
    kind, value = p["type"], p["input"]
    if p["key"]:
        what = "node id" if p["section"] == "nodes" else "id"
        if kind == "string_type":
            return (f"{what} {value!r} must be a name such as 'c1' (ASCII letters, digits and '_', starting with "
                    "a letter)")
        return (f"{value!r} is not a valid {what}: ids are ASCII letters, digits and '_', starting with a letter "
                "(no dots, dashes, spaces or accents), so they can name torch submodules")
    if kind == "string_pattern_mismatch":
        return f"{value!r} is not a valid id: ids are ASCII letters, digits and '_', starting with a letter"
    return None


def _empty_message(p: dict) -> Optional[str]:
    if p["input"] is None and p["type"] != "missing" and "input" in p["raw"]:
        return "got nothing (an empty value); write a value or leave the field out for its default"
    return None


def _pair_message(p: dict) -> Optional[str]:
    name = (p["field"] or "").split(".")[-1]
    if p["node"] is None or name not in PAIR_FIELDS or p["type"] in ("missing", "extra_forbidden"):
        return None
    also = " or 'same' / 'valid'" if name == "padding" else ""
    low = 0 if name == "padding" else 1
    return f"must be an int >= {low} or a pair [h, w]{also} (got {_short(p['input'])})"


def _unknown_op(p: dict) -> str:
    value = p["input"]
    op = value.get("op") if isinstance(value, dict) else value
    known = sorted(_op_names())
    match = difflib.get_close_matches(str(op), known, n=1)
    hint = f" (did you mean '{match[0]}'?)" if match else ""
    return f"unknown op {op!r}{hint}; known ops: {', '.join(known)}"


def _unknown_field(p: dict) -> str:
    name, value = p["loc"][-1], p["input"]
    if p["node"] is None and len(p["loc"]) == 1 and isinstance(value, dict) and "op" in value:
        return (f"unknown field '{name}': it looks like a node; nodes must be indented under 'nodes:' "
                "(e.g. two spaces before the id)")
    return f"unknown field '{name}'" + _field_hint(p)


def _not_a_node(p: dict) -> Optional[str]:
    if p["node"] is None:
        return None
    return f"a node must be a mapping such as {{op: relu, in: x}} (got {_short(p['input'])})"


def _not_a_mapping(p: dict) -> str:
    what = {"nodes": "node id -> node", "inputs": "input id -> shape"}.get(p["field"] or "", "names to values")
    return f"must be a mapping of {what} (got {_short(p['input'])})"


def _bad_inputs(p: dict) -> Optional[str]:
    if p["field"] != "in":
        return None
    return f"must be a node id or a list of node ids (got {_short(p['input'])})"


#: pydantic error type -> the message of that error (None: the next rule, else pydantic's own message)
_BY_TYPE: dict[str, Callable[[dict], Optional[str]]] = {
    "union_tag_invalid": _unknown_op,
    "union_tag_not_found": lambda p: "missing 'op' (the kind of layer, e.g. op: conv2d)",
    "extra_forbidden": _unknown_field,
    "missing": lambda p: "required field is missing",
    "model_attributes_type": _not_a_node,
    "model_type": _not_a_node,
    "dict_type": _not_a_mapping,
    "string_type": _bad_inputs,
    "tuple_type": _bad_inputs,
}


#: fields that take an int or a pair [h, w] (Pair in ops/spec.py)
PAIR_FIELDS = frozenset({"kernel_size", "stride", "padding", "dilation", "output_size"})


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _op_names() -> set[str]:
    return set(KIND_BY_OP)


def _field_hint(p: dict) -> str:
    """'(did you mean ...?)' for a misspelled field, or the fields the op (or the graph) takes."""
    loc = p["loc"]
    if p["node"] is not None and len(loc) >= 4 and loc[2] in KIND_BY_OP:
        owner, fields = loc[2], KIND_BY_OP[loc[2]].model_fields
    elif p["node"] is None and len(loc) == 1:
        owner, fields = "a graph", Graph.model_fields
    else:
        return ""
    known = [f.alias or name for name, f in fields.items()]
    match = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if match:
        return f" (did you mean '{match[0]}'?)"
    return f"; {owner} takes: {', '.join(k for k in known if k != 'op')}"


RUN_KEYS = frozenset({"archgraph_run", "seed", "data", "method", "schedule"})
GRAPH_KEYS = frozenset({"archgraph", "inputs", "nodes", "outputs"})


def is_run_data(data: Any) -> bool:
    """Whether parsed YAML looks like a run file (``archgraph grow``'s RUN.yaml) rather than a graph file."""
    return isinstance(data, dict) and "archgraph" not in data and bool(RUN_KEYS & set(data)) and \
        ("archgraph_run" in data or "seed" in data or not GRAPH_KEYS & set(data))


def graph_from_data(data: Any, source: str = "<data>") -> Graph:
    if not isinstance(data, dict):
        raise GraphError("the top level must be a mapping with archgraph, inputs, nodes and outputs", file=source)
    if is_run_data(data):
        raise GraphError("this is a run file (seed, data, method, schedule), not a graph file: 'archgraph grow' "
                         "trains it and 'archgraph validate' checks it; commands that take a graph want a file "
                         "with archgraph: 1, inputs, nodes and outputs", file=source)
    if "archgraph" not in data:
        raise GraphError("missing 'archgraph: 1' (the format version)", file=source, field="archgraph")
    if type(data["archgraph"]) is not int or data["archgraph"] != FORMAT_VERSION:  # not true, 1.0 or "1"
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


def loads(text: str, source: str = "<string>") -> Graph:
    """Parse a graph from YAML text."""
    return graph_from_data(parse_yaml(text, source), source)


def load(path: Union[str, os.PathLike]) -> Graph:
    """Read and validate a graph file.

    >>> import archgraph
    >>> g = archgraph.load("examples/seeds/mlp.yaml")  # doctest: +SKIP
    """
    return loads(read_text(path), str(path))


def dumps(graph: Graph) -> str:
    """The graph as YAML text in the seed format: one line per node, defaults left out.

    ``loads(dumps(g)) == g`` and ``dumps(loads(dumps(g))) == dumps(g)``.
    """
    data = graph.to_dict()
    lines = [f"archgraph: {data['archgraph']}", f"name: {_scalar(data['name'])}", "inputs:"]
    for k, v in data["inputs"].items():
        lines.append(f"  {_scalar(k)}: {_flow(v)}")
    lines.append("nodes:")
    keys = {k: _scalar(k) + ":" for k in data["nodes"]}
    width = max(len(k) for k in keys.values())
    for k, node in data["nodes"].items():
        lines.append(f"  {keys[k].ljust(width)} {_flow(node)}")
    lines.append(f"outputs: {_flow(data['outputs'])}")
    return "\n".join(lines) + "\n"


def _scalar(value: object) -> str:
    """One YAML scalar on one line that reads back as ``value`` (quoted when plain text would not)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, allow_unicode=True)
    text = text.removesuffix("\n").removesuffix("\n...").strip()
    if isinstance(value, str) and text != value:  # plain style would not read back: double quotes escape it all
        text = yaml.safe_dump(value, default_style='"', width=10**9, allow_unicode=True).strip()
    return text


def _flow(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_scalar(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value)


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> None:
    """Write a file so that a crash leaves either the old content or the new, never half of it."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Union[str, os.PathLike], data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(err.errno, f"cannot create its folder {str(err.filename)!r} ({err.strerror})", str(path)) \
            from None

    def fill(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_replace(path, fill)


def atomic_replace(path: Path, fill: Callable[[str], None]) -> None:
    """Write ``path`` through a temporary file beside it: ``fill(tmp)`` writes (and syncs) the content, which is then
    renamed over ``path``; on any failure the temporary file is removed and ``path`` is left as it was. The folder
    must exist."""
    atomic_replace_all([(Path(path), fill)])


def atomic_replace_all(items: list[tuple[Path, Callable[[str], None]]]) -> None:
    """Write several files as one unit: every file is written to a temporary file beside it first, and only when
    all are complete are they renamed into place, so a failure (a full disk) leaves every old file as it was,
    never a new graph beside old weights. A full disk is an error naming the file and saying "no space left"."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, fill in items:
            path = Path(path)
            try:
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            except OSError as err:  # name the file the caller asked for, not the temporary one
                raise OSError(err.errno, f"cannot write it ({_why(err)})", str(path)) from None
            os.close(fd)
            staged.append((tmp, path))
            try:
                fill(tmp)
            except OSError as err:
                raise OSError(err.errno, f"cannot write it ({_why(err)})", str(path)) from None
            except Exception as err:  # a writer library's own error (safetensors'): a full disk said plainly
                if "No space left" in str(err) or "StorageFull" in str(err):
                    raise OSError(errno.ENOSPC, f"cannot write it ({_why(OSError(errno.ENOSPC, ''))})",
                                  str(path)) from None
                raise
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise


def _why(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return "no space left on the device"
    return err.strerror or str(err)


def save(graph: Graph, path: Union[str, os.PathLike]) -> None:
    """Write ``graph`` as YAML (atomically); ``load(path) == graph``."""
    atomic_write_text(path, dumps(graph))
