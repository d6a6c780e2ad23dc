"""Per-op behaviour, in one registry: one :class:`OpDef` per op, written with keyword arguments.

An op's :class:`OpDef` holds every fact the rest of archgraph needs about it: shape inference, parameter and MAC
counts, its channel role (how its output channels relate to its inputs'), the layout of its tensors (which axis of
each parameter or buffer indexes output and input channels), which of them are buffers, what kind of op it is
(weighted, norm, activation, pool, ...), its width field, how to build it in torch and how its inputs are packed,
the rewrite facts the rules rely on, its colour in pictures, its standalone-Python constructor and the torch
modules, functions and methods the importer maps to it. Code outside :mod:`archgraph.ops` asks these facts
(``OPS[node.op].weighted``, :func:`is_weighted`) and never compares an op with a literal name;
``tests/test_registry.py`` checks both.

The registry never imports torch: builders receive the torch namespaces from :mod:`archgraph.fx.builder`, and the
export and import tables name torch things by dotted strings (``"torch.nn.Conv2d"``) resolved on the torch side
(:mod:`archgraph.fx.torchnames`), so validating a YAML file stays fast.

Adding an op
------------
1. One frozen pydantic model in :mod:`archgraph.ops.spec` (``op: Literal["name"] = "name"``), added to
   ``NODE_KINDS``; the op name is written there only.
2. One ``OpDef(kind=S.Model, ...)`` entry in :data:`DEFS` below: its shape function and channel role, and the
   facts that differ from the defaults (a layer: ``layout``, ``params``, ``macs``, ``weighted``, ``width_field``,
   ``resize``, ...; a function op: ``function`` and ``packing``).
3. Its torch builder: ``module=`` (a function of the torch namespaces ``T``, the node and its input shapes; a class
   of its own goes in :mod:`archgraph.fx.layers`) or ``function=`` (``call(lambda T: T.F.name, kwarg=...)``);
   ``python=`` gives the standalone-Python constructor of each module class it builds, and ``imports=`` the torch
   names the importer maps to it (a handler in :mod:`archgraph.interop.importer` when the default, an
   element-wise op whose fields are read by name, does not fit).
``tests/test_registry.py`` then checks the new op has every entry and builds, exports and imports.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..errors import GraphError
from . import spec as S

Shape = tuple[int, ...]

#: channel roles
SOURCE = "source"        # makes a new channel space from its input's (conv, linear)
THROUGH = "through"      # output channel c depends on input channel c only (norms, activations, pools, depthwise)
MERGE = "merge"          # all inputs and the output share one channel space (add, mul)
CONCAT = "concat"        # output channels are the inputs' channels one after another
FLATTEN = "flatten"      # channel c of [C, H, W] becomes features c*H*W .. (c+1)*H*W - 1
GROUPED = "grouped"      # grouped conv, not depthwise: the channels at one position of every group are tied
SHUFFLE = "shuffle"      # a fixed permutation of the channels: output c is input perm(c) (channel_shuffle)
SLICE = "slice"          # output channel c is input channel start + c; the other input channels are dropped
ROLES = (SOURCE, THROUGH, MERGE, CONCAT, FLATTEN, GROUPED, SHUFFLE, SLICE)


def bad(field: Optional[str], message: str):
    raise GraphError(message, field=field)


def pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def need_rank(ins: list[Shape], rank: int, what: str) -> Shape:
    shape = ins[0]
    if len(shape) != rank:
        name = "[C, H, W]" if rank == 3 else "[F]"
        bad("in", f"needs a {name} input ({what}), got shape {list(shape)}")
    return shape


def out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """Output length along one axis, exactly as PyTorch's ``pooling_output_shape`` (floor division rounds toward
    minus infinity; with ``ceil_mode`` a window that would start in the right padding is dropped)."""
    n = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (n - 1) * s >= size + p:
        n -= 1
    return n


def spatial(node, ins, *, dilation=True, pool=False) -> Shape:
    c, h, w = need_rank(ins, 3, node.op)
    k = pair(node.kernel_size)
    stride = node.stride if getattr(node, "stride", 1) is not None else node.kernel_size
    s = pair(stride)
    d = pair(node.dilation) if dilation else (1, 1)
    ceil_mode = getattr(node, "ceil_mode", False)
    if node.padding == "same":
        if s != (1, 1):
            bad("padding", "padding 'same' needs stride 1")
        return (c, h, w)
    p = (0, 0) if node.padding == "valid" else pair(node.padding)
    if pool and (p[0] > k[0] // 2 or p[1] > k[1] // 2):
        bad("padding", f"padding {list(p)} must be at most half the kernel size {list(k)}")
    ho = out_size(h, k[0], s[0], p[0], d[0], ceil_mode)
    wo = out_size(w, k[1], s[1], p[1], d[1], ceil_mode)
    if ho <= 0 or wo <= 0:
        bad("kernel_size", f"kernel {list(k)} does not fit the input's {h}x{w} positions (output would be {ho}x{wo})")
    return (c, ho, wo)


# ---- shapes ---------------------------------------------------------------------------------------------------

def conv_shape(node: S.Conv2d, ins):
    c, _, _ = need_rank(ins, 3, "conv2d")
    if c % node.groups:
        bad("groups", f"groups={node.groups} does not divide the {c} input channels")
    if node.out_channels % node.groups:
        bad("groups", f"groups={node.groups} does not divide out_channels={node.out_channels}")
    _, h, w = spatial(node, ins)
    return (node.out_channels, h, w)


def linear_shape(node: S.Linear, ins):
    need_rank(ins, 1, "linear; flatten or pool first")
    return (node.out_features,)


def same_shape(node, ins):
    return tuple(ins[0])


def rank_shape(rank):
    def shape(node, ins):
        return tuple(need_rank(ins, rank, node.op))
    return shape


def norm_any_shape(node, ins):
    if len(ins[0]) not in (1, 3):
        bad("in", f"needs a [F] or [C, H, W] input, got {list(ins[0])}")
    return tuple(ins[0])


def adaptive_shape(node: S.AdaptiveAvgPool2d, ins):
    c, _, _ = need_rank(ins, 3, node.op)
    return (c, *pair(node.output_size))


def gap_shape(node, ins):
    c, _, _ = need_rank(ins, 3, node.op)
    return (c,)


def flatten_shape(node, ins):
    return (math.prod(ins[0]),)


def add_shape(node, ins):
    first = tuple(ins[0])
    for i, other in enumerate(ins[1:], 1):
        if tuple(other) != first:
            bad("in", f"inputs must have the same shape to be added: '{node.inputs[0]}' is {list(first)} but "
                      f"'{node.inputs[i]}' is {list(other)}")
    return first


def mul_shape(node, ins):
    # Same rank only: with the batch axis in front, [C, H, W] * [C] would line C up with W, not with C.
    first = ins[0]
    for i, other in enumerate(ins[1:], 1):
        if len(other) != len(first):
            bad("in", f"inputs must have the same rank to be multiplied ([C, H, W] * [C, 1, 1] broadcasts): "
                      f"'{node.inputs[0]}' is {list(first)} but '{node.inputs[i]}' is {list(other)}")
    out = []
    for axis in range(len(first)):
        sizes = {s[axis] for s in ins}
        sizes.discard(1)
        if len(sizes) > 1:
            names = ", ".join(f"'{n}' is {list(s)}" for n, s in zip(node.inputs, ins))
            bad("in", f"input shapes do not broadcast on axis {axis}: {names}")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def concat_shape(node, ins):
    first = ins[0]
    for i, other in enumerate(ins[1:], 1):
        if len(other) != len(first) or tuple(other[1:]) != tuple(first[1:]):
            bad("in", f"inputs must agree on every axis but the channels to be concatenated: "
                      f"'{node.inputs[0]}' is {list(first)} but '{node.inputs[i]}' is {list(other)}")
    return (sum(s[0] for s in ins), *first[1:])


def shuffle_shape(node: S.ChannelShuffle, ins):
    c, _, _ = need_rank(ins, 3, node.op)
    if c % node.groups:
        bad("groups", f"groups={node.groups} does not divide the {c} input channels")
    return tuple(ins[0])


def pad_shape(node: S.Pad, ins):
    c, h, w = need_rank(ins, 3, node.op)
    left, right, top, bottom = node.padding
    return (c, h + top + bottom, w + left + right)


def slice_shape(node: S.Slice, ins):
    if len(ins[0]) not in (1, 3):
        bad("in", f"needs a [F] or [C, H, W] input, got {list(ins[0])}")
    c = ins[0][0]
    if node.stop > c:
        bad("stop", f"stop={node.stop} is past the {c} input channels")
    return (node.stop - node.start, *ins[0][1:])


def shuffle_permutation(channels: int, groups: int) -> list[int]:
    """``perm`` with output channel ``c`` of a ``channel_shuffle`` equal to input channel ``perm[c]``."""
    per = channels // groups
    return [g * per + i for i in range(per) for g in range(groups)]


# ---- sizes ----------------------------------------------------------------------------------------------------

def no_count(node, ins, out) -> int:
    return 0


def conv_params(node: S.Conv2d, ins, out):
    kh, kw = pair(node.kernel_size)
    return node.out_channels * (ins[0][0] // node.groups) * kh * kw + (node.out_channels if node.bias else 0)


def conv_macs(node: S.Conv2d, ins, out):
    kh, kw = pair(node.kernel_size)
    return node.out_channels * (ins[0][0] // node.groups) * kh * kw * out[1] * out[2]


def linear_params(node: S.Linear, ins, out):
    return ins[0][0] * node.out_features + (node.out_features if node.bias else 0)


def linear_macs(node: S.Linear, ins, out):
    return ins[0][0] * node.out_features


def bn_params(node, ins, out):
    return 2 * ins[0][0] if node.affine else 0


def ln_params(node: S.LayerNorm, ins, out):
    if not node.elementwise_affine:
        return 0
    return ins[0][0] * (2 if node.bias else 1)


def scale_params(node, ins, out):
    return ins[0][0]


# ---- channel roles and tensor layouts -------------------------------------------------------------------------

def conv_role(node: S.Conv2d, ins):
    if node.groups == 1:
        return SOURCE
    if node.groups == ins[0][0] == node.out_channels:
        return THROUGH
    return GROUPED


def fixed(role):
    return lambda node, ins: role


def flatten_role(node, ins):
    return FLATTEN if len(ins[0]) >= 2 else THROUGH


def conv_layout(node: S.Conv2d, ins):
    weight_in = 1 if node.groups == 1 else None
    layout = {"weight": (0, weight_in)}
    if node.bias:
        layout["bias"] = (0, None)
    return layout


def linear_layout(node: S.Linear, ins):
    layout = {"weight": (0, 1)}
    if node.bias:
        layout["bias"] = (0, None)
    return layout


def bn_layout(node, ins):
    layout = {}
    if node.affine:
        layout.update(weight=(0, None), bias=(0, None))
    if node.track_running_stats:
        layout.update(running_mean=(0, None), running_var=(0, None), num_batches_tracked=(None, None))
    return layout


def ln_layout(node: S.LayerNorm, ins):
    layout = {}
    if node.elementwise_affine:
        layout["weight"] = (0, None)
        if node.bias:
            layout["bias"] = (0, None)
    return layout


def channel_vector_layout(node, ins):
    return {"weight": (0, None)}


def no_layout(node, ins):
    return {}


# ---- rewrite facts: resizing, sign and identity (used by archgraph.channels and archgraph.rules) ----------------

def no_resize(node, width: int) -> dict:
    return {}


def conv_resize(node: S.Conv2d, width: int) -> dict:
    """A depthwise conv follows its input's channels (its groups too); any other conv sets its own width."""
    if node.groups > 1 and node.groups == node.out_channels:
        return {"out_channels": width, "groups": width}
    return {"out_channels": width}


def linear_resize(node: S.Linear, width: int) -> dict:
    return {"out_features": width}


def never(node, flags) -> bool:
    return False


def always(node, flags) -> bool:
    return True


def every(node, flags) -> bool:
    return all(flags)


def single(node, flags) -> bool:
    return len(flags) == 1


def no_mixing(node, ins) -> bool:
    return False


def ln_mixing(node, ins) -> bool:
    return True


# ---- torch builders (T is a namespace with torch, nn, F and archgraph.modules as ``extra``) ---------------------

def conv_module(T, node: S.Conv2d, ins):
    padding = node.padding if isinstance(node.padding, (int, str)) else tuple(node.padding)
    return T.nn.Conv2d(ins[0][0], node.out_channels, pair(node.kernel_size), stride=pair(node.stride),
                       padding=padding, dilation=pair(node.dilation), groups=node.groups, bias=node.bias)


def linear_module(T, node: S.Linear, ins):
    return T.nn.Linear(ins[0][0], node.out_features, bias=node.bias)


def bn2d_module(T, node, ins):
    return T.nn.BatchNorm2d(ins[0][0], eps=node.eps, momentum=node.momentum, affine=node.affine,
                            track_running_stats=node.track_running_stats)


def bn1d_module(T, node, ins):
    return T.nn.BatchNorm1d(ins[0][0], eps=node.eps, momentum=node.momentum, affine=node.affine,
                            track_running_stats=node.track_running_stats)


def ln_module(T, node: S.LayerNorm, ins):
    cls = T.nn.LayerNorm if len(ins[0]) == 1 else T.extra.LayerNorm2d
    return cls(ins[0][0], eps=node.eps, elementwise_affine=node.elementwise_affine, bias=node.bias)


def dropout_module(T, node: S.Dropout, ins):
    return T.nn.Dropout(node.p)


def scale_module(T, node: S.Scale, ins):
    return T.extra.Scale(ins[0][0], init=node.init)


def stochastic_depth_module(T, node: S.StochasticDepth, ins):
    return T.extra.StochasticDepth(node.p, node.mode)


def call(target_of, **kwargs_of):
    """A function op: ``target_of(T)`` is the callable, ``kwargs_of`` map kwarg names to ``f(node)``."""
    def make(T, node):
        return target_of(T), {name: f(node) for name, f in kwargs_of.items()}
    return make


def pool_kwargs(node):
    kw = {"kernel_size": pair(node.kernel_size),
          "stride": pair(node.stride if node.stride is not None else node.kernel_size),
          "padding": pair(node.padding), "ceil_mode": node.ceil_mode}
    if node.op == "maxpool2d":
        kw["dilation"] = pair(node.dilation)
    else:
        kw["count_include_pad"] = node.count_include_pad
    return kw


def pool_call(name):
    def make(T, node):
        return getattr(T.F, name), pool_kwargs(node)
    return make


def shuffle_identity(node: S.ChannelShuffle, flags) -> bool:
    return node.groups == 1


# ---- non-zero MACs (a weight's non-zero entries times the positions it is applied at) -------------------------

def conv_nonzero_macs(node, out: Shape, nonzero: int) -> int:
    return nonzero * out[1] * out[2]


def linear_nonzero_macs(node, out: Shape, nonzero: int) -> int:
    return nonzero


# ---- standalone Python export: constructor source of a built module ``m`` (torch-free: it only reads attributes)

def conv_source(m) -> str:
    return (f"nn.Conv2d({m.in_channels}, {m.out_channels}, {m.kernel_size}, stride={m.stride}, "
            f"padding={m.padding!r}, dilation={m.dilation}, groups={m.groups}, bias={m.bias is not None})")


def linear_source(m) -> str:
    return f"nn.Linear({m.in_features}, {m.out_features}, bias={m.bias is not None})"


def bn_source(cls: str):
    def source(m) -> str:
        return (f"nn.{cls}({m.num_features}, eps={m.eps!r}, momentum={m.momentum!r}, affine={m.affine}, "
                f"track_running_stats={m.track_running_stats})")
    return source


def ln_source(cls: str):
    def source(m) -> str:
        return (f"{cls}({tuple(m.normalized_shape)}, eps={m.eps!r}, elementwise_affine={m.elementwise_affine}, "
                f"bias={m.bias is not None})")
    return source


# ---- the registry ---------------------------------------------------------------------------------------------

#: input packing of a function op in the built module
ARGS = "args"     # f(x1, x2, ...)
LIST = "list"     # f([x1, x2, ...], **kwargs)            (concat)
CHAIN = "chain"   # f(f(x1, x2), x3) ..., a single input passes through   (add, mul)
PACKINGS = (ARGS, LIST, CHAIN)

#: where :mod:`archgraph.fx.layers` lives, for the export and import tables
EXTRA = "archgraph.fx.layers"


@dataclass(frozen=True)
class Imports:
    """The torch things the importer turns into this op, as dotted names resolved on the torch side
    (``"torch.nn.Conv2d"``, ``"torch.nn.functional.relu"``, ``"operator.add"``) and ``Tensor`` method names.
    ``via`` says, for an op no torch target maps to directly, which pattern the importer recognises instead."""

    modules: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    via: str = ""


@dataclass(frozen=True, kw_only=True)
class OpDef:
    """Everything archgraph knows about one op. Every field is given by keyword; the op name is its kind's."""

    #: the spec model (:mod:`archgraph.ops.spec`); the op name is its ``op`` literal
    kind: type
    op: str = field(init=False)
    # -- shape, sizes, channels, tensors --
    shape: Callable[[Any, list[Shape]], Shape]
    #: the channel role (one of ROLES): how the output channels relate to the inputs'
    channels: Callable[[Any, list[Shape]], str]
    #: ``{tensor: (out_axis, in_axis)}`` of its parameters and buffers
    layout: Callable[[Any, list[Shape]], dict[str, tuple[Optional[int], Optional[int]]]] = no_layout
    params: Callable[[Any, list[Shape], Shape], int] = no_count
    macs: Callable[[Any, list[Shape], Shape], int] = no_count
    #: ``nonzero_macs(node, out_shape, nonzero_weights)``: the MACs that involve a non-zero weight, for weighted ops
    nonzero_macs: Callable[[Any, Shape, int], int] = no_count
    #: the tensors of ``layout`` that are buffers, not parameters (not learned, not masked, not counted)
    buffers: tuple[str, ...] = ()
    # -- what kind of op it is --
    #: holds a weight ``[out, in, ...]`` applied to its input (conv/linear-like): masked, pruned, decayed, grown
    weighted: bool = False
    #: a weighted op with a spatial kernel (channels-last formats may speed it up; an inserted one needs an odd kernel)
    conv: bool = False
    #: the rank of input it needs (``None``: any)
    in_rank: Optional[int] = None
    #: the field that sets its output width (``out_channels``, ``out_features``)
    width_field: Optional[str] = None
    #: the weight fill that makes a new layer of this op the identity (``dirac``, ``eye``; see :mod:`archgraph.plan`)
    identity_fill: Optional[str] = None
    is_norm: bool = False
    #: the batchnorms: running statistics a recalibration recomputes
    running_stats: bool = False
    is_activation: bool = False
    #: an activation a residual block ends with after its add (relu, relu6, gelu, silu): SCS puts a new block after
    #: it. Not the gating ones (sigmoid, tanh, hardsigmoid); hardswish only appears inside MobileNet blocks.
    block_activation: bool = False
    is_pool: bool = False
    #: element-wise dropout in training (the identity in eval); stochastic depth drops whole samples instead
    is_dropout: bool = False
    #: the output is the sum of its inputs, so an input branch that outputs zeros can be removed exactly
    residual: bool = False
    #: ``collapse_layer`` may remove an input branch ending here (the sum or concatenation of the others remains)
    branch_end: bool = False
    # -- build --
    #: builds the node's submodule, for nodes that hold parameters or buffers or depend on train/eval mode
    module: Optional[Callable[[Any, Any, list[Shape]], Any]] = None
    #: (target, kwargs) of a ``call_function`` node, for the stateless ops
    function: Optional[Callable[[Any, Any], tuple[Callable, dict]]] = None
    #: how a function op receives its inputs: ARGS, LIST or CHAIN
    packing: str = ARGS
    #: the output is one of the inputs unchanged (no fx node is made)
    passthrough: bool = False
    # -- rewrite facts (used by archgraph.channels and archgraph.rules) --
    #: ``resize(node, width)`` -> the field changes that make the node's output ``width`` channels wide (``{}`` when
    #: the width is inferred from the input); only called for nodes whose output channels a rule changes
    resize: Callable[[Any, int], dict] = no_resize
    #: ``nonneg(node, inputs_nonneg)`` -> whether the output is >= 0 everywhere when the inputs flagged True are
    nonneg: Callable[[Any, list[bool]], bool] = never
    #: ``identity(node, inputs_nonneg)`` -> whether the node computes exactly its (single) input in eval mode
    identity: Callable[[Any, list[bool]], bool] = never
    #: ``mixes(node, ins)`` -> whether an output channel depends on the *other* channels of its input beyond what
    #: the channel role says (layernorm's statistics over the channels): adding or removing a channel then changes
    #: the others, so widening through it is not function-preserving
    mixes: Callable[[Any, list[Shape]], bool] = no_mixing
    # -- outside the graph: pictures, export, import --
    #: fill colour of its box in graph pictures
    colour: str = "#ffffff"
    #: standalone Python export: ``{module class: constructor source of a built module}``, one entry for every
    #: class ``module`` can build (function ops are written from their fx target, and ONNX export needs no table:
    #: ``torch.onnx`` exports the built module)
    python: dict[str, Callable[[Any], str]] = field(default_factory=dict)
    #: what the importer maps to it
    imports: Imports = Imports()

    def __post_init__(self):
        object.__setattr__(self, "op", self.kind.model_fields["op"].default)


WEIGHT_COLOUR, LINEAR_COLOUR, NORM_COLOUR, MERGE_COLOUR, CONCAT_COLOUR = (
    "#cfe2ff", "#d1e7dd", "#fff3cd", "#f8d7da", "#e2d9f3")
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
ACT = fixed(THROUGH)
F_ = "torch.nn.functional."
A_ = "torch.ops.aten."   # the ATen overloads of a torch.export graph (models torch.fx cannot trace)


def _activation(kind, target: Callable, *, block: bool = False, nonneg=never, identity=never, modules=(),
                functions=(), methods=(), **kwargs_of) -> OpDef:
    """An element-wise activation built as a function call."""
    return OpDef(kind=kind, shape=same_shape, channels=ACT, function=call(target, **kwargs_of), is_activation=True,
                 block_activation=block, nonneg=nonneg, identity=identity,
                 imports=Imports(modules=modules, functions=functions, methods=methods))


def _pool(kind, shape, function) -> OpDef:
    return OpDef(kind=kind, shape=shape, channels=ACT, in_rank=3, is_pool=True, function=function, nonneg=every,
                 imports=_POOL_IMPORTS[kind])


_POOL_IMPORTS = {
    S.MaxPool2d: Imports(modules=("torch.nn.MaxPool2d",), functions=(F_ + "max_pool2d", "torch.max_pool2d", A_ + "max_pool2d.default")),
    S.AvgPool2d: Imports(modules=("torch.nn.AvgPool2d",), functions=(F_ + "avg_pool2d", A_ + "avg_pool2d.default")),
    S.AdaptiveAvgPool2d: Imports(modules=("torch.nn.AdaptiveAvgPool2d",), functions=(F_ + "adaptive_avg_pool2d", A_ + "adaptive_avg_pool2d.default")),
    S.GlobalAvgPool: Imports(functions=("torch.mean", A_ + "mean.dim"), methods=("mean",)),
}


DEFS: tuple[OpDef, ...] = (
    OpDef(kind=S.Conv2d, shape=conv_shape, channels=conv_role, layout=conv_layout, params=conv_params,
          macs=conv_macs, nonzero_macs=conv_nonzero_macs, weighted=True, conv=True, in_rank=3,
          width_field="out_channels", identity_fill="dirac", module=conv_module, resize=conv_resize,
          colour=WEIGHT_COLOUR, python={"torch.nn.Conv2d": conv_source},
          imports=Imports(modules=("torch.nn.Conv2d",), functions=(F_ + "conv2d", A_ + "conv2d.default"))),
    OpDef(kind=S.Linear, shape=linear_shape, channels=fixed(SOURCE), layout=linear_layout, params=linear_params,
          macs=linear_macs, nonzero_macs=linear_nonzero_macs, weighted=True, in_rank=1, width_field="out_features",
          identity_fill="eye", module=linear_module, resize=linear_resize, colour=LINEAR_COLOUR,
          python={"torch.nn.Linear": linear_source}, imports=Imports(modules=("torch.nn.Linear",),
                                                                                  functions=(F_ + "linear", A_ + "linear.default"))),
    OpDef(kind=S.BatchNorm2d, shape=rank_shape(3), channels=ACT, layout=bn_layout, params=bn_params,
          buffers=BN_BUFFERS, in_rank=3, is_norm=True, running_stats=True, module=bn2d_module, colour=NORM_COLOUR,
          python={"torch.nn.BatchNorm2d": bn_source("BatchNorm2d")},
          # F.batch_norm of a [N, F] input becomes a batchnorm1d
          imports=Imports(modules=("torch.nn.BatchNorm2d",), functions=(F_ + "batch_norm", A_ + "batch_norm.default"))),
    OpDef(kind=S.BatchNorm1d, shape=rank_shape(1), channels=ACT, layout=bn_layout, params=bn_params,
          buffers=BN_BUFFERS, in_rank=1, is_norm=True, running_stats=True, module=bn1d_module, colour=NORM_COLOUR,
          python={"torch.nn.BatchNorm1d": bn_source("BatchNorm1d")},
          imports=Imports(modules=("torch.nn.BatchNorm1d",))),
    OpDef(kind=S.LayerNorm, shape=norm_any_shape, channels=ACT, layout=ln_layout, params=ln_params, is_norm=True,
          module=ln_module, mixes=ln_mixing, colour=NORM_COLOUR,
          python={"torch.nn.LayerNorm": ln_source("nn.LayerNorm"), EXTRA + ".LayerNorm2d": ln_source("LayerNorm2d")},
          imports=Imports(modules=("torch.nn.LayerNorm",), functions=(F_ + "layer_norm", A_ + "layer_norm.default"))),
    _activation(S.ReLU, lambda T: T.torch.relu, block=True, nonneg=always, identity=every,  # relu(x) = x, x >= 0
                modules=("torch.nn.ReLU",), functions=("torch.relu", F_ + "relu", A_ + "relu.default", A_ + "relu_.default"), methods=("relu", "relu_")),
    _activation(S.ReLU6, lambda T: T.F.relu6, block=True, nonneg=always, modules=("torch.nn.ReLU6",),
                functions=(F_ + "relu6", A_ + "relu6.default")),
    _activation(S.GELU, lambda T: T.F.gelu, block=True, modules=("torch.nn.GELU",), functions=(F_ + "gelu", A_ + "gelu.default"),
                approximate=lambda n: n.approximate),
    _activation(S.SiLU, lambda T: T.F.silu, block=True, modules=("torch.nn.SiLU",), functions=(F_ + "silu", A_ + "silu.default", A_ + "silu_.default")),
    _activation(S.Sigmoid, lambda T: T.torch.sigmoid, nonneg=always, modules=("torch.nn.Sigmoid",),
                functions=("torch.sigmoid", F_ + "sigmoid", A_ + "sigmoid.default"), methods=("sigmoid",)),
    _activation(S.Tanh, lambda T: T.torch.tanh, modules=("torch.nn.Tanh",), functions=("torch.tanh", F_ + "tanh", A_ + "tanh.default"),
                methods=("tanh",)),
    _activation(S.Hardswish, lambda T: T.F.hardswish, modules=("torch.nn.Hardswish",),
                functions=(F_ + "hardswish", A_ + "hardswish.default", A_ + "hardswish_.default")),
    _pool(S.MaxPool2d, lambda n, i: spatial(n, i, pool=True), pool_call("max_pool2d")),
    _pool(S.AvgPool2d, lambda n, i: spatial(n, i, dilation=False, pool=True), pool_call("avg_pool2d")),
    _pool(S.AdaptiveAvgPool2d, adaptive_shape,
          call(lambda T: T.F.adaptive_avg_pool2d, output_size=lambda n: pair(n.output_size))),
    _pool(S.GlobalAvgPool, gap_shape, call(lambda T: T.torch.mean, dim=lambda n: (-2, -1))),
    OpDef(kind=S.Flatten, shape=flatten_shape, channels=flatten_role,
          function=call(lambda T: T.torch.flatten, start_dim=lambda n: 1), nonneg=every,
          imports=Imports(modules=("torch.nn.Flatten",), functions=("torch.flatten", A_ + "flatten.using_ints"), methods=("flatten",))),
    OpDef(kind=S.Dropout, shape=same_shape, channels=ACT, module=dropout_module, is_dropout=True, nonneg=every,
          identity=always,   # eval mode
          python={"torch.nn.Dropout": lambda m: f"nn.Dropout({m.p!r})"},
          imports=Imports(modules=("torch.nn.Dropout",), functions=(F_ + "dropout", A_ + "dropout.default"))),
    OpDef(kind=S.Add, shape=add_shape, channels=fixed(MERGE), function=call(lambda T: operator.add), packing=CHAIN,
          residual=True, branch_end=True, nonneg=every, identity=single, colour=MERGE_COLOUR,
          imports=Imports(functions=("operator.add", "operator.iadd", "torch.add", A_ + "add.Tensor", A_ + "add_.Tensor"),
                          methods=("add", "__add__", "add_", "__iadd__"))),
    OpDef(kind=S.Mul, shape=mul_shape, channels=fixed(MERGE), function=call(lambda T: operator.mul), packing=CHAIN,
          nonneg=every, identity=single, colour=MERGE_COLOUR,
          imports=Imports(functions=("operator.mul", "operator.imul", "torch.mul", A_ + "mul.Tensor", A_ + "mul_.Tensor"),
                          methods=("mul", "__mul__", "mul_", "__imul__"))),
    OpDef(kind=S.Concat, shape=concat_shape, channels=fixed(CONCAT),
          function=call(lambda T: T.torch.cat, dim=lambda n: 1), packing=LIST, branch_end=True, nonneg=every,
          identity=single, colour=CONCAT_COLOUR,
          imports=Imports(functions=("torch.cat", "torch.concat", "torch.concatenate", A_ + "cat.default"))),
    OpDef(kind=S.Identity, shape=same_shape, channels=ACT, passthrough=True, nonneg=every, identity=always,
          imports=Imports(modules=("torch.nn.Identity",))),
    _activation(S.Hardsigmoid, lambda T: T.F.hardsigmoid, nonneg=always, modules=("torch.nn.Hardsigmoid",),
                functions=(F_ + "hardsigmoid", A_ + "hardsigmoid.default")),
    OpDef(kind=S.Scale, shape=norm_any_shape, channels=ACT, layout=channel_vector_layout, params=scale_params,
          module=scale_module, python={EXTRA + ".Scale": lambda m: f"Scale({m.num_channels}, init={m.init!r})"},
          # a mul by a per-channel parameter or by a number; a division by a number
          imports=Imports(functions=("operator.truediv", "operator.itruediv", "torch.div", A_ + "div.Tensor"),
                          methods=("div", "__truediv__", "div_"),
                          via="a mul by a per-channel parameter or a number")),
    OpDef(kind=S.StochasticDepth, shape=same_shape, channels=ACT, module=stochastic_depth_module, nonneg=every,
          identity=always,   # eval mode
          python={EXTRA + ".StochasticDepth": lambda m: f"StochasticDepth({m.p!r}, {m.mode!r})"},
          imports=Imports(functions=("torchvision.ops.stochastic_depth",))),
    OpDef(kind=S.ChannelShuffle, shape=shuffle_shape, channels=fixed(SHUFFLE), in_rank=3,
          function=call(lambda T: T.extra.channel_shuffle, groups=lambda n: n.groups), nonneg=every,
          identity=shuffle_identity, imports=Imports(via="reshape to groups, transpose(1, 2), reshape back")),
    OpDef(kind=S.Slice, shape=slice_shape, channels=fixed(SLICE), nonneg=every,   # start/stop: see rules/draft.py
          function=call(lambda T: T.extra.channel_slice, start=lambda n: n.start, stop=lambda n: n.stop),
          imports=Imports(via="x[:, start:stop] and the pieces of chunk/split along the channels")),
    # a zero padding read only by a convolution is folded into the convolution's padding when it is symmetric
    OpDef(kind=S.Pad, shape=pad_shape, channels=ACT, in_rank=3,
          function=call(lambda T: T.F.pad, pad=lambda n: list(n.padding), value=lambda n: n.value),
          nonneg=lambda n, flags: all(flags) and n.value >= 0, identity=lambda n, flags: not any(n.padding),
          imports=Imports(modules=("torch.nn.ConstantPad2d", "torch.nn.ZeroPad2d"), functions=(F_ + "pad", A_ + "pad.default", A_ + "constant_pad_nd.default"))),
)

OPS: dict[str, OpDef] = {d.op: d for d in DEFS}

#: every buffer name any op has (the tensors of a layout that are not parameters)
BUFFERS: frozenset[str] = frozenset(b for d in DEFS for b in d.buffers)


def opdef(op: str) -> OpDef:
    return OPS[op]


def is_weighted(node) -> bool:
    """Whether ``node`` holds a conv/linear-like weight (see :attr:`OpDef.weighted`)."""
    return OPS[node.op].weighted


def is_norm(node) -> bool:
    return OPS[node.op].is_norm


def width_of(node) -> Optional[int]:
    """The node's output width field (``out_channels``, ``out_features``), or ``None`` when it has none."""
    name = OPS[node.op].width_field
    return None if name is None else int(getattr(node, name))


WIDTH_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(d.width_field for d in DEFS if d.width_field))
