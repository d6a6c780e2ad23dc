"""Per-op behaviour, in one registry keyed by the op name.

Every op has exactly one :class:`OpDef` with the same entries: shape inference, parameter and MAC counts, its
channel role (how its output channels relate to its inputs'), the layout of its tensors (which axis of each parameter
or buffer indexes output and input channels) and how to build it in torch. The registry itself never imports torch:
builders receive the torch namespaces from :mod:`archgraph.fx.builder`, so validating a YAML file stays fast.
A test checks that every op of the format has every entry.
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


@dataclass(frozen=True)
class OpDef:
    """Everything archgraph knows about one op."""

    op: str
    kind: type
    shape: Callable[[Any, list[Shape]], Shape]
    channels: Callable[[Any, list[Shape]], str]
    layout: Callable[[Any, list[Shape]], dict[str, tuple[Optional[int], Optional[int]]]] = no_layout
    params: Callable[[Any, list[Shape], Shape], int] = no_count
    macs: Callable[[Any, list[Shape], Shape], int] = no_count
    #: builds the node's submodule, for nodes that hold parameters or buffers or depend on train/eval mode
    module: Optional[Callable[[Any, Any, list[Shape]], Any]] = None
    #: (target, kwargs) of a ``call_function`` node, for the stateless ops
    function: Optional[Callable[[Any, Any], tuple[Callable, dict]]] = None
    #: the output is one of the inputs unchanged (no fx node is made)
    passthrough: bool = False
    # -- facts the rewrite rules rely on (required for every op; tests/test_registry.py checks them) --
    #: ``resize(node, width)`` -> the field changes that make the node's output ``width`` channels wide (``{}`` when
    #: the width is inferred from the input); only called for nodes whose output channels a rule changes
    resize: Callable[[Any, int], dict] = field(kw_only=True)
    #: ``nonneg(node, inputs_nonneg)`` -> whether the output is >= 0 everywhere when the inputs flagged True are
    nonneg: Callable[[Any, list[bool]], bool] = field(kw_only=True)
    #: ``identity(node, inputs_nonneg)`` -> whether the node computes exactly its (single) input in eval mode
    identity: Callable[[Any, list[bool]], bool] = field(kw_only=True)
    #: ``mixes(node, ins)`` -> whether an output channel depends on the *other* channels of its input beyond what
    #: the channel role says (layernorm's statistics over the channels): adding or removing a channel then changes
    #: the others, so widening through it is not function-preserving
    mixes: Callable[[Any, list[Shape]], bool] = field(kw_only=True)


#: the rewrite facts of every op (see :class:`OpDef`): how to resize it, its sign and whether it is an identity
_N, _A, _E, _1 = never, always, every, single
FACTS: dict[str, dict] = {
    "conv2d": dict(resize=conv_resize, nonneg=_N, identity=_N, mixes=no_mixing),
    "linear": dict(resize=linear_resize, nonneg=_N, identity=_N, mixes=no_mixing),
    "batchnorm2d": dict(resize=no_resize, nonneg=_N, identity=_N, mixes=no_mixing),
    "batchnorm1d": dict(resize=no_resize, nonneg=_N, identity=_N, mixes=no_mixing),
    "layernorm": dict(resize=no_resize, nonneg=_N, identity=_N, mixes=ln_mixing),
    "relu": dict(resize=no_resize, nonneg=_A, identity=_E, mixes=no_mixing),   # relu(x) = x for x >= 0
    "relu6": dict(resize=no_resize, nonneg=_A, identity=_N, mixes=no_mixing),
    "gelu": dict(resize=no_resize, nonneg=_N, identity=_N, mixes=no_mixing),
    "silu": dict(resize=no_resize, nonneg=_N, identity=_N, mixes=no_mixing),
    "sigmoid": dict(resize=no_resize, nonneg=_A, identity=_N, mixes=no_mixing),
    "tanh": dict(resize=no_resize, nonneg=_N, identity=_N, mixes=no_mixing),
    "hardswish": dict(resize=no_resize, nonneg=_N, identity=_N, mixes=no_mixing),
    "maxpool2d": dict(resize=no_resize, nonneg=_E, identity=_N, mixes=no_mixing),
    "avgpool2d": dict(resize=no_resize, nonneg=_E, identity=_N, mixes=no_mixing),
    "adaptive_avgpool2d": dict(resize=no_resize, nonneg=_E, identity=_N, mixes=no_mixing),
    "global_avg_pool": dict(resize=no_resize, nonneg=_E, identity=_N, mixes=no_mixing),
    "flatten": dict(resize=no_resize, nonneg=_E, identity=_N, mixes=no_mixing),
    "dropout": dict(resize=no_resize, nonneg=_E, identity=_A, mixes=no_mixing),   # eval mode
    "add": dict(resize=no_resize, nonneg=_E, identity=_1, mixes=no_mixing),
    "mul": dict(resize=no_resize, nonneg=_E, identity=_1, mixes=no_mixing),
    "concat": dict(resize=no_resize, nonneg=_E, identity=_1, mixes=no_mixing),
    "identity": dict(resize=no_resize, nonneg=_E, identity=_A, mixes=no_mixing),
}


def shuffle_identity(node: S.ChannelShuffle, flags) -> bool:
    return node.groups == 1


# the ops the importer added (kept in one block so merges stay easy)
FACTS.update({
    "hardsigmoid": dict(resize=no_resize, nonneg=_A, identity=_N, mixes=no_mixing),
    "scale": dict(resize=no_resize, nonneg=_N, identity=_N, mixes=no_mixing),
    "stochastic_depth": dict(resize=no_resize, nonneg=_E, identity=_A, mixes=no_mixing),   # eval mode
    "channel_shuffle": dict(resize=no_resize, nonneg=_E, identity=shuffle_identity, mixes=no_mixing),
    "slice": dict(resize=no_resize, nonneg=_E, identity=_N, mixes=no_mixing),   # start/stop: see rules/draft.py
})


def op(name: str, *args, **kwargs) -> OpDef:
    return OpDef(name, *args, **kwargs, **FACTS[name])


def _defs() -> dict[str, OpDef]:
    act = fixed(THROUGH)
    defs = [
        op("conv2d", S.Conv2d, conv_shape, conv_role, conv_layout, conv_params, conv_macs, module=conv_module),
        op("linear", S.Linear, linear_shape, fixed(SOURCE), linear_layout, linear_params, linear_macs,
            module=linear_module),
        op("batchnorm2d", S.BatchNorm2d, rank_shape(3), act, bn_layout, bn_params, module=bn2d_module),
        op("batchnorm1d", S.BatchNorm1d, rank_shape(1), act, bn_layout, bn_params, module=bn1d_module),
        op("layernorm", S.LayerNorm, norm_any_shape, act, ln_layout, ln_params, module=ln_module),
        op("relu", S.ReLU, same_shape, act, function=call(lambda T: T.torch.relu)),
        op("relu6", S.ReLU6, same_shape, act, function=call(lambda T: T.F.relu6)),
        op("gelu", S.GELU, same_shape, act, function=call(lambda T: T.F.gelu, approximate=lambda n: n.approximate)),
        op("silu", S.SiLU, same_shape, act, function=call(lambda T: T.F.silu)),
        op("sigmoid", S.Sigmoid, same_shape, act, function=call(lambda T: T.torch.sigmoid)),
        op("tanh", S.Tanh, same_shape, act, function=call(lambda T: T.torch.tanh)),
        op("hardswish", S.Hardswish, same_shape, act, function=call(lambda T: T.F.hardswish)),
        op("maxpool2d", S.MaxPool2d, lambda n, i: spatial(n, i, pool=True), act, function=pool_call("max_pool2d")),
        op("avgpool2d", S.AvgPool2d, lambda n, i: spatial(n, i, dilation=False, pool=True), act,
            function=pool_call("avg_pool2d")),
        op("adaptive_avgpool2d", S.AdaptiveAvgPool2d, adaptive_shape, act,
            function=call(lambda T: T.F.adaptive_avg_pool2d, output_size=lambda n: pair(n.output_size))),
        op("global_avg_pool", S.GlobalAvgPool, gap_shape, act,
            function=call(lambda T: T.torch.mean, dim=lambda n: (-2, -1))),
        op("flatten", S.Flatten, flatten_shape, flatten_role,
            function=call(lambda T: T.torch.flatten, start_dim=lambda n: 1)),
        op("dropout", S.Dropout, same_shape, act, module=dropout_module),
        op("add", S.Add, add_shape, fixed(MERGE), function=call(lambda T: operator.add)),
        op("mul", S.Mul, mul_shape, fixed(MERGE), function=call(lambda T: operator.mul)),
        op("concat", S.Concat, concat_shape, fixed(CONCAT), function=call(lambda T: T.torch.cat, dim=lambda n: 1)),
        op("identity", S.Identity, same_shape, act, passthrough=True),
        op("hardsigmoid", S.Hardsigmoid, same_shape, act, function=call(lambda T: T.F.hardsigmoid)),
        op("scale", S.Scale, norm_any_shape, act, channel_vector_layout, scale_params, module=scale_module),
        op("stochastic_depth", S.StochasticDepth, same_shape, act, module=stochastic_depth_module),
        op("channel_shuffle", S.ChannelShuffle, shuffle_shape, fixed(SHUFFLE),
           function=call(lambda T: T.extra.channel_shuffle, groups=lambda n: n.groups)),
        op("slice", S.Slice, slice_shape, fixed(SLICE),
           function=call(lambda T: T.extra.channel_slice, start=lambda n: n.start, stop=lambda n: n.stop)),
    ]
    return {d.op: d for d in defs}


OPS: dict[str, OpDef] = _defs()


def opdef(op: str) -> OpDef:
    return OPS[op]
