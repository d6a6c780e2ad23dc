"""The converter: a :class:`torch.fx.Interpreter` whose values are graph values, one method per fx node kind.

:func:`from_module` traces a module (:mod:`.trace`), runs it once for concrete shapes, and runs a
:class:`Converter` over the trace: ``placeholder`` makes the graph input, ``get_attr`` a :class:`~.values.Param`,
``call_module`` / ``call_function`` / ``call_method`` look the target up in the handler table (:mod:`.table`) and
call its handler, ``output`` collects the graph's outputs. Subclass it and override a method to read a call your
own way; the nodes go into a :class:`~.builder.GraphBuilder`, the one the Hugging Face walkers use too.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, cast

import torch
import torch.fx as fx
from torch import nn

from ...errors import ConversionError
from ...graph import Graph, TokenShape
from ...ops.registry import OPS, channel_width
from ...ops.spec import KIND_BY_OP, Pad
from ...rules.base import Edit
from ...topology import reachable
from .arguments import ints, pair
from .builder import GraphBuilder, identifier
from .table import HandlerTable, handlers
from .trace import Constant, Root, Traced, as_root, concrete_values, shape_query, trace
from .values import (
    CF,
    CL,
    FLAT,
    GROUPED,
    HAND,
    TND,
    TOKENS,
    Param,
    Projected,
    Tail,
    Unconverted,
    Val,
    hand_words,
    layout_words,
)


def from_module(module: nn.Module, input_shape: Sequence[int] = (3, 224, 224), name: Optional[str] = None,
                seed: int = 0, vocab: Optional[int] = None) -> Edit[dict[str, torch.Tensor]]:
    """Convert ``module`` to a graph and its weights ``{"<node_id>.<param>": tensor}``: an
    :class:`~archgraph.rules.base.Edit` (``.graph``, ``.state``; no rules) that unpacks as ``graph, weights``.

    ``input_shape`` is the per-sample input shape: ``[C, H, W]``, ``[F]``, a sequence ``[T, D]``, or with ``vocab``
    the ``[T]`` integer token ids in ``[0, vocab)`` (the graph input ``{shape: [T], vocab: V}``). The module is
    traced and run in eval mode (its own mode is restored afterwards) on a seeded random input in its own floating
    dtype; the weights are copies, on the module's device.
    Raises :class:`~archgraph.errors.ConversionError` naming the op and fx node it cannot express.

    >>> import torch, archgraph
    >>> g, w = archgraph.from_module(torch.nn.Sequential(torch.nn.Linear(4, 2)), input_shape=(4,))
    >>> g.nodes["n0"].out_features, w["n0.weight"].shape
    (2, torch.Size([2, 4]))
    >>> g, _ = archgraph.from_module(torch.nn.Sequential(torch.nn.Embedding(10, 4)), input_shape=(6,), vocab=10)
    >>> g.inputs["input_1"], g.nodes["n0"].op
    (TokenShape((6,), vocab=10), 'embedding')
    """
    input_shape = tuple(int(s) for s in input_shape)
    module = as_root(module)
    if vocab is not None:
        if len(input_shape) != 1 or min(input_shape) <= 0 or int(vocab) <= 0:
            raise ConversionError(f"token ids need input_shape [T] and vocab V, both positive; got "
                                  f"{list(input_shape)} and vocab={vocab}", field="input_shape")
    elif len(input_shape) not in (1, 2, 3) or min(input_shape) <= 0:
        raise ConversionError(f"input_shape must be [C, H, W], [T, D] or [F] with positive sizes (or [T] with "
                              f"vocab), got {list(input_shape)}", field="input_shape")
    was_training = module.training
    module.eval()
    try:
        tensors = [*module.parameters(), *module.buffers()]
        device = next((t.device for t in tensors), torch.device("cpu"))
        dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.get_default_dtype())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if vocab is not None:
                example = torch.randint(0, int(vocab), (2, *input_shape)).to(device)
            else:
                example = torch.randn(2, *input_shape, dtype=dtype).to(device)
        gm = trace(module, example)
        values = concrete_values(gm, example)
    finally:
        module.train(was_training)
    converter = Converter(gm, values, input_shape, dict(module.named_modules()), vocab=vocab)
    converter.run()
    graph, weights = converter.finish(name or type(getattr(module, "layer", module) if isinstance(module, Root)
                                                    else module).__name__.lower())
    return Edit(graph, weights)


def _has_tensor(value) -> bool:
    if isinstance(value, Traced):
        return True
    return isinstance(value, (tuple, list)) and any(_has_tensor(v) for v in value)


def _flat(value) -> list:
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in _flat(v)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flat(v)]
    return [value]


def _target_name(n: fx.Node) -> str:
    if n.op == "call_module":
        return f"'{n.target}'"
    if n.op == "call_method":
        return f"Tensor.{n.target}"
    try:
        name = fx.node._get_qualified_name(n.target)  # type: ignore[arg-type]
    except Exception:  # not a plain function
        name = str(n.target)
    return name.replace("_operator.", "operator.")


class Converter(fx.Interpreter):
    """Runs a traced module's fx graph on graph values instead of tensors (see the module's doc).

    ``values``: each fx node's concrete value by name (:func:`~.trace.concrete_values`); ``input_shape`` and
    ``vocab``: the graph input; ``originals``: the traced module's own submodules by path (the GraphModule keeps
    only those it calls); ``table``: the handlers (:func:`~.table.handlers` by default).
    """

    def __init__(self, gm: fx.GraphModule, values: dict[str, Any], input_shape: tuple[int, ...],
                 originals: Optional[dict[str, nn.Module]] = None, vocab: Optional[int] = None,
                 table: Optional[HandlerTable] = None):
        super().__init__(gm, garbage_collect_values=False)
        self.extra_traceback = False   # a ConversionError already names the fx node
        self.gm = gm
        self.vocab = vocab
        self.table = table if table is not None else handlers()
        self.originals = originals if originals is not None else dict(gm.named_modules())
        self.values = values
        self.input_shape = input_shape
        self.builder = GraphBuilder()
        self.used: set[str] = set()
        self.outputs: list[str] = []
        self.module_calls: dict[str, str] = {}  # module path -> fx node that called it
        self.param_owners: dict[int, str] = {}   # id of a parameter -> the module that first used it
        self.fx_node: Optional[fx.Node] = None
        #: ids kept for the modules' own nodes, so that derived names never take them
        self.reserved = {nd.name for nd in gm.graph.nodes if nd.op == "call_module"}

    @property
    def current(self) -> fx.Node:
        """The fx node being converted."""
        if self.fx_node is None:
            raise RuntimeError("no fx node is being converted")
        return self.fx_node

    @property
    def nodes(self) -> dict[str, dict]:
        return self.builder.nodes

    @property
    def shapes(self) -> dict[str, Any]:
        return self.builder.shapes

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        return self.builder.weights

    # -- the fx node kinds --
    def run(self, *args, initial_env=None, enable_io_processing: bool = False) -> Any:
        """Convert every fx node (no inputs: the placeholder is the graph input); returns the output node ids."""
        return super().run(*args, initial_env=initial_env, enable_io_processing=enable_io_processing)

    def run_node(self, n: fx.Node) -> Any:
        """One fx node: a call computed from parameters only is folded, one computing a Python value from shapes
        gives that value; any other goes to ``call_module``/``call_function``/``call_method`` and its result is
        checked against the traced shape."""
        self.fx_node = n
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        if not n.op.startswith("call_"):
            return getattr(self, n.op)(n.target, args, kwargs)
        value = self.values[n.name]
        if isinstance(value, Constant):  # computed from parameters only: folded
            if n.op == "call_module":   # a module of constants (nn.Embedding of arange(T)): no node of its own,
                self.reserved.discard(n.name)   # so the node its value ends up in may take its name
            source = n.target if n.op == "call_module" else \
                next((a.name for a in _flat(args) + _flat(kwargs) if isinstance(a, Param)), n.name)
            return Param(str(source), value.tensor)
        if not _has_tensor(value):
            if not shape_query(n) and any(isinstance(a, Param) for a in _flat(args) + _flat(kwargs)):
                raise self.fail("it computes from a parameter outside of a layer, which has no graph op")
            return value  # a Python value computed from shapes: a constant of the graph
        result = getattr(self, n.op)(n.target, args, kwargs)
        self.check_shape(result, value)
        return result

    def placeholder(self, target, args, kwargs) -> Any:
        """The graph input (an optional argument bound to its default is that default)."""
        if args:
            return args[0]
        nid = self.new_id(self.current.name)   # the fx name ('input_1'), not the argument ('input')
        if self.vocab is not None:
            self.builder.input(nid, {"shape": list(self.input_shape), "vocab": int(self.vocab)},
                               TokenShape(self.input_shape, int(self.vocab)))
            return Val(nid, TOKENS)
        self.builder.input(nid, list(self.input_shape), self.input_shape)
        return Val(nid)

    def get_attr(self, target, args, kwargs) -> Any:
        return Param(str(target), self.fetch_attr(str(target)))

    def call_module(self, target, args, kwargs) -> Any:
        module = self.submodules[str(target)]
        handler = self.table.module_handler(module)
        if handler is None:
            raise self.fail(f"module type {type(module).__module__}.{type(module).__name__} is not supported")
        self.check_single_use(self.current, module)
        return handler(self, self.current, module, *args, **kwargs)

    def call_function(self, target, args, kwargs) -> Any:
        handler = self.table.function_handler(target)
        if handler is None:
            raise self.fail("this function is not supported")
        return handler(self, self.current, *args, **kwargs)

    def call_method(self, target, args, kwargs) -> Any:
        handler = self.table.methods.get(str(target))
        if handler is None:
            raise self.fail(f"tensor method '{target}' is not supported")
        return handler(self, self.current, *args, **kwargs)

    def output(self, target, args, kwargs) -> Any:
        result = args[0]
        if isinstance(result, dict):   # torchvision's segmentation models return {"out": ..., "aux": ...}
            result = list(result.values())
        items = list(result) if isinstance(result, (tuple, list)) else [result]
        for item in items:
            val = self.cf(item, what="output")
            if val.node in self.outputs:
                raise self.fail(f"the output '{val.node}' is returned twice")
            self.outputs.append(val.node)
        return self.outputs

    # -- making nodes --
    def fail(self, message: str) -> ConversionError:
        """The error of the current fx node (raise it)."""
        n = self.fx_node
        where = f"{n.op} {_target_name(n)}" if n is not None else "?"
        return ConversionError(f"cannot convert {where}: {message}", fx_node=n.name if n is not None else None)

    def new_id(self, hint: str) -> str:
        base = identifier(hint)
        ident, i = base, 1
        while ident in self.used or ident in self.reserved:
            ident = f"{base}_{i}"
            i += 1
        self.used.add(ident)
        return ident

    def hint(self, op: str) -> str:
        """A node id for ``op`` made by the current fx node: a called module keeps its name (``layer1_0_conv1``);
        an op inside a module's forward is named after the module (``layer1_0_add``)."""
        n = self.current
        if n.op == "call_module":
            return n.name
        stack = n.meta.get("nn_module_stack")
        if not stack:
            return n.name
        path = next(reversed(stack))
        entry = stack[path]
        path = entry[0] if isinstance(entry, tuple) and isinstance(entry[0], str) else path
        if not path:
            return n.name
        return path if path.rpartition(".")[2] == op else f"{path}.{op}"

    def emit(self, hint: Optional[str], op: str, inputs: Sequence[str], weights: Optional[dict] = None,
             **fields) -> str:
        """Add a graph node (validated, shape inferred now) and its weights; returns its id."""
        n = self.current
        if hint is None and n.op == "call_module" and n.name not in self.used and identifier(n.name) == n.name:
            nid = n.name  # fx names are identifiers, unique, and reserved for their module
            self.used.add(nid)
        else:
            nid = self.new_id(hint or self.hint(op))
        return self.builder.add(nid, op, inputs, weights, fail=lambda detail: self.fail(f"{op}{detail}"), **fields)

    # -- reading values --
    def shape(self, val: Val) -> tuple[int, ...]:
        return self.shapes[val.node]

    def channels(self, val: Val) -> int:
        return channel_width(self.shape(val))

    def expected(self, val: Val) -> tuple[int, ...]:
        """The traced tensor's per-sample shape that ``val`` stands for (of a time-first view: its ``[T, D]``)."""
        shape = self.shape(val)
        if val.layout in (CF, TND, TOKENS):
            return tuple(shape)
        c, h, w = shape
        if val.layout == CL:
            return (h, w, c)
        if val.layout == FLAT:
            return (c, h * w)
        g = val.groups
        return (g, c // g, h, w) if val.layout == GROUPED else (c // g, g, h, w)

    def hand_shape(self, value) -> tuple[int, ...]:
        """The traced shape (batch included) of a step of hand-written attention."""
        p = value if isinstance(value, Projected) else value.q
        t = self.shapes[self.nodes[p.proj]["in"][0]][0]
        width = p.rows[1] - p.rows[0] if isinstance(value, Projected) else p.heads * p.head_dim
        sizes = {"N": self.batch(), "T": t, "S": t, "H": p.heads, "E": p.head_dim, "F": width,
                 "P": width // max(1, p.heads * p.head_dim)}
        return tuple(sizes[a] for a in value.axes)

    def first_placeholder(self) -> str:
        """The fx name of the module's input."""
        return next(nd.name for nd in self.gm.graph.nodes if nd.op == "placeholder")

    def batch(self) -> int:
        return self.values[self.first_placeholder()].shape[0]

    def tensor(self, value, what: str = "input", tokens: bool = False) -> Val:
        """``value`` as a graph value; anything else (a parameter, a step of hand-written attention) is an error
        saying what it is."""
        if isinstance(value, Val):
            if value.layout == TOKENS and not tokens:
                raise self.fail(f"its {what} is the integer token ids, which only nn.Embedding reads")
            return value
        if isinstance(value, Param):
            raise self.fail(f"its {what} is the parameter '{value.name}' used as a tensor, which has no graph op")
        if isinstance(value, Unconverted):
            raise self.fail(f"its {what} is {value.what}, which the graph does not hold")
        if isinstance(value, Tail):
            raise self.fail(f"its {what} is the tokens after the first {value.skip} of '{value.source.node}' (x[:, "
                            f"{value.skip}:]), which only a mean over the tokens reads (a token slice has no graph "
                            f"op)")
        if isinstance(value, Projected) and not value.heads:
            raise self.fail(f"its {what} is rows {value.rows[0]}:{value.rows[1]} of the linear '{value.proj}' (a "
                            f"split of a sequence's features), which only attention heads read: a slice of a "
                            f"sequence's features has no graph op")
        if isinstance(value, HAND):
            raise self.fail(f"its {what} is {hand_words(value)}, a step of hand-written attention, which only the "
                            f"next steps read (heads of q/k/v projections, scaled_dot_product_attention or softmax(q "
                            f"@ k.transpose(-2, -1) * scale) @ v, the heads merged, an output projection); other ops "
                            f"on it (per-head q/k norms, a norm or gate before the projection) have no graph op")
        raise self.fail(f"its {what} is {type(value).__name__} {value!r}, not a tensor computed from the input")

    def cf(self, value, rank: Optional[int] = None, what: str = "input") -> Val:
        """``value`` as a channels-first graph value (of ``rank`` per-sample axes, when given)."""
        val = self.tensor(value, what)
        if val.layout != CF:
            raise self.fail(f"its {what} is a {layout_words(val)} view; only channels-first tensors are supported "
                            f"here")
        if rank is not None and len(self.shape(val)) != rank:
            want = "[N, C, H, W]" if rank == 3 else "[N, F]"
            raise self.fail(f"needs a {want} input, got per-sample shape {list(self.shape(val))}")
        return val

    def channel_axis(self, val: Val) -> tuple[int, ...]:
        """Axis indices (positive and negative) of the channel axis of ``val`` in the traced tensor."""
        rank = len(self.expected(val)) + 1
        if val.layout == CL or (val.layout in (CF, TND) and rank == 3):
            return (rank - 1, -1)
        if val.layout == CF:
            return (1, 1 - rank)
        return ()

    def seq(self, value, batch_first: bool = True, what: str = "it") -> Val:
        """``value`` as a sequence ``[T, D]`` in the layout a module with ``batch_first`` reads."""
        val = self.tensor(value)
        if val.layout not in (CF, TND) or len(self.shape(val)) != 2:
            raise self.fail(f"{what} needs a sequence [N, T, D] (or [T, N, D]), got a {layout_words(val)} tensor of "
                            f"per-sample shape {list(self.expected(val))}")
        if (val.layout == CF) != batch_first:
            raise self.fail(f"{what} has batch_first={batch_first} and reads "
                            f"{'[N, T, D]' if batch_first else '[T, N, D]'}, but its input is the "
                            f"{'time-first [T, N, D]' if batch_first else 'batch-first [N, T, D]'} sequence"
                            + ("" if batch_first else "; transpose(0, 1) it first, as the module expects"))
        return val

    # -- checks --
    def check_single_use(self, n: fx.Node, module: nn.Module) -> None:
        has_state = any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers())
        if has_state and n.target in self.module_calls:
            raise self.fail(f"module '{n.target}' is called twice (also by fx node '{self.module_calls[n.target]}');"
                            f" shared weights cannot be expressed in the graph format")
        self.module_calls[str(n.target)] = n.name
        for p in module.parameters():   # tied weights (a language model's head reading its embedding table)
            owner = self.param_owners.setdefault(id(p), str(n.target))
            if owner != n.target:
                raise self.fail(f"module '{n.target}' shares a parameter with module '{owner}'; shared weights "
                                f"cannot be expressed in the graph format")

    def check_shape(self, result, value) -> None:
        """The converted value must have the traced tensor's shape (a guard against wrong conversions)."""
        if isinstance(result, (tuple, list)) and isinstance(value, (tuple, list)):
            for r, v in zip(result, value):
                if isinstance(r, (Val, *HAND)) and isinstance(v, Traced):
                    self.check_shape(r, v)
        if isinstance(result, HAND) and self.hand_shape(result) != tuple(value.shape):
            raise self.fail(f"hand-written attention: {hand_words(result)} has shape {list(self.hand_shape(result))}"
                            f", but the module computes {list(value.shape)}")
        if isinstance(result, Val):
            got, want = self.expected(result), tuple(value.shape[1:])
            if result.layout == TND:   # [T, N, D]
                want = (value.shape[0], *value.shape[2:]) if len(value.shape) == 3 else tuple(value.shape)
            if got != want:
                raise self.fail(f"converted to a tensor of per-sample shape {list(got)}, but the module computes "
                                f"{list(want)}")

    # -- the graph --
    def fold_pads(self) -> None:
        """A symmetric zero ``pad`` read only by convolutions with numeric padding becomes part of their padding
        (timm's ``pad_same`` at stride 1, ``nn.ZeroPad2d`` before a conv)."""
        readers: dict[str, list[str]] = {}
        for nid, data in self.nodes.items():
            for i in data["in"]:
                readers.setdefault(i, []).append(nid)
        for nid, data in list(self.nodes.items()):
            if KIND_BY_OP[data["op"]] is not Pad or nid in self.outputs:
                continue
            left, right, top, bottom = data["padding"]
            users = readers.get(nid, [])
            if data["value"] != 0 or left != right or top != bottom or not users or \
                    not all(OPS[self.nodes[u]["op"]].conv and not isinstance(self.nodes[u]["padding"], str)
                            for u in users):
                continue
            for u in users:
                ph, pw = ints(self.nodes[u]["padding"]) * (2 // len(ints(self.nodes[u]["padding"])))
                self.nodes[u]["padding"] = pair((ph + top, pw + left))
                self.nodes[u]["in"] = [data["in"][0] if i == nid else i for i in self.nodes[u]["in"]]
            del self.nodes[nid]

    def finish(self, name: str) -> tuple[Graph, dict[str, torch.Tensor]]:
        """The graph (its dead nodes dropped: the q/k/v linears hand-written attention read) and its weights."""
        self.fold_pads()
        live = reachable(self.nodes, self.outputs, inputs=lambda data: cast(dict, data)["in"]) & self.nodes.keys()
        if not live:
            raise ConversionError("the module's output is its input: there is no layer to convert")
        return self.builder.finish(name, self.outputs, keep=live)
