"""The architecture graph: a frozen pydantic model of named inputs, an ordered mapping of nodes and outputs.

A :class:`Graph` is valid once constructed: ids are unique identifiers, every reference exists, there is no cycle,
every output exists, sizes are positive and shapes agree. Graphs are immutable: rules return new graphs.

>>> g = Graph.model_validate({"archgraph": 1, "name": "mlp", "inputs": {"x": [4]},
...     "nodes": {"fc": {"op": "linear", "in": "x", "out_features": 2}}, "outputs": ["fc"]})
>>> g.shapes()["fc"]
(2,)
"""
from __future__ import annotations

import difflib
import hashlib
import json
import keyword
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, TypeGuard, Union, cast

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, Strict, model_validator

from .errors import GraphError
from .limits import check_graph
from .ops.spec import Node, NodeSpec, PositiveInt
from .shapes import count_macs, count_params, infer_shapes, node_macs, node_params
from .topology import to_networkx, topological_order

FORMAT_VERSION: Literal[1] = 1
ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
NodeId = Annotated[str, Strict(), Field(pattern=ID_PATTERN)]
Shape = tuple[int, ...]


class TokenInput(BaseModel):
    """An input of integer token ids in ``[0, vocab)``: ``{shape: [T], vocab: V}`` in the YAML."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shape: Annotated[list[PositiveInt], Field(min_length=1, max_length=1, description="[T]: tokens per sample")]
    vocab: PositiveInt = Field(description="vocabulary size: the ids are 0 .. vocab - 1")


class TokenShape(tuple):
    """The per-sample shape ``(T,)`` of a token input, carrying its vocabulary size: it reads as a shape
    everywhere (``tuple(s)``, ``len(s)``, ``s[0]``), and ``s.vocab`` tells an ``embedding`` how many rows it needs.

    >>> s = TokenShape((8,), 65)
    >>> s == (8,), s.vocab, list(s)
    (True, 65, [8])
    """

    vocab: int

    def __new__(cls, shape, vocab: int):
        self = super().__new__(cls, (int(x) for x in shape))
        self.vocab = int(vocab)
        return self

    def __getnewargs__(self):
        return tuple(self), self.vocab

    def __repr__(self) -> str:
        return f"TokenShape({tuple(self)!r}, vocab={self.vocab})"


def is_tokens(shape: object) -> TypeGuard[TokenShape]:
    """Whether a per-sample shape is that of a token-id input."""
    return isinstance(shape, TokenShape)


def _input_in(value):
    if isinstance(value, TokenShape):
        return {"shape": list(value), "vocab": value.vocab}
    return value


def _input_out(value):
    return TokenShape(value.shape, value.vocab) if isinstance(value, TokenInput) else value


#: one input: a float shape ([F], [T, D] or [C, H, W]) or token ids ({shape: [T], vocab: V}); in Python the value is
#: the shape list, or a :class:`TokenShape` for token ids
if TYPE_CHECKING:   # to a type checker an input is what validation leaves (the YAML's TokenInput becomes a TokenShape)
    InputSpec = Union[list[int], TokenShape]
else:
    InputSpec = Annotated[
        Union[Annotated[list[PositiveInt], Field(min_length=1, max_length=3)], TokenInput],
        BeforeValidator(_input_in), AfterValidator(_input_out)]


def input_data(value):
    """An input's value as YAML data: its shape list, or ``{shape, vocab}`` for token ids."""
    return _input_in(value) if isinstance(value, TokenShape) else list(value)


class FrozenDict(dict):
    """A dict that refuses every change: a graph's ``inputs`` and ``nodes`` once it is validated, so nothing can
    edit a graph behind its cached shapes (rules return new graphs). It reads, compares, copies and pickles as a
    dict; ``dict(d)`` gives a mutable copy.

    >>> d = FrozenDict(a=1)
    >>> d["a"], d == {"a": 1}, dict(d) | {"b": 2}
    (1, True, {'a': 1, 'b': 2})
    >>> d["b"] = 2
    Traceback (most recent call last):
    ...
    TypeError: a validated graph is read-only: build a new one (graph.replace(...) or a rule), or edit dict(...)
    """

    __slots__ = ()

    def _refuse(self, *args, **kwargs):
        raise TypeError("a validated graph is read-only: build a new one (graph.replace(...) or a rule), or edit "
                        "dict(...)")

    __setitem__ = __delitem__ = __ior__ = _refuse  # type: ignore[assignment]
    pop = popitem = clear = update = setdefault = _refuse  # type: ignore[assignment]

    def __reduce__(self):
        return FrozenDict, (dict(self),)

    def __copy__(self) -> "FrozenDict":
        return self

    def __deepcopy__(self, memo) -> "FrozenDict":
        import copy
        return FrozenDict(copy.deepcopy(dict(self), memo))


class Graph(BaseModel):
    """An architecture: ``inputs`` (per-sample shapes), ``nodes`` (id -> node, in order) and ``outputs``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True,
                              json_schema_extra={"title": "archgraph graph", "$id": "archgraph.graph.schema.json"})

    archgraph: Literal[1] = Field(FORMAT_VERSION, description="format version")
    name: Annotated[str, Strict()] = Field("graph", description="a name for people; not used by the engine")
    inputs: dict[NodeId, InputSpec] = Field(
        description="input id -> per-sample shape without the batch dimension: [C, H, W], [T, D] (a sequence) or "
                    "[F]; or {shape: [T], vocab: V} for integer token ids", min_length=1)
    nodes: dict[NodeId, Node] = Field(description="node id -> node, in order", min_length=1)
    outputs: tuple[NodeId, ...] = Field(description="ids of the nodes (or inputs) the network returns", min_length=1)

    _shapes: Optional[dict[str, Shape]] = PrivateAttr(None)

    @model_validator(mode="after")
    def _check(self) -> "Graph":
        # read-only from here on: inputs and nodes refuse changes, outputs is a tuple (the shapes are cached)
        self.__dict__["inputs"] = FrozenDict(self.inputs)
        self.__dict__["nodes"] = FrozenDict(self.nodes)
        check(self)
        return self

    # ---- derived views (never stored by callers) -------------------------------------------------------------
    def shapes(self) -> dict[str, Shape]:
        """Per-sample output shape of every input and node (computed once, cached on this immutable graph)."""
        return dict(self._shape_table())

    def shape(self, node_id: str) -> Shape:
        """Per-sample output shape of one input or node (no copy of the whole table, so loops stay linear)."""
        return self._shape_table()[node_id]

    def input_shapes(self, node_id: str) -> list[Shape]:
        shapes = self._shape_table()
        return [shapes[i] for i in self.nodes[node_id].inputs]

    def _shape_table(self) -> dict[str, Shape]:
        if self._shapes is None:
            self._shapes = infer_shapes(self)
        return self._shapes

    def users(self, node_id: str) -> list[str]:
        """Ids of the nodes that read ``node_id``, in graph order."""
        return [nid for nid, n in self.nodes.items() if node_id in n.inputs]

    def to_networkx(self):
        """A networkx ``DiGraph`` view (inputs and nodes as vertices, data edges in order)."""
        return to_networkx(self)

    @property
    def params(self) -> int:
        return count_params(self)

    @property
    def macs(self) -> int:
        return count_macs(self)

    def replace(self, **changes) -> "Graph":
        """A new, validated graph with some top-level fields changed."""
        data = self.to_dict()
        for key, value in changes.items():
            if key == "nodes":
                value = {k: (v.model_dump(by_alias=True, exclude_defaults=True) | {"op": v.op}
                             if isinstance(v, NodeSpec) else v) for k, v in value.items()}
            data[key] = value
        return Graph.model_validate(data)

    def to_dict(self) -> dict:
        """Plain data in the YAML format, defaults left out, so a saved file stays short and readable."""
        return {
            "archgraph": self.archgraph,
            "name": self.name,
            "inputs": {k: input_data(v) for k, v in self.inputs.items()},
            "nodes": {k: {"op": n.op, **n.model_dump(by_alias=True, exclude_defaults=True)}
                      for k, n in self.nodes.items()},
            "outputs": list(self.outputs),
        }

    def __hash__(self) -> int:
        return hash(content_hash(self))

    def __eq__(self, other) -> bool:
        return isinstance(other, Graph) and self.to_dict() == other.to_dict()


#: Names an input may not take: it becomes an argument of the generated ``forward``, which must not hide
#: ``self`` or a global of fx's generated code.
CODE_NAMES = frozenset("self torch device inf nan NoneType fx_pytree pytree".split())

#: Names a node may not take: a node's submodule is the module attribute named by its id, so it must not shadow an
#: attribute of ``torch.fx.GraphModule``. Kept here as data so validation never imports torch;
#: tests/test_build.py checks it against the installed torch.
RESERVED_IDS = CODE_NAMES | frozenset("""
    T_destination add_module add_submodule apply bfloat16 buffers call_super_init children code compile cpu cuda
    delete_all_unused_submodules delete_submodule double dump_patches eval extra_repr float forward get_buffer
    get_extra_state get_parameter get_submodule graph half ipu load_state_dict meta modules mtia named_buffers
    named_children named_modules named_parameters parameters print_readable recompile register_backward_hook
    register_buffer register_forward_hook register_forward_pre_hook register_full_backward_hook
    register_full_backward_pre_hook register_load_state_dict_post_hook register_load_state_dict_pre_hook
    register_module register_parameter register_state_dict_post_hook register_state_dict_pre_hook requires_grad_
    set_extra_state set_submodule shape_env share_memory state_dict to to_empty to_folder train training type xpu
    zero_grad smart_apply
""".split())   # smart_apply: transformers adds it to nn.Module once it has initialised a model


def check_id(nid: str, *, is_input: bool = False) -> None:
    """Raise :class:`GraphError` when ``nid`` cannot name a node (or, with ``is_input``, an input): a Python
    keyword, a name the built torch module already uses, or a name starting with '_'.

    >>> check_id("c1")
    >>> check_id("forward")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    archgraph.errors.GraphError: node 'forward': 'forward' is reserved (it names an attribute of torch modules)...
    """
    if keyword.iskeyword(nid):
        raise GraphError(f"'{nid}' is a Python keyword and cannot be an id", node=nid)
    reserved = CODE_NAMES if is_input else RESERVED_IDS
    if nid in reserved or nid.startswith("_"):
        what = "a variable of the generated forward" if nid in CODE_NAMES else "an attribute of torch modules"
        raise GraphError(f"'{nid}' is reserved (it names {what}); choose another id, e.g. '{nid.strip('_')}_1'",
                         node=nid)


def check(graph: Graph) -> None:
    """Check the invariants pydantic's field types cannot express. Raises :class:`GraphError` naming the node."""
    for nid, shape in graph.inputs.items():
        check_id(nid, is_input=True)
        if len(cast(Shape, shape)) not in (1, 2, 3):   # validated: a shape list or a TokenShape
            raise GraphError(f"input '{nid}' has shape {list(shape)}; an input is [C, H, W], [T, D] or [F] (per "
                             "sample, no batch dimension)", field="inputs")
    for nid, node in graph.nodes.items():
        check_id(nid)
        if nid in graph.inputs:
            raise GraphError(f"'{nid}' is both an input and a node id", node=nid)
        least, most = node.arity
        n = len(node.inputs)
        if n < least or (most is not None and n > most):
            want = f"exactly {least}" if least == most else f"at least {least}"
            raise GraphError(f"{node.op} takes {want} input(s), got {n}", node=nid, field="in")
        for ref in node.inputs:
            if ref == nid:
                raise GraphError("a node cannot read its own output (cycle)", node=nid, field="in")
            if ref not in graph.nodes and ref not in graph.inputs:
                known = [k for k in (*graph.inputs, *graph.nodes) if k != nid]
                raise GraphError(f"input '{ref}' does not exist{_close_match(ref, known)}", node=nid, field="in")
    topological_order(graph)  # raises for a cycle, naming its nodes
    for out in graph.outputs:
        if out not in graph.nodes and out not in graph.inputs:
            known = [*graph.nodes, *graph.inputs]
            raise GraphError(f"output '{out}' does not exist{_close_match(out, known)}", node=out, field="outputs")
    for i, out in enumerate(graph.outputs):
        if out in graph.outputs[:i]:
            raise GraphError(f"output '{out}' is listed twice", node=out, field="outputs")
    check_graph(graph)  # sizes, then shapes (their errors name the node), then totals: before anything is allocated
    _check_ties(graph)


def tied_parameters(graph: "Graph") -> dict[str, str]:
    """``{parameter: the parameter it is}`` of the graph's tied weights (``{"lm_head.weight": "wte.weight"}`` for
    a linear with ``tied_to: wte``): keys of the state dict that name one tensor."""
    return {f"{nid}.weight": f"{getattr(node, 'tied_to')}.weight" for nid, node in graph.nodes.items()
            if getattr(node, "tied_to", None) is not None}


def _check_ties(graph: "Graph") -> None:
    from .ops.spec import Embedding  # the op specs import this module
    for nid, spec in graph.nodes.items():
        node: Any = spec   # a linear (the only kind with tied_to)
        target = getattr(node, "tied_to", None)
        if target is None:
            continue
        other: Any = graph.nodes.get(target)
        if not isinstance(other, Embedding):
            what = "does not exist" if other is None else f"is a {other.op}"
            raise GraphError(f"tied_to '{target}' {what}; a linear ties its weight to an embedding node's table",
                             node=nid, field="tied_to")
        vocab, dim = getattr(graph.input_shapes(target)[0], "vocab"), getattr(other, "embedding_dim")
        width = graph.input_shapes(nid)[0][-1]
        if (node.out_features, width) != (vocab, dim):
            raise GraphError(f"tied to '{target}' ([{vocab}, {dim}]), the weight must be [out_features, input "
                             f"width] = [{vocab}, {dim}]; it is [{node.out_features}, {width}]", node=nid,
                             field="tied_to")


def _close_match(name: str, candidates: list[str]) -> str:
    """' (did you mean ...?)' for a likely typo, else the ids there are (the first few)."""
    match = difflib.get_close_matches(name, candidates, n=1)
    if match:
        return f" (did you mean '{match[0]}'?)"
    shown = ", ".join(candidates[:8]) + (", ..." if len(candidates) > 8 else "")
    return f" (ids: {shown})" if candidates else ""


def content_hash(graph) -> str:
    """sha256 of the graph's canonical JSON (the name is excluded: it does not change the network)."""
    data = graph.to_dict()
    data.pop("name", None)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def summary(graph) -> dict:
    """The numbers ``archgraph summary --json`` prints."""
    shapes = graph.shapes()
    return {
        "name": graph.name,
        "params": count_params(graph),
        "macs": count_macs(graph),
        "nodes": len(graph.nodes),
        "inputs": {k: input_data(v) for k, v in graph.inputs.items()},
        "outputs": {k: list(shapes[k]) for k in graph.outputs},
        "shapes": {k: list(v) for k, v in shapes.items()},
        "layers": [{"id": nid, "op": n.op, "shape": list(shapes[nid]), "params": node_params(graph, nid),
                    "macs": node_macs(graph, nid)} for nid, n in graph.nodes.items()],
    }
