"""``nn.Module`` -> (Graph, weights): trace with torch.fx, then convert each fx node to graph nodes.

The module is traced in eval mode and run once on a random input, so every fx node has a concrete value: tensors
give their shapes (each converted node is checked against them), and the Python values a forward computes from
shapes (``x.size()``, ``c // groups``) become constants. Each fx node then maps to a graph value:

* a graph node (or input) holding the tensor in the graph's layout (``N, C, H, W`` or ``N, F``);
* a *view* of one, which needs no node of its own: channels-last (``x.permute(0, 2, 3, 1)``), so ConvNeXt's
  ``permute -> LayerNorm -> Linear -> GELU -> Linear -> permute`` becomes ``layernorm -> conv2d 1x1 -> gelu ->
  conv2d 1x1``; or the grouped ``[N, g, C/g, H, W]`` view of a channel shuffle and its transpose, which becomes one
  ``channel_shuffle`` node when it is flattened back;
* the pieces of a ``chunk``/``split`` along channels (a ``slice`` node per piece that is used);
* a parameter read by ``get_attr`` (a ``scale`` node where it multiplies a tensor per channel).

Anything else raises :class:`~archgraph.errors.ConversionError` naming the op and the fx node: an import is exact
or it fails. Weights are keyed ``<node_id>.<param>``; node ids are the fx node names (module paths with ``_``).

>>> import torch, archgraph
>>> graph, weights = archgraph.from_module(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()),
...                                        input_shape=(3, 8, 8))
>>> list(graph.nodes), sorted(weights)
(['n0', 'n1'], ['n0.bias', 'n0.weight'])
"""
from __future__ import annotations

import keyword
import math
import operator
import re
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Sequence

import torch
import torch.fx as fx
from pydantic import ValidationError
from torch import nn

from ..errors import ArchgraphError, ConversionError
from ..graph import RESERVED_IDS, Graph, TokenShape
from ..fx.torchnames import resolve, try_resolve
from ..topology import reachable
from ..ops.registry import OPS, channel_width
from ..rules.base import Edit
from ..ops.spec import KIND_BY_OP, Linear, Pad

CF, CL, GROUPED, GROUPED_T = "cf", "cl", "grouped", "grouped_t"
#: a sequence ``[T, D]`` seen time-first, ``[T, N, D]`` (what ``batch_first=False`` modules read); the token ids
TND, TOKENS = "tnd", "tokens"
#: an image's positions flattened, ``[N, C, H*W]`` (before the transpose that makes them tokens)
FLAT = "flat"


@dataclass(frozen=True)
class Val:
    """A traced tensor as a graph value: graph id ``node`` seen through ``layout``.

    ``cf``: ``[N, *shape]`` as the graph holds it; ``cl``: ``[N, H, W, C]`` (channels-last view of ``[C, H, W]``);
    ``grouped``: ``[N, g, C/g, H, W]``; ``grouped_t``: ``[N, C/g, g, H, W]`` (``g`` = ``groups``); ``tnd``:
    ``[T, N, D]`` (time-first view of a sequence ``[T, D]``); ``tokens``: the integer token ids ``[N, T]``;
    ``flat``: ``[N, C, H*W]`` (an image's positions flattened, which a transpose makes tokens).
    """
    node: str
    layout: str = CF
    groups: int = 0


@dataclass(frozen=True)
class Pieces:
    """The result of ``chunk``/``split`` along the channels of ``source``: ``(start, stop)`` of each piece."""
    source: Val
    bounds: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Unconverted:
    """A traced value the graph does not hold (an LSTM's final state, attention weights): an error if it is used."""
    what: str


#: axis labels of hand-written attention's tensors (batch included): ``N`` batch, ``T`` tokens (the queries), ``S``
#: tokens (the keys), ``P`` the q/k/v parts of a fused projection, ``H`` heads, ``E`` head_dim, ``F`` features
SEQ_AXES = ("N", "T", "F")


@dataclass(frozen=True)
class Projected:
    """Rows ``rows`` of the linear node ``proj`` (a projection of a sequence) on their way into hand-written
    attention (timm's ``Attention``, nanoGPT's ``CausalSelfAttention``): the traced tensor's axes are ``axes``
    (:data:`SEQ_AXES`' labels); ``heads`` and ``head_dim`` once it is reshaped into heads; ``scale`` a number it
    was multiplied by (timm's ``q * self.scale``)."""
    proj: str
    rows: tuple[int, int]
    axes: tuple[str, ...] = SEQ_AXES
    heads: int = 0
    head_dim: int = 0
    scale: float = 1.0


@dataclass(frozen=True)
class Attended:
    """Hand-written attention of the projections ``q``, ``k`` (and ``v``), by ``stage``: ``scores`` (``q @ k^T``),
    ``probs`` (their softmax over the keys), ``out`` (``probs @ v``, or ``scaled_dot_product_attention``'s result),
    ``merged`` (its heads reshaped back to features, which the output projection reads), seen through ``axes``."""
    stage: str
    q: Projected
    k: Projected
    v: Optional[Projected] = None
    axes: tuple[str, ...] = ("N", "H", "T", "S")
    scale: float = 1.0
    causal: bool = False
    dropout: float = 0.0


#: the values of hand-written attention before its output projection
HAND = (Projected, Attended)


@dataclass(frozen=True)
class Tail:
    """``x[:, skip:]`` of a batch-first sequence (the tokens after its prefix tokens), which a mean over the tokens
    reads (a ``token_pool`` with ``skip``)."""
    source: Val
    skip: int


@dataclass(frozen=True)
class Param:
    """A parameter or buffer of the module read by a ``get_attr`` node."""
    name: str
    tensor: torch.Tensor


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
    module = _as_root(module)
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
        gm = _trace(module, example)
        values = _concrete_values(gm, example)
    finally:
        module.train(was_training)
    converter = _Converter(gm, values, input_shape, dict(module.named_modules()), vocab=vocab)
    converter.run()
    graph, weights = converter.finish(name or type(getattr(module, "layer", module) if isinstance(module, _Root)
                                                    else module).__name__.lower())
    return Edit(graph, weights)


class _Root(nn.Module):
    """A module the tracer keeps whole (an ``nn.TransformerEncoderLayer``) given as the model itself: fx traces the
    root's forward, so it is wrapped as the child ``layer``."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


def _as_root(module: nn.Module) -> nn.Module:
    if isinstance(module, (nn.LSTM, nn.GRU, nn.MultiheadAttention)):
        raise ConversionError(f"a bare {type(module).__name__} returns a tuple (output, state or weights), which a "
                              f"graph does not hold: import a module whose forward returns the output tensor "
                              f"(out, _ = self.rnn(x); return out)")
    if type(module) not in (nn.TransformerEncoderLayer, nn.TransformerEncoder):
        return module
    return _Root(module).train(module.training)   # from_module restores the root's mode


def _optional_arguments(module: nn.Module) -> dict[str, Any]:
    """The arguments of ``module.forward`` after the first that have defaults, bound to them (timm's ViTs take
    ``attn_mask=None`` and the like)."""
    import inspect
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params[1:]
            if p.default is not inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _trace(module: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """torch.fx's symbolic trace (optional arguments bound to their defaults); where it fails (control flow on
    shapes or values), ``torch.export`` (non-strict) on ``example``, whose ATen graph the converter reads too."""
    try:
        tracer = _Tracer(autowrap_functions=_wrapped_functions())
        graph = tracer.trace(module, concrete_args=_optional_arguments(module) or None)
        return fx.GraphModule(tracer.root, graph, type(module).__name__)
    except Exception as err:  # fx raises TraceError, TypeError, ... on data-dependent control flow
        fx_error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(module, (example,), strict=False).module()
    except Exception as err:
        lines = str(err).strip().splitlines()
        raise ConversionError(f"torch.fx cannot trace {type(module).__name__} ({fx_error}), nor can torch.export "
                              f"({type(err).__name__}: {lines[0] if lines else ''})") from None


class _Tracer(fx.Tracer):
    """torch.fx's tracer that also keeps the module classes the registry imports whole (archgraph's own
    ``Attention``, ``RMSNorm``, ... are not in ``torch.nn``, so fx would trace into them). Buffers read as
    attributes are proxies, as parameters are, so ``self.mask[:t, :t]`` traces (nanoGPT's causal mask)."""

    proxy_buffer_attributes = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        from . import timm_layers, windows   # window attention, timm's GRN and affine block (they read this module)
        return type(m) in REGISTERED or type(m) in MODULES or windows.keeps_whole(m) or \
            timm_layers.keeps_whole(m) or super().is_leaf_module(m, qualname)


def _wrapped_functions() -> tuple[Callable, ...]:
    """The registry's import functions that are plain Python functions (archgraph's ``to_tokens``,
    ``token_pool``): fx calls them as one node instead of tracing into them."""
    import types
    return tuple(f for f in _functions() if isinstance(f, types.FunctionType) and f.__module__.startswith("archgraph"))


# ---- concrete run -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Tensor:
    shape: tuple[int, ...]
    dtype: Optional[torch.dtype] = None


def _describe(value):
    if isinstance(value, torch.Tensor):
        return _Tensor(tuple(value.shape), value.dtype)
    if isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
        return type(value)(_describe(v) for v in value)
    return value


@dataclass(frozen=True)
class _Constant:
    """The value of an fx node computed from parameters and constants only (never from the input): in eval mode
    it is a constant, so the converter may fold it (a standardised conv weight, a reshaped layer scale)."""
    tensor: torch.Tensor


def _concrete_values(gm: fx.GraphModule, example: torch.Tensor) -> dict[str, Any]:
    """fx node name -> its value on ``example`` (tensors replaced by their shapes, so nothing big is kept; a tensor
    that does not depend on the input is kept whole, as a :class:`_Constant`)."""
    values: dict[str, Any] = {}
    dependent: set[str] = set()

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            if (n.op == "placeholder" and not n.args) or \
                    (not _shape_query(n) and any(a.name in dependent for a in n.all_input_nodes)):
                dependent.add(n.name)
                values[n.name] = _describe(result)
            elif isinstance(result, torch.Tensor) and n.op != "get_attr":
                values[n.name] = _Constant(result.detach().clone())
            else:
                values[n.name] = _describe(result)
            return result

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder" and not n.args]  # args: a bound default
    if len(placeholders) != 1:
        raise ConversionError(f"the module's forward takes {len(placeholders)} inputs; only one tensor input "
                              f"is supported", field="input_shape")
    try:
        with torch.no_grad():
            Recorder(gm).run(example)
    except ArchgraphError:
        raise
    except Exception as err:
        raise ConversionError(f"running the traced module on a {list(example.shape[1:])} input failed: "
                              f"{_first_line(err)}", field="input_shape", fx_node=_fx_node(err)) from None
    return values


def _shape_query(n: fx.Node) -> bool:
    """``x.size()``, ``x.shape``, ``x.dim()``, ``x.device``: their values depend on the input's shape (and where it
    lives) only, which the graph fixes, so what is computed from them alone (``torch.arange(x.size(1),
    device=x.device)``, a causal mask) is a constant."""
    if n.op == "call_method":
        return n.target in ("size", "dim", "numel")
    if n.op == "call_function" and n.target is getattr:
        return len(n.args) > 1 and n.args[1] in ("shape", "ndim", "device", "dtype")
    return n.op == "call_function" and n.target in (torch.ops.aten.sym_size.int, torch.ops.aten.sym_numel.default)


def _first_line(err: Exception) -> str:
    """torch's own message without the tracing notes fx appends ("While executing %conv1 ...", "Original
    traceback", "Use tlparse ...")."""
    text = str(err).split("While executing")[0].strip().splitlines()
    return text[0] if text else type(err).__name__


def _fx_node(err: Exception):
    import re
    found = re.search(r"While executing %(\w+)", str(err))
    return found.group(1) if found else None


# ---- the converter -------------------------------------------------------------------------------------------------

def _identifier(text: str) -> str:
    """A valid node id from an fx/module name: 'features.0' -> 'features_0', '0' -> 'n0', 'forward' -> 'forward_1'."""
    ident = re.sub(r"\W", "_", text).lstrip("_")
    if not ident or ident[0].isdigit():
        ident = "n" + ident
    if keyword.iskeyword(ident) or ident in RESERVED_IDS:
        ident += "_1"
    return ident


class _Converter:
    def __init__(self, gm: fx.GraphModule, values: dict[str, Any], input_shape: tuple[int, ...],
                 originals: Optional[dict[str, nn.Module]] = None, vocab: Optional[int] = None):
        self.gm = gm
        self.vocab = vocab
        #: the traced module's own submodules by path (the GraphModule keeps only those it calls)
        self.originals = originals if originals is not None else dict(gm.named_modules())
        self.values = values
        self.input_shape = input_shape
        self.modules = dict(gm.named_modules())
        self.inputs: dict[str, list[int]] = {}
        self.nodes: dict[str, dict] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.weights: dict[str, torch.Tensor] = {}
        self.env: dict[str, Any] = {}
        self.used: set[str] = set()
        self.outputs: list[str] = []
        self.module_calls: dict[str, str] = {}  # module path -> fx node that called it
        self.param_owners: dict[int, str] = {}   # id of a parameter -> the module that first used it
        self.fx_node: Optional[fx.Node] = None
        #: ids kept for the modules' own nodes, so that derived names never take them
        self.reserved = {nd.name for nd in gm.graph.nodes if nd.op == "call_module"}

    # -- helpers --
    def fail(self, message: str) -> ConversionError:
        n = self.fx_node
        where = f"{n.op} {_target_name(n)}" if n is not None else "?"
        return ConversionError(f"cannot convert {where}: {message}", fx_node=n.name if n is not None else None)

    def new_id(self, hint: str) -> str:
        base = _identifier(hint)
        ident, i = base, 1
        while ident in self.used or ident in self.reserved:
            ident = f"{base}_{i}"
            i += 1
        self.used.add(ident)
        return ident

    def hint(self, op: str) -> str:
        """A node id for ``op`` made by the current fx node: a called module keeps its name (``layer1_0_conv1``);
        an op inside a module's forward is named after the module (``layer1_0_add``)."""
        n = self.fx_node
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
        n = self.fx_node
        if hint is None and n.op == "call_module" and n.name not in self.used and _identifier(n.name) == n.name:
            nid = n.name  # fx names are identifiers, unique, and reserved for their module
            self.used.add(nid)
        else:
            nid = self.new_id(hint or self.hint(op))
        data = {"op": op, "in": list(inputs), **fields}
        try:
            spec = KIND_BY_OP[op].model_validate(data)
            shape = OPS[op].shape(spec, [self.shapes[i] for i in spec.inputs])
        except ValidationError as err:
            first = err.errors()[0]
            raise self.fail(f"{op} field {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        except ArchgraphError as err:
            raise self.fail(f"{op}: {err.message}") from None
        self.nodes[nid] = data
        self.shapes[nid] = tuple(shape)
        for key, tensor in (weights or {}).items():
            self.weights[f"{nid}.{key}"] = tensor.detach().clone().contiguous()
        return nid

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

    def batch(self) -> int:
        return self.values[_first_placeholder(self)].shape[0]

    def tensor(self, value, what: str = "input", tokens: bool = False) -> Val:
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
            raise self.fail(f"its {what} is {_hand_words(value)}, a step of hand-written attention, which only the "
                            f"next steps read (heads of q/k/v projections, scaled_dot_product_attention or softmax(q "
                            f"@ k.transpose(-2, -1) * scale) @ v, the heads merged, an output projection); other ops "
                            f"on it (per-head q/k norms, a norm or gate before the projection) have no graph op")
        raise self.fail(f"its {what} is {type(value).__name__} {value!r}, not a tensor computed from the input")

    def cf(self, value, rank: Optional[int] = None, what: str = "input") -> Val:
        val = self.tensor(value, what)
        if val.layout != CF:
            raise self.fail(f"its {what} is a {_layout_words(val)} view; only channels-first tensors are supported "
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
            raise self.fail(f"{what} needs a sequence [N, T, D] (or [T, N, D]), got a {_layout_words(val)} tensor of "
                            f"per-sample shape {list(self.expected(val))}")
        if (val.layout == CF) != batch_first:
            raise self.fail(f"{what} has batch_first={batch_first} and reads "
                            f"{'[N, T, D]' if batch_first else '[T, N, D]'}, but its input is the "
                            f"{'time-first [T, N, D]' if batch_first else 'batch-first [N, T, D]'} sequence"
                            + ("" if batch_first else "; transpose(0, 1) it first, as the module expects"))
        return val

    # -- main loop --
    def run(self) -> None:
        _function_table()   # registers the method handlers of functional and split_attention before any method call
        for n in self.gm.graph.nodes:
            self.fx_node = n
            if n.op == "placeholder" and n.args:   # an optional argument bound to its default
                self.env[n.name] = n.args[0]
            elif n.op == "placeholder" and self.vocab is not None:
                nid = self.new_id(n.name)
                self.inputs[nid] = {"shape": list(self.input_shape), "vocab": int(self.vocab)}
                self.shapes[nid] = TokenShape(self.input_shape, int(self.vocab))
                self.env[n.name] = Val(nid, TOKENS)
            elif n.op == "placeholder":
                nid = self.new_id(n.name)
                self.inputs[nid] = list(self.input_shape)
                self.shapes[nid] = self.input_shape
                self.env[n.name] = Val(nid)
            elif n.op == "get_attr":
                self.env[n.name] = Param(n.target, _fetch_attr(self.gm, n.target))
            elif n.op == "output":
                self.output(n)
            else:
                self.env[n.name] = self.convert(n)
        self.fx_node = None

    def convert(self, n: fx.Node):
        args = fx.node.map_arg(n.args, lambda a: self.env[a.name])
        kwargs = fx.node.map_arg(n.kwargs, lambda a: self.env[a.name])
        value = self.values[n.name]
        if isinstance(value, _Constant):  # computed from parameters only: folded
            if n.op == "call_module":   # a module of constants (nn.Embedding of arange(T)): no node of its own,
                self.reserved.discard(n.name)   # so the node its value ends up in may take its name
            source = n.target if n.op == "call_module" else \
                next((a.name for a in _flat(args) + _flat(kwargs) if isinstance(a, Param)), n.name)
            return Param(source, value.tensor)
        if not _has_tensor(value):
            if not _shape_query(n) and any(isinstance(a, Param) for a in _flat(args) + _flat(kwargs)):
                raise self.fail("it computes from a parameter outside of a layer, which has no graph op")
            return value  # a Python value computed from shapes: a constant of the graph
        if n.op == "call_module":
            module = self.modules[n.target]
            from . import timm_layers, windows   # both import this module
            handler = REGISTERED.get(type(module)) or MODULES.get(type(module)) or \
                windows.module_handler(module) or timm_layers.module_handler(module)
            if handler is None:
                raise self.fail(f"module type {type(module).__module__}.{type(module).__name__} is not supported")
            self.check_single_use(n, module)
            result = handler(self, n, module, *args, **kwargs)
        elif n.op == "call_function":
            handler = _function_handler(n.target)
            if handler is None:
                raise self.fail("this function is not supported")
            result = handler(self, n, *args, **kwargs)
        elif n.op == "call_method":
            handler = METHODS.get(n.target)
            if handler is None:
                raise self.fail(f"tensor method '{n.target}' is not supported")
            result = handler(self, n, *args, **kwargs)
        else:  # pragma: no cover - fx has no other node kinds
            raise self.fail("unknown fx node kind")
        self.check_shape(result, value)
        return result

    def check_single_use(self, n: fx.Node, module: nn.Module) -> None:
        has_state = any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers())
        if has_state and n.target in self.module_calls:
            raise self.fail(f"module '{n.target}' is called twice (also by fx node '{self.module_calls[n.target]}');"
                            f" shared weights cannot be expressed in the graph format")
        self.module_calls[n.target] = n.name
        for p in module.parameters():   # tied weights (a language model's head reading its embedding table)
            owner = self.param_owners.setdefault(id(p), n.target)
            if owner != n.target:
                raise self.fail(f"module '{n.target}' shares a parameter with module '{owner}'; shared weights "
                                f"cannot be expressed in the graph format")

    def check_shape(self, result, value) -> None:
        """The converted value must have the traced tensor's shape (a guard against wrong conversions)."""
        if isinstance(result, (tuple, list)) and isinstance(value, (tuple, list)):
            for r, v in zip(result, value):
                if isinstance(r, (Val, *HAND)) and isinstance(v, _Tensor):
                    self.check_shape(r, v)
        if isinstance(result, HAND) and self.hand_shape(result) != tuple(value.shape):
            raise self.fail(f"hand-written attention: {_hand_words(result)} has shape {list(self.hand_shape(result))}"
                            f", but the module computes {list(value.shape)}")
        if isinstance(result, Val):
            got, want = self.expected(result), tuple(value.shape[1:])
            if result.layout == TND:   # [T, N, D]
                want = (value.shape[0], *value.shape[2:]) if len(value.shape) == 3 else tuple(value.shape)
            if got != want:
                raise self.fail(f"converted to a tensor of per-sample shape {list(got)}, but the module computes "
                                f"{list(want)}")

    def output(self, n: fx.Node) -> None:
        result = fx.node.map_arg(n.args[0], lambda a: self.env[a.name])
        if isinstance(result, dict):   # torchvision's segmentation models return {"out": ..., "aux": ...}
            result = list(result.values())
        items = list(result) if isinstance(result, (tuple, list)) else [result]
        for item in items:
            val = self.cf(item, what="output")
            if val.node in self.outputs:
                raise self.fail(f"the output '{val.node}' is returned twice")
            self.outputs.append(val.node)

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
                ph, pw = _ints(self.nodes[u]["padding"]) * (2 // len(_ints(self.nodes[u]["padding"])))
                self.nodes[u]["padding"] = _pair((ph + top, pw + left))
                self.nodes[u]["in"] = [data["in"][0] if i == nid else i for i in self.nodes[u]["in"]]
            del self.nodes[nid]

    def finish(self, name: str) -> tuple[Graph, dict[str, torch.Tensor]]:
        self.fold_pads()
        live = reachable(self.nodes, self.outputs, inputs=lambda data: data["in"]) & self.nodes.keys()
        if not live:
            raise ConversionError("the module's output is its input: there is no layer to convert")
        nodes = {k: v for k, v in self.nodes.items() if k in live}
        weights = {k: v for k, v in self.weights.items() if k.partition(".")[0] in live}
        data = {"archgraph": 1, "name": name, "inputs": self.inputs, "nodes": nodes, "outputs": self.outputs}
        try:
            graph = Graph.model_validate(data)
        except ValidationError as err:
            raise ConversionError(f"the converted graph is not valid: {err.errors()[0]['msg']}") from None
        return graph, weights


def _fetch_attr(gm: nn.Module, target: str) -> torch.Tensor:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _has_tensor(value) -> bool:
    if isinstance(value, _Tensor):
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
        name = fx.node._get_qualified_name(n.target)
    except Exception:  # not a plain function
        name = str(n.target)
    return name.replace("_operator.", "operator.")


def _layout_words(val: Val) -> str:
    return {CL: "channels-last", GROUPED: "grouped [N, g, C/g, H, W]",
            GROUPED_T: "transposed grouped [N, C/g, g, H, W]", TND: "time-first [T, N, D]",
            FLAT: "flattened [N, C, H*W] (a reshape or flatten(2) of an image, which a transpose makes tokens)",
            TOKENS: "token id"}.get(val.layout, "channels-first")


def _hand_words(value) -> str:
    if isinstance(value, Projected):
        what = "heads" if value.heads else "rows"
        return f"the {what} [{', '.join(value.axes)}] of the projection '{value.proj}'"
    return f"the attention {value.stage} [{', '.join(value.axes)}] of '{value.q.proj}'"


def _ints(value) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def _pair(value):
    """An int, or ``[h, w]`` when the two differ (the format's short form)."""
    v = _ints(value)
    return v[0] if len(v) == 1 or v[0] == v[1] else list(v)


# ---- module handlers -------------------------------------------------------------------------------------------

def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.state_dict())


def conv2d(c: _Converter, n, m: nn.Conv2d, x, *rest):
    x = c.cf(x, 3)
    if m.padding_mode != "zeros":
        raise c.fail(f"padding_mode='{m.padding_mode}' is not supported (only 'zeros')")
    padding = m.padding if isinstance(m.padding, str) else _pair(m.padding)
    return Val(c.emit(None, "conv2d", [x.node], _state(m), out_channels=m.out_channels,
                      kernel_size=_pair(m.kernel_size), stride=_pair(m.stride), padding=padding,
                      dilation=_pair(m.dilation), groups=m.groups, bias=m.bias is not None))


def conv_transpose2d(c: _Converter, n, m: nn.ConvTranspose2d, x, output_size=None):
    x = c.cf(x, 3)
    if m.padding_mode != "zeros":
        raise c.fail(f"padding_mode='{m.padding_mode}' is not supported (only 'zeros')")
    if output_size is not None:
        raise c.fail("a transposed conv called with output_size is not supported (set output_padding instead)")
    return Val(c.emit(None, "conv_transpose2d", [x.node], _state(m), out_channels=m.out_channels,
                      kernel_size=_pair(m.kernel_size), stride=_pair(m.stride), padding=_pair(m.padding),
                      output_padding=_pair(m.output_padding), groups=m.groups, dilation=_pair(m.dilation),
                      bias=m.bias is not None))


def _upsample(c: _Converter, x, size, scale_factor, mode, align_corners, recompute_scale_factor=None):
    x = c.cf(x, 3)
    if mode not in ("nearest", "bilinear"):
        raise c.fail(f"upsampling mode '{mode}' is not supported (only nearest and bilinear)")
    fields: dict = {"mode": mode}
    if size is not None:
        fields["size"] = _pair(size)
    else:
        f = tuple(float(v) for v in scale_factor) if isinstance(scale_factor, (tuple, list)) else float(scale_factor)
        if recompute_scale_factor:   # the output size is floor(size * f) either way; only the sampling differs
            h, w = c.shape(x)[1:]
            fh, fw = (f, f) if isinstance(f, float) else f
            fields["size"] = [int(h * fh), int(w * fw)]
        else:
            fields["scale_factor"] = f[0] if isinstance(f, tuple) and f[0] == f[1] else f
    if mode == "bilinear" and align_corners is not None:
        fields["align_corners"] = bool(align_corners)
    return Val(c.emit(None, "upsample", [x.node], **fields))


def upsample(c: _Converter, n, m: nn.Upsample, x):
    align = True if isinstance(m, nn.UpsamplingBilinear2d) else m.align_corners   # it always aligns the corners
    return _upsample(c, x, m.size, m.scale_factor, m.mode, align, m.recompute_scale_factor)


def linear(c: _Converter, n, m: nn.Linear, x):
    if isinstance(x, Attended):
        return _hand_attention(c, n.target.rpartition(".")[0] or "attention", x, m.weight, m.bias)
    x = c.tensor(x)
    if x.layout == CL:  # a Linear over channels-last positions is a 1x1 convolution
        state = _state(m)
        state["weight"] = state["weight"].reshape(m.out_features, m.in_features, 1, 1)
        return Val(c.emit(None, "conv2d", [x.node], state, out_channels=m.out_features, kernel_size=1,
                          bias=m.bias is not None), CL)
    return _linear(c, None, m, x)


def _linear(c: _Converter, hint: Optional[str], m: nn.Linear, x: Val) -> Val:
    """A ``linear`` node: on ``[N, F]``, or on the last axis of a sequence (either layout, which it keeps)."""
    x = x if x.layout == TND else c.cf(x)
    if len(c.shape(x)) not in (1, 2):
        x = c.cf(x, 1)
    return Val(c.emit(hint, "linear", [x.node], _state(m), out_features=m.out_features, bias=m.bias is not None),
               x.layout)


def batchnorm(op: str):
    def handler(c: _Converter, n, m, x):
        x = c.cf(x, OPS[op].in_rank)
        return Val(c.emit(None, op, [x.node], _state(m), eps=m.eps, momentum=m.momentum, affine=m.affine,
                          track_running_stats=m.track_running_stats))
    return handler


def _layernorm(c: _Converter, hint: str, x, normalized_shape, eps: float, weight, bias) -> Val:
    x = c.tensor(x)
    if not (x.layout == CL or (x.layout in (CF, TND) and len(c.shape(x)) in (1, 2))):
        raise c.fail(f"layer norm over the last axis of a {_layout_words(x)} tensor of per-sample shape "
                     f"{list(c.expected(x))} is not supported: only over features [N, F], the last axis of a "
                     f"sequence [N, T, D] or over the channels of a channels-last [N, H, W, C] tensor")
    if tuple(_ints(normalized_shape)) != (c.channels(x),):
        raise c.fail(f"normalized_shape {list(_ints(normalized_shape))} must be the {c.channels(x)} channels")
    state = {}
    if weight is not None:
        state["weight"] = weight.reshape(-1)
    if bias is not None:
        state["bias"] = bias.reshape(-1)
    if weight is None and bias is not None:
        raise c.fail("a layer norm with a bias but no weight is not supported")
    return Val(c.emit(hint, "layernorm", [x.node], state, eps=float(eps), elementwise_affine=weight is not None,
                      bias=bias is not None), x.layout)


def layernorm(c: _Converter, n, m: nn.LayerNorm, x):
    if hasattr(m, "ramp") and hasattr(m, "mask"):   # archgraph's MaskedLayerNorm (add_filters init=masked)
        return masked_layernorm(c, n, m, x)
    return _layernorm(c, None, x, m.normalized_shape, m.eps, m.weight, m.bias)


def masked_layernorm(c: _Converter, n, m, x):
    """archgraph's own ``MaskedLayerNorm``: a layernorm with ``mask_ramp`` and its ``mask`` buffer."""
    x = c.tensor(x)
    if x.layout not in (CF, TND) or len(c.shape(x)) not in (1, 2):
        raise c.fail("a masked layer norm normalises the last axis of [N, F] or a sequence [N, T, D]")
    return Val(c.emit(None, "layernorm", [x.node], _state(m), eps=float(m.eps),
                      elementwise_affine=m.weight is not None, bias=m.bias is not None, mask_ramp=int(m.ramp)),
               x.layout)


def rmsnorm(c: _Converter, n, m, x):
    """``nn.RMSNorm`` (and archgraph's own) over the last axis of ``[N, F]`` or a sequence."""
    x = c.tensor(x)
    if x.layout not in (CF, TND) or len(c.shape(x)) not in (1, 2):
        raise c.fail(f"RMS norm of a {_layout_words(x)} tensor of per-sample shape {list(c.expected(x))} is not "
                     f"supported (only [N, F] and sequences)")
    if tuple(m.normalized_shape) != (c.channels(x),):
        raise c.fail(f"normalized_shape {list(m.normalized_shape)} must be the last axis's {c.channels(x)}")
    return Val(c.emit(None, "rmsnorm", [x.node], _state(m), eps=None if m.eps is None else float(m.eps),
                      elementwise_affine=m.weight is not None), x.layout)


def grn(c: _Converter, n, m, x):
    """archgraph's own ``GRN`` (channels-first; timm's ``GlobalResponseNorm`` is :mod:`.timm_layers`')."""
    x = c.cf(x, 3)
    return Val(c.emit(None, "grn", [x.node], _state(m), eps=float(m.eps)))


def embedding(c: _Converter, n, m: nn.Embedding, x):
    x = c.tensor(x, tokens=True)
    if x.layout != TOKENS:
        raise c.fail("nn.Embedding must read the token input (from_module(..., input_shape=(T,), vocab=V))")
    for attr in ("padding_idx", "max_norm"):
        if getattr(m, attr) is not None:
            raise c.fail(f"{attr}={getattr(m, attr)} is not supported (the embedding op is a plain table)")
    vocab = c.shape(x).vocab
    if m.num_embeddings != vocab:
        raise c.fail(f"the table has {m.num_embeddings} rows but the input's vocab is {vocab}; import with "
                     f"vocab={m.num_embeddings}")
    return Val(c.emit(None, "embedding", [x.node], _state(m), embedding_dim=m.embedding_dim))


def rnn(op: str):
    """``nn.LSTM`` / ``nn.GRU`` from a zero state: the output is ``(sequence, Unconverted final state)``."""
    def handler(c: _Converter, n, m, x, hx=None):
        if hx is not None:
            raise c.fail("an initial state is not supported (the op starts from zeros)")
        if m.bidirectional:
            raise c.fail(f"bidirectional=True is not supported: the {op} op runs forward in time only")
        if getattr(m, "proj_size", 0):
            raise c.fail(f"proj_size={m.proj_size} is not supported")
        x = c.seq(x, m.batch_first, type(m).__name__)
        out = c.emit(None, op, [x.node], _state(m), hidden_size=m.hidden_size, num_layers=m.num_layers,
                     bias=bool(m.bias), dropout=float(m.dropout))
        return Val(out, x.layout), Unconverted(f"the final state of '{n.target}'")
    return handler


def _causal(c: _Converter, mask, is_causal, t: int) -> bool:
    """Whether an attention mask is exactly the causal one (``True`` above the diagonal, or ``-inf`` there and 0
    elsewhere, as ``nn.Transformer.generate_square_subsequent_mask``); any other mask is refused."""
    if mask is None:
        if is_causal:
            raise c.fail("is_causal=True without its causal attn_mask is not supported")
        return False
    if not isinstance(mask, Param):
        raise c.fail("an attention mask computed from the input is not supported (only a constant causal mask)")
    m = mask.tensor
    upper = torch.ones(t, t, dtype=torch.bool, device=m.device).triu(1)
    if tuple(m.shape) != (t, t):
        raise c.fail(f"an attention mask of shape {list(m.shape)} is not supported (only the causal [T, T] mask, "
                     f"T = {t})")
    if m.dtype == torch.bool:
        ok = torch.equal(m, upper)
    else:
        ok = bool((m[upper] == float("-inf")).all() and (m[~upper] == 0).all())
    if not ok:
        raise c.fail(f"the attention mask '{mask.name}' is not the causal mask (True or -inf above the diagonal, "
                     f"False or 0 elsewhere); other masks are not supported")
    return True


def _mha(c: _Converter, hint: Optional[str], m: nn.MultiheadAttention, x: Val, causal: bool) -> Val:
    """One ``attention`` node from a self-attention ``nn.MultiheadAttention``: ``in_proj_weight`` split into the
    q/k/v projections, ``out_proj`` the o projection."""
    if not m._qkv_same_embed_dim:
        raise c.fail("kdim/vdim different from embed_dim are not supported (self-attention only)")
    if m.bias_k is not None or m.add_zero_attn:
        raise c.fail("add_bias_kv and add_zero_attn are not supported")
    q, k, v = m.in_proj_weight.chunk(3)
    state = {"q_proj.weight": q, "k_proj.weight": k, "v_proj.weight": v, "o_proj.weight": m.out_proj.weight}
    bias = m.in_proj_bias is not None
    if bias != (m.out_proj.bias is not None):
        raise c.fail("in_proj and out_proj must both have a bias or both have none")
    if bias:
        qb, kb, vb = m.in_proj_bias.chunk(3)
        state.update({"q_proj.bias": qb, "k_proj.bias": kb, "v_proj.bias": vb, "o_proj.bias": m.out_proj.bias})
    return Val(c.emit(hint, "attention", [x.node], state, num_heads=m.num_heads, causal=causal, bias=bias,
                      dropout=float(m.dropout)), x.layout)


def multihead_attention(c: _Converter, n, m: nn.MultiheadAttention, query, key, value, key_padding_mask=None,
                        need_weights=True, attn_mask=None, average_attn_weights=True, is_causal=False):
    if not (isinstance(query, Val) and query == key == value):
        raise c.fail("only self-attention is supported (query, key and value the same tensor)")
    if key_padding_mask is not None:
        raise c.fail("key_padding_mask is not supported")
    x = c.seq(query, m.batch_first, "nn.MultiheadAttention")
    out = _mha(c, None, m, x, _causal(c, attn_mask, is_causal, c.shape(x)[0]))
    weights = c.values[n.name][1]
    return out, (None if weights is None else Unconverted(f"the attention weights of '{n.target}'"))


def _activation_node(c: _Converter, hint: str, act, x: Val) -> Val:
    """The activation node of ``act``, a module or function the registry imports as an activation."""
    for op, d in OPS.items():
        if not d.is_activation:
            continue
        if isinstance(act, nn.Module) and any(resolve(cls) is type(act) for cls in d.imports.modules):
            names = [k for k in KIND_BY_OP[op].model_fields if k not in ("op", "inputs")]
            return Val(c.emit(hint, op, [x.node], **{k: getattr(act, k) for k in names}), x.layout)
        if not isinstance(act, nn.Module) and any(try_resolve(f) is act for f in d.imports.functions):
            return Val(c.emit(hint, op, [x.node]), x.layout)
    raise c.fail(f"the activation {act!r} is not supported")


def _encoder_layer(c: _Converter, path: str, m: nn.TransformerEncoderLayer, x, mask, padding_mask,
                   is_causal) -> Val:
    """``nn.TransformerEncoderLayer`` node by node: attention and feed-forward blocks with residual adds, the
    norms before them (``norm_first``) or after each add."""
    if padding_mask is not None:
        raise c.fail("src_key_padding_mask is not supported")
    x = c.seq(x, m.self_attn.batch_first, "nn.TransformerEncoderLayer")
    causal = _causal(c, mask, is_causal, c.shape(x)[0])
    if getattr(m, "activation_relu_or_gelu", 0) == 2 and getattr(m.activation, "approximate", "none") != "none":
        raise c.fail(f"activation {m.activation!r} is not supported: torch's eval fast path computes the exact GELU "
                     f"here and the other path the approximate one, so the layer has no one function to import")

    def norm(name, v):
        ln = getattr(m, name)
        return _layernorm(c, f"{path}.{name}", v, ln.normalized_shape, ln.eps, ln.weight, ln.bias)

    def drop(name, v):
        p = float(getattr(m, name).p)
        return v if p == 0 else Val(c.emit(f"{path}.{name}", "dropout", [v.node], p=p), v.layout)

    def attention(v):
        return drop("dropout1", _mha(c, f"{path}.self_attn", m.self_attn, v, causal))

    def feed_forward(v):
        h = _activation_node(c, f"{path}.activation", m.activation, _linear(c, f"{path}.linear1", m.linear1, v))
        return drop("dropout2", _linear(c, f"{path}.linear2", m.linear2, drop("dropout", h)))

    def add(name, a, b):
        return Val(c.emit(f"{path}.{name}", "add", [a.node, b.node]), a.layout)

    if m.norm_first:
        x = add("add1", x, attention(norm("norm1", x)))
        return add("add2", x, feed_forward(norm("norm2", x)))
    x = norm("norm1", add("add1", x, attention(x)))
    return norm("norm2", add("add2", x, feed_forward(x)))


def encoder_layer(c: _Converter, n, m: nn.TransformerEncoderLayer, src, src_mask=None, src_key_padding_mask=None,
                  is_causal=False):
    return _encoder_layer(c, n.target, m, src, src_mask, src_key_padding_mask, is_causal)


def encoder(c: _Converter, n, m: nn.TransformerEncoder, src, mask=None, src_key_padding_mask=None, is_causal=None):
    """``nn.TransformerEncoder``: its layers one after another, then its final norm (when it has one)."""
    x = src
    for i, layer in enumerate(m.layers):
        if type(layer) is not nn.TransformerEncoderLayer:
            raise c.fail(f"layer {i} is a {type(layer).__name__}, not an nn.TransformerEncoderLayer")
        x = _encoder_layer(c, f"{n.target}.layers.{i}", layer, x, mask, src_key_padding_mask, bool(is_causal))
    if m.norm is not None:
        if type(m.norm) is not nn.LayerNorm:
            raise c.fail(f"the final norm {type(m.norm).__name__} is not supported (only nn.LayerNorm)")
        x = _layernorm(c, f"{n.target}.norm", x, m.norm.normalized_shape, m.norm.eps, m.norm.weight, m.norm.bias)
    return x


def attention_module(c: _Converter, n, m, x):
    """archgraph's own ``Attention`` (a built graph imported back)."""
    x = c.seq(x, True, "Attention")
    return Val(c.emit(None, "attention", [x.node], _state(m), num_heads=m.num_heads,
                      head_dim=None if m.head_dim * m.num_heads == m.dim else m.head_dim,
                      kv_heads=None if m.kv_heads == m.num_heads else m.kv_heads, causal=bool(m.causal),
                      bias=m.o_proj.bias is not None,
                      qkv_bias=None if (m.q_proj.bias is None) == (m.o_proj.bias is None) else m.q_proj.bias is not None,
                      dropout=float(m.dropout), rotary=bool(m.rotary),
                      rope_theta=float(m.rope_theta)))


def table_module(op: str):
    """archgraph's own ``PositionEmbedding``: a ``weight`` table next to a sequence."""
    def handler(c: _Converter, n, m, x):
        x = c.seq(x, True, type(m).__name__)
        return Val(c.emit(None, op, [x.node], _state(m)))
    return handler


def moe_module(c: _Converter, n, m, x):
    """archgraph's own ``MoE`` (a routed mixture of SwiGLU experts): its sizes are the module's attributes."""
    x = c.seq(x, True, type(m).__name__)
    return Val(c.emit(None, "moe", [x.node], _state(m), num_experts=m.num_experts, top_k=m.top_k, hidden=m.hidden,
                      normalize=bool(m.normalize), activation=m.activation, expert_ramp=m.ramp))


def unary(op: str):
    """An elementwise op: any layout, the output keeps it; its fields are the module's attributes of the same name
    (``nn.GELU.approximate``)."""
    names = [k for k in KIND_BY_OP[op].model_fields if k not in ("op", "inputs")]

    def handler(c: _Converter, n, m, x, *rest, **kw):
        x = c.tensor(x)
        fields = {k: getattr(m, k) for k in names}
        return Val(c.emit(None, op, [x.node], **fields), x.layout, x.groups)
    return handler


def maxpool(c: _Converter, n, m: nn.MaxPool2d, x):
    if m.return_indices:
        raise c.fail("return_indices=True is not supported")
    return _maxpool(c, n, x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)


def _maxpool(c, n, x, kernel_size, stride, padding, dilation, ceil_mode):
    return _pool2d(c, "maxpool2d", c.cf(x, 3), kernel_size, stride, padding, dilation=_pair(dilation),
                   ceil_mode=bool(ceil_mode))


def _pool2d(c, op, x, kernel_size, stride, padding, **fields):
    """A pooling node on ``x`` (already channels-first); no ``stride`` (None or empty) means the kernel size."""
    fields = {"kernel_size": _pair(kernel_size), "padding": _pair(padding), **fields}
    if stride is not None and _ints(stride) != ():
        fields["stride"] = _pair(stride)
    return Val(c.emit(None, op, [x.node], **fields))


def avgpool(c: _Converter, n, m: nn.AvgPool2d, x):
    return _avgpool(c, n, x, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad,
                    m.divisor_override)


def _avgpool(c, n, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    x = c.cf(x, 3)
    if divisor_override is not None:
        raise c.fail("divisor_override is not supported")
    return _pool2d(c, "avgpool2d", x, kernel_size, stride, padding, ceil_mode=bool(ceil_mode),
                   count_include_pad=bool(count_include_pad))


def adaptive_avgpool(c: _Converter, n, m: nn.AdaptiveAvgPool2d, x):
    return _adaptive(c, n, x, m.output_size)


def _adaptive(c, n, x, output_size):
    x = c.cf(x, 3)
    size = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if any(s is None for s in size):
        raise c.fail(f"output_size {list(size)} with None is not supported")
    return Val(c.emit(None, "adaptive_avgpool2d", [x.node], output_size=_pair(size)))


def dropout(c: _Converter, n, m: nn.Dropout, x):
    if isinstance(x, Attended) and x.stage == "probs":   # attention dropout, on the probabilities
        return replace(x, dropout=float(m.p))
    x = c.tensor(x)
    return Val(c.emit(None, "dropout", [x.node], p=float(m.p)), x.layout, x.groups)


def identity(c: _Converter, n, m, x, *rest, **kw):
    return x if isinstance(x, HAND) else c.tensor(x)


def flatten_module(c: _Converter, n, m: nn.Flatten, x):
    return _flatten(c, n, x, m.start_dim, m.end_dim)


def _flatten(c: _Converter, n, x, start_dim=0, end_dim=-1):
    x = c.tensor(x)
    out = c.values[n.name].shape
    if x.layout == CF and start_dim == 1 and end_dim == -1:
        if len(c.shape(x)) == 1:
            return x
        return Val(c.emit(None, "flatten", [x.node]))
    if x.layout == CF and len(c.shape(x)) == 3 and start_dim == 2 and end_dim in (-1, 3):
        return Val(x.node, FLAT)
    return _reshape(c, n, x, out)


def pad_module(c: _Converter, n, m: nn.ConstantPad2d, x):
    return _pad(c, n, x, m.padding, "constant", m.value)


def _pad(c: _Converter, n, x, pad, mode="constant", value=None):
    x = c.cf(x, 3)
    pad = _ints(pad)
    if mode != "constant":
        raise c.fail(f"padding mode '{mode}' is not supported (only 'constant')")
    if len(pad) not in (2, 4) or min(pad) < 0:
        raise c.fail(f"padding {list(pad)} is not supported (only non-negative padding of the last two axes)")
    pad = (*pad, 0, 0) if len(pad) == 2 else pad
    if not any(pad):
        return x
    return Val(c.emit(None, "pad", [x.node], padding=list(pad), value=float(value or 0.0)))


#: module handlers of the ops whose import is not :func:`unary`'s (keyed by op; the module classes that map to
#: each op are the registry's ``imports.modules``)
MODULE_HANDLERS: dict[str, Callable] = {
    "conv2d": conv2d, "linear": linear, "batchnorm2d": batchnorm("batchnorm2d"),
    "batchnorm1d": batchnorm("batchnorm1d"), "layernorm": layernorm, "maxpool2d": maxpool, "avgpool2d": avgpool,
    "adaptive_avgpool2d": adaptive_avgpool, "dropout": dropout, "identity": identity, "flatten": flatten_module,
    "conv_transpose2d": conv_transpose2d, "upsample": upsample,
    "pad": pad_module, "rmsnorm": rmsnorm, "grn": grn, "embedding": embedding, "lstm": rnn("lstm"), "gru": rnn("gru"),
    "attention": lambda c, n, m, *a, **k: _ATTENTION_MODULES.get(type(m), attention_module)(c, n, m, *a, **k),
    "position_embedding": table_module("position_embedding"), "moe": moe_module,
    "class_token": lambda c, n, m, x: Val(c.emit(None, "class_token", [c.seq(x, True, "ClassToken").node], _state(m),
                                                  tokens=int(m.weight.shape[0]))),
}

#: the torch modules the attention op's import names, by class (an encoder layer is several nodes around one)
_ATTENTION_MODULES: dict[type, Callable] = {nn.MultiheadAttention: multihead_attention,
                                            nn.TransformerEncoderLayer: encoder_layer, nn.TransformerEncoder: encoder}

MODULES: dict[type, Callable] = {resolve(cls): MODULE_HANDLERS.get(op) or unary(op)
                                 for op, d in OPS.items() for cls in d.imports.modules}


#: module classes taught by :func:`register_module` (looked up before the built-in tables)
REGISTERED: dict[type, Callable] = {}


def register_module(cls: type, handler: Callable) -> None:
    """Teach the importer a custom layer (Torch-Pruning's ``register_customized_layer`` is the peer): torch.fx keeps
    every ``cls`` module whole (one call, not traced into) and ``handler(converter, fx_node, module, x, ...)`` turns
    the call into graph nodes. ``x`` is the input as the converter sees it (a :class:`Val`); ``converter.emit(hint,
    op, [x.node], weights, **fields)`` adds a validated node of any graph op (``weights``: its tensors by the op's
    parameter names) and returns its id; the handler returns ``Val(id)`` (a sequence's or image's layout follows
    the op). A second registration of ``cls`` replaces the first; it applies to later imports.

    >>> register_module(MyLinear, lambda c, n, m, x: Val(c.emit(None, "linear", [x.node],   # doctest: +SKIP
    ...     {"weight": m.w}, out_features=m.w.shape[0], bias=False)))
    """
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise TypeError(f"register_module needs an nn.Module subclass, got {cls!r}")
    if not callable(handler):
        raise TypeError(f"the handler of {cls.__name__} must be callable")
    REGISTERED[cls] = handler


# ---- function and method handlers -------------------------------------------------------------------------------

def _binary(c: _Converter, n, op: str, a, b, alpha=1):
    if alpha != 1:
        raise c.fail(f"alpha={alpha} is not supported")
    vals = [v for v in (a, b) if isinstance(v, Val)]
    if len(vals) != 2:
        other = next(v for v in (a, b) if not isinstance(v, Val))
        if isinstance(other, (*HAND, Unconverted)):
            c.tensor(other)   # raises, saying what the value is
        what = f"the parameter '{other.name}'" if isinstance(other, Param) else f"the constant {other!r}"
        raise c.fail(f"{op} of a tensor and {what} has no graph op")
    a, b = vals
    if (a.layout, a.groups) != (b.layout, b.groups):
        raise c.fail(f"its inputs have different layouts ({_layout_words(a)} and {_layout_words(b)})")
    if a.layout in (GROUPED, GROUPED_T) and c.channels(a) != c.channels(b):
        # grouped views of as many channels are laid out alike (split attention's stack times its attention), so
        # the op on the values they view is the op on the views; others would broadcast across the groups
        raise c.fail(f"{op} of {_layout_words(a)} views of {c.channels(a)} and {c.channels(b)} channels is not "
                     f"supported (only of views of as many channels)")
    return Val(c.emit(None, op, [a.node, b.node]), a.layout, a.groups)


def _scale(c: _Converter, n, x: Val, param: Param) -> Val:
    if x.layout not in (CF, CL):
        raise c.fail(f"scaling a {_layout_words(x)} view is not supported")
    channels = c.channels(x)
    rank = len(c.expected(x)) + 1
    shape = tuple(param.tensor.shape)
    per_channel = [1] * rank
    per_channel[c.channel_axis(x)[0]] = channels
    if param.tensor.numel() == 1 and channels > 1:  # one number for every channel
        param = Param(param.name, param.tensor.reshape(1).expand(channels).clone())
        shape = (channels,) if x.layout == CL else (channels, 1, 1)[:rank - 1]
    if param.tensor.numel() != channels or tuple(per_channel[rank - len(shape):]) != shape or \
            any(s != 1 for s in per_channel[:rank - len(shape)]):
        raise c.fail(f"multiplying by the parameter '{param.name}' of shape {list(shape)} is not a per-channel "
                     f"scale of the {channels} channels")
    return Val(c.emit(param.name, "scale", [x.node], {"weight": param.tensor.reshape(-1)}), x.layout)


def _param(c: _Converter, value, what: str) -> Optional[torch.Tensor]:
    """The tensor of a parameter argument (``None`` stays ``None``); a computed one is an error."""
    if value is None or isinstance(value, Param):
        return None if value is None else value.tensor
    raise c.fail(f"its {what} is computed from the input, which has no graph op (only parameters are supported)")


def _owner(param) -> Optional[str]:
    """The module path of a parameter ('layer1.0.conv.weight' -> 'layer1.0.conv'), a node id hint."""
    return (param.name.rpartition(".")[0] or None) if isinstance(param, Param) else None


def f_conv2d(c: _Converter, n, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    x = c.cf(x, 3)
    w, b = _param(c, weight, "weight"), _param(c, bias, "bias")
    if w is None or w.dim() != 4:
        raise c.fail("F.conv2d needs a 4-D weight parameter")
    state = {"weight": w} if b is None else {"weight": w, "bias": b}
    padding = padding if isinstance(padding, str) else _pair(padding)
    return Val(c.emit(_owner(weight), "conv2d", [x.node], state, out_channels=int(w.shape[0]),
                      kernel_size=_pair(tuple(w.shape[2:])), stride=_pair(stride), padding=padding,
                      dilation=_pair(dilation), groups=int(groups), bias=b is not None))


def f_linear(c: _Converter, n, x, weight, bias=None):
    w, b = _param(c, weight, "weight"), _param(c, bias, "bias")
    if isinstance(x, Attended) and w is not None:
        return _hand_attention(c, (_owner(weight) or "").rpartition(".")[0] or "attention", x, w, b)
    x = c.tensor(x)
    if w is None or w.dim() != 2:
        raise c.fail("F.linear needs a 2-D weight parameter")
    out = int(w.shape[0])
    if x.layout == CL:  # over channels-last positions: a 1x1 convolution
        state = {"weight": w.reshape(out, -1, 1, 1)} if b is None else {"weight": w.reshape(out, -1, 1, 1), "bias": b}
        return Val(c.emit(_owner(weight), "conv2d", [x.node], state, out_channels=out, kernel_size=1,
                          bias=b is not None), CL)
    x = x if x.layout == TND else c.cf(x)
    if len(c.shape(x)) not in (1, 2):
        x = c.cf(x, 1)
    state = {"weight": w} if b is None else {"weight": w, "bias": b}
    return Val(c.emit(_owner(weight), "linear", [x.node], state, out_features=out, bias=b is not None), x.layout)


def f_batch_norm(c: _Converter, n, x, *args, **kwargs):
    if n.target is torch.ops.aten.batch_norm.default:  # (x, weight, bias, running_mean, running_var, ...)
        weight, bias, mean, var, *rest = args
        return _batch_norm(c, n, x, mean, var, weight, bias, *rest[:3])
    return _batch_norm(c, n, x, *args, **kwargs)


def _batch_norm(c: _Converter, n, x, running_mean, running_var, weight=None, bias=None, training=False,
                momentum=0.1, eps=1e-5):
    """``F.batch_norm`` (timm's norm-act layers): its running statistics and affine parameters are the module's
    buffers and parameters; the module that holds them gives the node id, ``momentum`` and ``num_batches_tracked``."""
    x = c.cf(x)
    rank = len(c.shape(x))
    op = next((o for o, d in OPS.items() if d.running_stats and d.in_rank == rank), None)
    if op is None:
        raise c.fail(f"batch norm of a per-sample shape {list(c.shape(x))} is not supported ([C, H, W] or [F])")
    mean, var = _param(c, running_mean, "running_mean"), _param(c, running_var, "running_var")
    w, b = _param(c, weight, "weight"), _param(c, bias, "bias")
    if mean is None or var is None or training:
        raise c.fail("a batch norm that normalises with the batch's statistics in eval mode (no running "
                     "statistics, or training=True) is not supported")
    if w is None and b is not None:
        raise c.fail("a batch norm with a bias but no weight is not supported")
    owner = _owner(running_mean)
    module = c.originals.get(owner) if owner is not None else None
    tracked = getattr(module, "num_batches_tracked", None)
    state = {"running_mean": mean, "running_var": var,
             "num_batches_tracked": tracked if isinstance(tracked, torch.Tensor) else torch.tensor(0)}
    if w is not None:
        state.update(weight=w, bias=b if b is not None else torch.zeros_like(w))
    mom = getattr(module, "momentum", momentum) if isinstance(module, nn.modules.batchnorm._BatchNorm) else momentum
    return Val(c.emit(owner, op, [x.node], state, eps=float(eps), momentum=mom, affine=w is not None,
                      track_running_stats=True))


def f_cast(c: _Converter, n, x, *args, **kwargs):
    """``x.float()``, ``x.to(dtype)``, ``x.type_as(y)``, ... that leave the traced tensor's dtype as it was."""
    x = c.tensor(x, tokens=True)
    before = c.values[n.args[0].name].dtype
    after = c.values[n.name].dtype
    if before != after:
        raise c.fail(f"a cast from {before} to {after} has no graph op (only casts that change nothing)")
    return x


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _constant_scale(c: _Converter, n, x: Val, factor: float) -> Val:
    """``x * factor`` for a number: ``x`` itself when it is 1, else a ``scale`` node whose weights all hold
    ``factor`` (exact in eval; the graph can then learn them)."""
    if factor == 1:
        return x
    if x.layout not in (CF, CL):
        raise c.fail(f"scaling a {_layout_words(x)} view is not supported")
    weight = torch.full((c.channels(x),), float(factor))
    return Val(c.emit(None, "scale", [x.node], {"weight": weight}, init=float(factor)), x.layout)


def f_add(c, n, a, b, *rest, alpha=1, out=None):
    for x, other in ((a, b), (b, a)):
        if isinstance(x, Val) and _number(other) and other == 0:
            return x   # x + 0
        if isinstance(x, Val) and isinstance(other, Param) and x.layout in (CF, TND) and len(c.shape(x)) == 2 \
                and alpha == 1:
            return _position(c, x, other)
    return _binary(c, n, "add", a, b, alpha)


def _position(c: _Converter, x: Val, table: Param) -> Val:
    """A sequence plus a learned ``[T, D]`` table (``[1, T, D]``; ``[T, 1, D]`` time-first; a slice of a longer
    one, or an ``nn.Embedding`` of ``arange(T)``, is a constant of that shape): a ``position_embedding``."""
    t, d = c.shape(x)
    want = (t, d) if x.layout == CF else (t, 1, d)
    shape = tuple(table.tensor.shape)
    lead = shape[:len(shape) - len(want)]
    if shape[len(lead):] != want or any(s != 1 for s in lead) or (x.layout == TND and len(shape) < 3):
        words = "[T, D] or [1, T, D]" if x.layout == CF else "[T, 1, D]"
        raise c.fail(f"adding the parameter '{table.name}' of shape {list(shape)} to a {_layout_words(x)} "
                     f"sequence of {t} tokens of {d} features is not a position table ({words})")
    return Val(c.emit(table.name, "position_embedding", [x.node], {"weight": table.tensor.reshape(t, d)}), x.layout)


def f_mul(c, n, a, b, *rest, out=None):
    for x, other in ((a, b), (b, a)):
        if isinstance(x, HAND) and _number(other):
            return _hand_scale(c, x, float(other))
    vals = [v for v in (a, b) if isinstance(v, Val)]
    params = [v for v in (a, b) if isinstance(v, Param)]
    if len(vals) == 1 and len(params) == 1:
        return _scale(c, n, vals[0], params[0])
    numbers = [v for v in (a, b) if _number(v)]
    if len(vals) == 1 and len(numbers) == 1:
        return _constant_scale(c, n, vals[0], numbers[0])
    return _binary(c, n, "mul", a, b)


def f_div(c, n, a, b, *rest, rounding_mode=None, out=None):
    """``x / number`` (a constant scale); ``x / tensor`` has no graph op."""
    if isinstance(a, HAND) and _number(b) and b != 0:
        return _hand_scale(c, a, 1.0 / b)
    if isinstance(a, Val) and _number(b) and b != 0 and rounding_mode is None:
        return _constant_scale(c, n, a, 1.0 / b)
    raise c.fail("only a division by a non-zero number is supported")


def f_cat(c: _Converter, n, tensors, dim=0, *, out=None):
    if len(tensors) >= 2 and all(isinstance(t, Param) for t in tensors[:-1]) and isinstance(tensors[-1], Val):
        return _class_token(c, tensors[-1], tensors[:-1], dim)
    vals = [c.tensor(t) for t in tensors]
    layouts = {(v.layout, v.groups) for v in vals}
    if len(layouts) != 1 or vals[0].layout not in (CF, CL):
        raise c.fail("concatenation is supported for tensors of one layout, channels-first or channels-last")
    if dim not in c.channel_axis(vals[0]):
        raise c.fail(f"concatenation along axis {dim} is not supported (only along the channels)")
    return Val(c.emit(None, "concat", [v.node for v in vals]), vals[0].layout)


def _class_token(c: _Converter, x: Val, tokens: Sequence[Param], dim) -> Val:
    """``torch.cat([token.expand(n, -1, -1), ..., x], dim=1)``: learned ``[1, k, D]`` tokens (expanded over the
    batch, constants of shape ``[N, k, D]``: a class token, DeiT's distillation token, register tokens) put before
    the tokens of a sequence: one ``class_token`` holding them all, in order."""
    x = c.seq(x, True, "the class token's concatenation")
    d = c.shape(x)[1]
    for token in tokens:
        t = token.tensor
        if dim % 3 != 1 or t.dim() != 3 or t.shape[2] != d or not bool((t == t[:1]).all()):
            raise c.fail(f"concatenating the parameter '{token.name}' of shape {list(t.shape)} before a sequence "
                         f"of {d} features along axis {dim} is not a class token (a [1, k, {d}] parameter expanded "
                         f"over the batch, along axis 1)")
    table = torch.cat([t.tensor[0] for t in tokens])
    return Val(c.emit(tokens[0].name, "class_token", [x.node], {"weight": table}, tokens=int(table.shape[0])))


def f_flatten(c, n, x, start_dim=0, end_dim=-1):
    return _flatten(c, n, x, start_dim, end_dim)


def f_unary(op: str, **fields_of: Callable[[tuple, dict], Any]):
    def handler(c: _Converter, n, x, *args, **kwargs):
        x = c.tensor(x)
        fields = {k: f(args, kwargs) for k, f in fields_of.items()}
        return Val(c.emit(None, op, [x.node], **fields), x.layout, x.groups)
    return handler


def f_interpolate(c, n, x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                  recompute_scale_factor=None, antialias=False):
    if antialias:
        raise c.fail("antialias=True is not supported")
    return _upsample(c, x, size, scale_factor, mode, align_corners, recompute_scale_factor)


def f_gelu(c, n, x, approximate="none"):
    x = c.tensor(x)
    return Val(c.emit(None, "gelu", [x.node], approximate=approximate), x.layout)


def f_dropout(c: _Converter, n, x, p=0.5, training=False, inplace=False):
    if training:
        raise c.fail("F.dropout with training=True is not a layer (use nn.Dropout)")
    if isinstance(x, Attended) and x.stage == "probs":
        return replace(x, dropout=float(p))
    x = c.tensor(x)
    return Val(c.emit(None, "dropout", [x.node], p=float(p)), x.layout)


def f_adaptive(c, n, x, output_size):
    return _adaptive(c, n, x, output_size)


def f_maxpool(c, n, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    if return_indices:
        raise c.fail("return_indices=True is not supported")
    return _maxpool(c, n, x, kernel_size, stride, padding, dilation, ceil_mode)


def f_avgpool(c, n, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
              divisor_override=None):
    return _avgpool(c, n, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def f_mean(c: _Converter, n, x, dim=None, keepdim=False, *, dtype=None, out=None):
    if isinstance(x, Tail) and {d % 3 for d in _ints(dim if dim is not None else ())} == {1} and not keepdim \
            and dtype is None:
        return Val(c.emit(None, "token_pool", [x.source.node], mode="mean", skip=x.skip))
    x = c.tensor(x)
    if x.layout in (CF, TND) and len(c.shape(x)) == 2:
        dims = {d % 3 for d in _ints(dim)} if dim is not None else set()
        if dims != ({1} if x.layout == CF else {0}) or keepdim or dtype is not None:
            raise c.fail(f"a mean over axes {dim} of a {_layout_words(x)} sequence is not supported (only over "
                         f"the tokens, without keepdim)")
        return Val(c.emit(None, "token_pool", [x.node], mode="mean"))
    x = c.cf(x, 3)
    dims = {d % 4 for d in _ints(dim)} if dim is not None else set()
    if dims != {2, 3} or dtype is not None:
        raise c.fail(f"a mean over axes {dim} is not supported (only over the spatial axes 2 and 3)")
    if keepdim:
        return Val(c.emit(None, "adaptive_avgpool2d", [x.node], output_size=1))
    return Val(c.emit(None, "global_avg_pool", [x.node]))


def f_layer_norm(c: _Converter, n, x, normalized_shape, weight=None, bias=None, eps=1e-5, *rest):
    """``F.layer_norm``; ATen's ``layer_norm`` has a trailing ``cudnn_enable``."""
    for p in (weight, bias):
        if p is not None and not isinstance(p, Param):
            raise c.fail("a layer norm whose weight or bias is computed is not supported")
    hint = weight.name.rpartition(".")[0] if isinstance(weight, Param) and "." in weight.name else None
    return _layernorm(c, hint, x, normalized_shape, eps, weight.tensor if weight is not None else None,
                      bias.tensor if bias is not None else None)


def f_stochastic_depth(c: _Converter, n, x, p, mode, training=True):
    x = c.tensor(x)
    return Val(c.emit(None, "stochastic_depth", [x.node], p=float(p), mode=mode), x.layout)


def f_token_pool(c: _Converter, n, x, mode="mean", skip=0):
    return Val(c.emit(None, "token_pool", [c.seq(x, True, "token_pool").node], mode=mode, skip=int(skip)))


def f_to_tokens(c: _Converter, n, x):
    return Val(c.emit(None, "to_tokens", [c.cf(x, 3).node]))


def f_permute(c: _Converter, n, x, *dims):
    dims = _ints(dims[0]) if len(dims) == 1 and not isinstance(dims[0], int) else _ints(dims)
    if isinstance(x, HAND):
        return _relabel(c, x, [d % len(x.axes) for d in dims])
    x = c.tensor(x)
    if x.layout == FLAT and tuple(d % 3 for d in dims) == (0, 2, 1):
        return _tokens(c, x)
    if x.layout in (CF, TND) and len(c.shape(x)) == 2 and tuple(d % 3 for d in dims) == (1, 0, 2):
        return Val(x.node, TND if x.layout == CF else CF)
    dims = tuple(d % 4 for d in dims) if len(dims) == 4 else dims
    if x.layout == CF and len(c.shape(x)) == 3 and dims == (0, 2, 3, 1):
        return Val(x.node, CL)
    if x.layout == CL and dims == (0, 3, 1, 2):
        return Val(x.node, CF)
    raise c.fail(f"permute{list(dims)} of a {_layout_words(x)} tensor of per-sample shape {list(c.expected(x))} is "
                 f"not supported (only NCHW <-> NHWC, as around ConvNeXt's channels-last layers)")


def _tokens(c: _Converter, x: Val) -> Val:
    """``[N, C, H*W]`` transposed to ``[N, H*W, C]``: the image's positions as tokens."""
    return Val(c.emit(None, "to_tokens", [x.node]))


def f_transpose(c: _Converter, n, x, dim0, dim1):
    if isinstance(x, HAND):
        order = list(range(len(x.axes)))
        a, b = dim0 % len(order), dim1 % len(order)
        order[a], order[b] = b, a
        return _relabel(c, x, order)
    x = c.tensor(x)
    if x.layout == FLAT and {dim0 % 3, dim1 % 3} == {1, 2}:
        return _tokens(c, x)
    if x.layout in (CF, TND) and len(c.shape(x)) == 2 and {dim0 % 3, dim1 % 3} == {0, 1}:
        return Val(x.node, TND if x.layout == CF else CF)   # [N, T, D] <-> [T, N, D]
    pair = {dim0 % 5, dim1 % 5} if x.layout in (GROUPED, GROUPED_T) else None
    if pair == {1, 2}:
        return Val(x.node, GROUPED_T if x.layout == GROUPED else GROUPED, x.groups)
    raise c.fail(f"transpose({dim0}, {dim1}) of a {_layout_words(x)} tensor is not supported (only the group "
                 f"transpose of a channel shuffle, and a sequence's batch and time axes)")


def f_contiguous(c: _Converter, n, x, *args, **kwargs):
    return x if isinstance(x, HAND) else c.tensor(x)


def f_reshape(c: _Converter, n, x, *shape):
    out = tuple(c.values[n.name].shape)
    if isinstance(x, HAND):
        return _hand_reshape(c, x, out)
    x = c.tensor(x)
    if x.layout == CF and len(c.shape(x)) == 2 and len(out) in (4, 5):   # a projection split into heads
        return _hand_reshape(c, _projection(c, x, (0, c.channels(x))), out)
    return _reshape(c, n, x, out)


def _reshape(c: _Converter, n, x: Val, out: tuple[int, ...]) -> Val:
    if x.layout in (TND, TOKENS):
        if tuple(out) == tuple(c.values[n.args[0].name].shape):
            return x
        raise c.fail(f"a reshape of a {_layout_words(x)} tensor to {list(out)} has no graph op")
    batch = c.values[_first_placeholder(c)].shape[0]
    if out[0] != batch:
        raise c.fail(f"a reshape to {list(out)} mixes the batch axis into the others")
    out = tuple(out[1:])
    shape = c.shape(x)
    if out == c.expected(x):
        return x
    if x.layout == CF and len(shape) == 3 and len(out) == 4 and out[0] * out[1] == shape[0] and \
            out[2:] == shape[1:]:
        return Val(x.node, GROUPED, out[0])
    if x.layout == GROUPED and out == shape:
        return Val(x.node, CF)
    if x.layout == GROUPED_T and out == shape:
        return Val(c.emit(None, "channel_shuffle", [x.node], groups=x.groups))
    if x.layout == CF and len(shape) == 3 and out == (math.prod(shape),):
        return Val(c.emit(None, "flatten", [x.node]))
    if x.layout == CF and len(shape) == 3 and out == (shape[0], shape[1] * shape[2]):
        return Val(x.node, FLAT)   # a ViT's patches, [N, C, H*W], before they are made tokens
    raise c.fail(f"a reshape of a {_layout_words(x)} tensor of per-sample shape {list(c.expected(x))} to "
                 f"{list(out)} has no graph op (supported: flatten to [F], and the grouped views of a channel "
                 f"shuffle)")


def _first_placeholder(c: _Converter) -> str:
    return next(nd.name for nd in c.gm.graph.nodes if nd.op == "placeholder")


def _split(c: _Converter, n, x, dim):
    x = c.tensor(x)
    if dim not in c.channel_axis(x):
        raise c.fail(f"splitting along axis {dim} is not supported (only along the channels)")
    axis = c.channel_axis(x)[0] - 1
    bounds, start = [], 0
    for piece in c.values[n.name]:
        size = piece.shape[1:][axis]
        bounds.append((start, start + size))
        start += size
    return Pieces(x, tuple(bounds))


def f_chunk(c, n, x, chunks, dim=0):
    return _split(c, n, x, dim)


def f_split(c, n, x, split_size_or_sections, dim=0):
    return _split(c, n, x, dim)


def f_getitem(c: _Converter, n, obj, index):
    if isinstance(index, tuple):  # x[:, a:b, :, :] and x[:, a:b, ...] are x[:, a:b]
        trimmed = list(index)
        while len(trimmed) > 2 and trimmed[-1] in (slice(None), Ellipsis):
            trimmed.pop()
        index = tuple(trimmed)
    if isinstance(obj, (tuple, list)):   # a module's tuple output (nn.LSTM's (out, state), attention's)
        return obj[index]
    if isinstance(obj, Unconverted):
        return Unconverted(f"a part of {obj.what}")
    if isinstance(obj, Val) and obj.layout in (CF, TND) and len(c.shape(obj)) == 2:
        first = (slice(None), 0) if obj.layout == CF else 0
        tokens = index[1] if obj.layout == CF and isinstance(index, tuple) and len(index) == 2 and \
            index[0] == slice(None) else index
        t = c.shape(obj)[0]
        if isinstance(tokens, slice) and tokens.indices(t) == (0, t, 1):
            return obj   # x[:, 0:]: every token (timm's x[:, num_prefix_tokens:] without prefix tokens)
        if obj.layout == CF and isinstance(tokens, slice) and tokens.indices(t)[1:] == (t, 1) and \
                tokens.indices(t)[0] < t:
            return Tail(obj, tokens.indices(t)[0])   # x[:, k:]: the tokens after k prefix tokens
        if obj.layout == CF and isinstance(tokens, int) and 0 < tokens < t:   # x[:, 1]: DeiT's distillation token
            return Val(c.emit(None, "token_pool", [obj.node], mode="first", skip=tokens))
        if index == first:
            return Val(c.emit(None, "token_pool", [obj.node], mode="first"))
        raise c.fail(f"indexing a {_layout_words(obj)} sequence with {index!r} is not supported (only its first "
                     f"token, {'x[:, 0]' if obj.layout == CF else 'x[0]'})")
    if isinstance(obj, Projected) and isinstance(index, int):   # qkv[0]: the queries of a fused projection
        return _hand_part(c, obj, index, 0)
    if isinstance(obj, Pieces):
        start, stop = obj.bounds[index]
        src = obj.source
        if (start, stop) == (0, c.channels(src)):
            return src
        if src.layout == CF and len(c.shape(src)) == 2:   # nanoGPT's c_attn(x).split(n_embd, dim=2)
            return _projection(c, src, (start, stop))
        return Val(c.emit(None, "slice", [src.node], start=start, stop=stop), src.layout)
    if isinstance(obj, Val) and obj.layout == CF and isinstance(index, tuple) and len(index) == 2 and \
            index[0] == slice(None) and isinstance(index[1], slice) and index[1].step in (None, 1):
        start, stop, _ = index[1].indices(c.channels(obj))
        if stop <= start:
            raise c.fail(f"the channel slice {index[1]} is empty")
        if (start, stop) == (0, c.channels(obj)):
            return obj
        return Val(c.emit(None, "slice", [obj.node], start=start, stop=stop))
    raise c.fail(f"indexing with {index!r} is not supported (only x[:, start:stop] along the channels, and the "
                 f"pieces of chunk/split)")


def f_aten_slice(c: _Converter, n, x, dim=0, start=None, end=None, step=1):
    """``aten.slice.Tensor``: ``x[:, start:end]`` along one axis in a torch.export graph."""
    index = [slice(None)] * (dim % (len(c.expected(c.tensor(x))) + 1)) + [slice(start, end, step)]
    return f_getitem(c, n, x, tuple(index) if len(index) > 1 else index[0])


def f_pad(c: _Converter, n, x, pad, *args, **kwargs):
    if n.target is torch.ops.aten.constant_pad_nd.default:  # (x, pad, value)
        return _pad(c, n, x, pad, "constant", *args, **kwargs)
    return _pad(c, n, x, pad, *args, **kwargs)


# ---- hand-written attention ---------------------------------------------------------------------------------------
# timm's Attention and nanoGPT's CausalSelfAttention: a linear projection of a sequence (fused qkv, or split into
# q, k, v) reshaped into heads, scaled_dot_product_attention (or softmax(q @ k^T * scale) @ v), the heads merged
# back, an output projection. Each step's value is a Projected or an Attended; the output projection makes them one
# attention node, and the q/k/v linears, no longer read, are dropped with the graph's dead nodes.

def _projection(c: _Converter, x: Val, rows: tuple[int, int]) -> Projected:
    """Rows of the linear node ``x.node`` (the projection of a batch-first sequence) as attention's input."""
    data = c.nodes.get(x.node)
    if data is None or KIND_BY_OP[data["op"]] is not Linear:
        raise c.fail(f"splitting the features of '{x.node}' into heads (or pieces) is only supported for a linear "
                     f"projection of a sequence on its way into attention")
    return Projected(x.node, rows)


def _hand_reshape(c: _Converter, v, out: tuple[int, ...]):
    """``[N, T, F] -> [N, T, H, E]`` or ``[N, T, P, H, E]`` (F = P*H*E: the parts, then the heads, of a fused
    projection), and merging the heads back, ``[N, T, H, E] -> [N, T, H*E]``."""
    shape = c.hand_shape(v)
    if isinstance(v, Projected) and v.axes == SEQ_AXES and out[:2] == shape[:2] and len(out) in (4, 5) and \
            math.prod(out[2:]) == shape[2]:
        heads, head_dim = out[-2:]
        return replace(v, axes=("N", "T", "H", "E") if len(out) == 4 else ("N", "T", "P", "H", "E"), heads=heads,
                       head_dim=head_dim)
    if isinstance(v, Attended) and v.stage == "out" and v.axes == ("N", "T", "H", "E") and \
            out == (*shape[:2], shape[2] * shape[3]):
        return replace(v, stage="merged", axes=SEQ_AXES)
    raise c.fail(f"hand-written attention: a reshape of {_hand_words(v)} (shape {list(shape)}) to {list(out)} is "
                 f"not supported (only a projection into heads [N, T, H, E] or [N, T, 3, H, E], and the heads "
                 f"[N, T, H, E] merged back)")


def _relabel(c: _Converter, v, order) -> Any:
    if sorted(order) != list(range(len(v.axes))):
        raise c.fail(f"permute{list(order)} of {_hand_words(v)} is not a permutation of its axes")
    return replace(v, axes=tuple(v.axes[i] for i in order))


def _hand_part(c: _Converter, p: Projected, index: int, axis: int) -> Projected:
    """Part ``index`` (q, k or v) of a fused projection along ``axis`` (its ``P`` axis)."""
    if axis >= len(p.axes) or p.axes[axis] != "P" or not 0 <= index < c.hand_shape(p)[axis]:
        raise c.fail(f"taking part {index} along axis {axis} of {_hand_words(p)} is not supported (only along its "
                     f"q/k/v axis P)")
    width = p.heads * p.head_dim
    start = p.rows[0] + index * width
    return replace(p, rows=(start, start + width), axes=p.axes[:axis] + p.axes[axis + 1:])


def _hand_scale(c: _Converter, v, factor: float):
    if isinstance(v, Projected) and v.heads:
        return replace(v, scale=v.scale * factor)
    if isinstance(v, Attended) and v.stage == "scores":
        return replace(v, scale=v.scale * factor)
    raise c.fail(f"scaling {_hand_words(v)} by {factor!r} is not supported (only the heads or the scores)")


def _attention_mask(c: _Converter, mask, t: int, true_attends: bool) -> bool:
    """Whether a constant mask is the causal one: ``True`` where a query may attend (on and below the diagonal)
    for ``scaled_dot_product_attention``, ``True`` where it is masked for ``masked_fill``; a float mask has
    ``-inf`` above the diagonal and 0 elsewhere. Leading axes of size 1 are broadcast."""
    if not isinstance(mask, Param):
        raise c.fail("an attention mask computed from the input is not supported (only a constant causal mask)")
    m = mask.tensor
    while m.dim() > 2 and m.shape[0] == 1:
        m = m[0]
    if tuple(m.shape) != (t, t):
        raise c.fail(f"an attention mask of shape {list(mask.tensor.shape)} is not supported (only the causal "
                     f"[T, T] one, T = {t})")
    upper = torch.ones(t, t, dtype=torch.bool, device=m.device).triu(1)
    if m.dtype == torch.bool:
        ok = torch.equal(m, ~upper if true_attends else upper)
    else:
        ok = bool((m[upper] == float("-inf")).all() and (m[~upper] == 0).all())
    if not ok:
        raise c.fail(f"the attention mask '{mask.name}' is not the causal mask; other masks are not supported")
    return True


def _heads_of(c: _Converter, p, what: str, axes=("N", "H", "T", "E")) -> Projected:
    if not isinstance(p, Projected) or p.axes != axes:
        words = _hand_words(p) if isinstance(p, HAND) else "a tensor that is not a projection split into heads"
        raise c.fail(f"hand-written attention: the {what} must be heads [{', '.join(axes)}] of a linear "
                     f"projection; got {words}")
    return p


def _sdpa(c: _Converter, n, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False):
    q, k, v = (_heads_of(c, p, what) for p, what in ((q, "queries"), (k, "keys"), (v, "values")))
    if v.scale != 1:
        raise c.fail("scaling the values is not supported")
    if attn_mask is not None and is_causal:
        raise c.fail("attn_mask together with is_causal=True is not supported")
    causal = bool(is_causal) or (attn_mask is not None and _attention_mask(c, attn_mask, c.hand_shape(q)[2], True))
    factor = (1.0 / math.sqrt(q.head_dim) if scale is None else float(scale)) * q.scale * k.scale
    return Attended("out", q, k, v, ("N", "H", "T", "E"), factor, causal, float(dropout_p))


def _matmul(c: _Converter, n, a, b, *rest, out=None):
    """``q @ k.transpose(-2, -1)`` (the scores) and ``probs @ v``."""
    if isinstance(a, Projected):
        q = _heads_of(c, a, "left side of q @ k^T")
        k = _heads_of(c, b, "right side of q @ k^T", ("N", "H", "E", "T"))
        return Attended("scores", q, replace(k, axes=("N", "H", "T", "E")), scale=q.scale * k.scale)
    if isinstance(a, Attended) and a.stage == "probs" and a.axes == ("N", "H", "T", "S"):
        return replace(a, stage="out", v=_heads_of(c, b, "values"), axes=("N", "H", "T", "E"))
    words = _hand_words(a) if isinstance(a, HAND) else "a tensor"
    raise c.fail(f"a matrix product of {words} is not supported (only q @ k.transpose(-2, -1) and softmax @ v of "
                 f"hand-written attention)")


def _softmax(c: _Converter, n, x, dim=None, *rest, dtype=None, _stacklevel=3):
    if not (isinstance(x, Attended) and x.stage == "scores" and dim is not None and
            dim % len(x.axes) == x.axes.index("S")) or dtype is not None or any(r is not None for r in rest[1:]):
        raise c.fail("only a softmax over the keys of hand-written attention's scores is supported")
    return replace(x, stage="probs")


def _masked_fill(c: _Converter, n, x, mask, value):
    if not (isinstance(x, Attended) and x.stage == "scores" and value == float("-inf")):
        raise c.fail("only masked_fill(mask, -inf) of hand-written attention's scores is supported (a causal mask)")
    if x.causal:
        raise c.fail("the scores are masked twice")
    return replace(x, causal=_attention_mask(c, mask, c.hand_shape(x)[2], False))


def _unbind(c: _Converter, n, x, dim=0):
    if not isinstance(x, Projected):
        raise c.fail("unbind is only supported on the q/k/v axis of a fused attention projection")
    dim = dim % len(x.axes)
    if x.axes[dim] != "P":
        raise c.fail(f"unbind({dim}) of {_hand_words(x)} is not supported (only along its q/k/v axis P)")
    return tuple(_hand_part(c, x, i, dim) for i in range(c.hand_shape(x)[dim]))


_ATTENTION_STEPS: dict[str, Callable] = {"scaled_dot_product_attention": _sdpa, "matmul": _matmul,
                                         "__matmul__": _matmul, "softmax": _softmax, "masked_fill": _masked_fill,
                                         "unbind": _unbind}


def f_attention(c: _Converter, n, *args, **kwargs):
    """The functions and methods of hand-written attention (the attention op's ``imports``), by name."""
    name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
    return _ATTENTION_STEPS[name](c, n, *args, **kwargs)


def _hand_attention(c: _Converter, hint: str, att: Attended, weight: torch.Tensor, bias) -> Val:
    """The output projection of merged heads: one ``attention`` node (its q/k/v rows cut from their linears)."""
    if att.stage != "merged":
        raise c.fail(f"the output projection reads {_hand_words(att)}; it must read the heads merged back "
                     f"(out.transpose(1, 2).reshape(B, T, C))")
    projs = {"q": att.q, "k": att.k, "v": att.v}
    sources = {c.nodes[p.proj]["in"][0] for p in projs.values()}
    if len(sources) != 1:
        raise c.fail("the queries, keys and values project different sequences: only self-attention is supported")
    x = sources.pop()
    t, d = c.shapes[x]
    heads, head_dim = att.q.heads, att.q.head_dim
    if any((p.heads, p.head_dim) != (heads, head_dim) for p in projs.values()):
        raise c.fail("queries, keys and values with different numbers of heads or head sizes are not supported")
    if abs(att.scale * math.sqrt(head_dim) - 1) > 1e-9:
        raise c.fail(f"the scores are scaled by {att.scale!r}, not 1/sqrt(head_dim) = {head_dim ** -0.5!r}; the "
                     f"attention op has no other scale")
    if tuple(weight.shape) != (d, heads * head_dim):
        raise c.fail(f"the output projection's weight is {list(weight.shape)}; the attention op maps back to the "
                     f"{d} input features ([{d}, {heads * head_dim}])")
    state, biases = {}, {}
    for name, p in projs.items():
        state[f"{name}_proj.weight"] = c.weights[f"{p.proj}.weight"][p.rows[0]:p.rows[1]]
        b = c.weights.get(f"{p.proj}.bias")
        biases[name] = None if b is None else b[p.rows[0]:p.rows[1]]
    state["o_proj.weight"] = weight
    if len({b is None for b in biases.values()}) != 1:
        raise c.fail(f"only {', '.join(k for k, b in biases.items() if b is not None)} of the q/k/v projections "
                     f"have biases; the attention op gives all three or none")
    with_bias = {f"{k}_proj.bias": b for k, b in biases.items() if b is not None}
    if bias is not None:
        with_bias["o_proj.bias"] = bias
    qkv = biases["q"] is not None
    return Val(c.emit(hint, "attention", [x], {**state, **with_bias}, num_heads=heads,
                      head_dim=None if heads * head_dim == d else head_dim, causal=att.causal, bias=bias is not None,
                      qkv_bias=None if qkv == (bias is not None) else qkv, dropout=att.dropout))


#: function (and method) handlers of the ops whose import is not :func:`f_unary`'s (keyed by op; the functions
#: and methods that map to each op are the registry's ``imports.functions`` and ``imports.methods``)
FUNCTION_HANDLERS: dict[str, Callable] = {
    "add": f_add, "mul": f_mul, "concat": f_cat, "flatten": f_flatten, "gelu": f_gelu, "dropout": f_dropout,
    "adaptive_avgpool2d": f_adaptive, "maxpool2d": f_maxpool, "avgpool2d": f_avgpool, "global_avg_pool": f_mean,
    "layernorm": f_layer_norm, "stochastic_depth": f_stochastic_depth, "upsample": f_interpolate,
    "conv2d": f_conv2d, "linear": f_linear,
    "batchnorm2d": f_batch_norm, "scale": f_div, "pad": f_pad, "token_pool": f_token_pool,
    "to_tokens": f_to_tokens, "attention": f_attention,
}

#: functions that change how a value is viewed (layout, pieces) and make no node of their own; the ATen ones come
#: from torch.export graphs
_A = torch.ops.aten
VIEW_FUNCTIONS: dict[Any, Callable] = {
    torch.permute: f_permute, torch.transpose: f_transpose, torch.reshape: f_reshape, torch.chunk: f_chunk,
    torch.split: f_split, operator.getitem: f_getitem,
    _A.permute.default: f_permute, _A.transpose.int: f_transpose, _A.view.default: f_reshape,
    _A.reshape.default: f_reshape, _A.chunk.default: f_chunk, _A.split.Tensor: f_split,
    _A.split_with_sizes.default: f_split, _A.slice.Tensor: f_aten_slice, _A.contiguous.default: f_contiguous,
    _A.clone.default: f_contiguous, _A.alias.default: f_contiguous, _A.detach.default: f_contiguous,
    _A._to_copy.default: f_cast, _A.to.dtype: f_cast, _A.to.dtype_layout: f_cast,
    _A.squeeze.dims: f_reshape, _A.squeeze.dim: f_reshape, _A.unflatten.int: f_reshape,
}


def _functions() -> dict[Any, Callable]:
    from . import functional, split_attention, windows   # all three import this module
    functional.register()   # its handlers, in FUNCTION_HANDLERS, MODULES, METHODS and the view tables (idempotent)
    split_attention.register()   # after functional's: its reshape falls back to functional's
    handlers = {**FUNCTION_HANDLERS, **windows.FUNCTION_HANDLERS}
    table: dict[Any, Callable] = {}
    for op, d in OPS.items():
        for name in d.imports.functions:
            target = try_resolve(name)   # None: an optional package (torchvision) is missing or broken
            if target is not None:
                table[target] = handlers.get(op) or f_unary(op)
    table.update(VIEW_FUNCTIONS)
    return table


_FUNCTIONS: Optional[dict[Any, Callable]] = None


def _function_table() -> dict[Any, Callable]:
    """The function handlers, built on first use (which also registers the lazily imported modules' methods)."""
    global _FUNCTIONS
    if _FUNCTIONS is None:
        _FUNCTIONS = _functions()
    return _FUNCTIONS


def _function_handler(target) -> Optional[Callable]:
    try:
        return _function_table().get(target)
    except TypeError:  # unhashable target
        return None


#: tensor methods that change how a value is viewed and make no node of their own
VIEW_METHODS: dict[str, Callable] = {
    "permute": f_permute, "transpose": f_transpose, "contiguous": f_contiguous, "view": f_reshape,
    "reshape": f_reshape, "chunk": f_chunk, "split": f_split, "squeeze": f_reshape, "float": f_cast,
    "double": f_cast, "half": f_cast, "long": f_cast, "to": f_cast, "type": f_cast, "type_as": f_cast,
}

METHODS: dict[str, Callable] = {
    **{name: FUNCTION_HANDLERS.get(op) or f_unary(op) for op, d in OPS.items() for name in d.imports.methods},
    **VIEW_METHODS,
}

