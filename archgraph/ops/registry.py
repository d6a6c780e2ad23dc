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
GROUPED = "grouped"      # grouped conv, not depthwise: channel c reads only its own group; each group is pruned by
                         # its own choice, the same number from every group (channels.Grouping)
SHUFFLE = "shuffle"      # a fixed permutation of the channels: output c is input perm(c), the input's channels at
                         # one place of every block tied (channel_shuffle, radix_softmax; OpDef.shuffle)
SLICE = "slice"          # output channel c is input channel start + c; the other input channels are dropped
MIXER = "mixer"          # makes new channels from all of its input's, as many as it reads (attention): a producer
                         # whose output channels are tied to its input's, position by position
ROLES = (SOURCE, THROUGH, MERGE, CONCAT, FLATTEN, GROUPED, SHUFFLE, SLICE, MIXER)


def bad(field: Optional[str], message: str):
    raise GraphError(message, field=field)


def pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


RANK_NAMES = {1: "[F]", 2: "[T, D]", 3: "[C, H, W]"}


def need_rank(ins: list[Shape], rank: int, what: str) -> Shape:
    shape = ins[0]
    if len(shape) != rank:
        bad("in", f"needs a {RANK_NAMES[rank]} input ({what}), got shape {list(shape)}")
    return shape


def need_ranks(ins: list[Shape], ranks: tuple[int, ...], what: str) -> Shape:
    shape = ins[0]
    if len(shape) not in ranks:
        names = " or ".join(RANK_NAMES[r] for r in ranks)
        bad("in", f"needs a {names} input ({what}), got shape {list(shape)}")
    return shape


def channel_axis(shape) -> int:
    """The channel axis of a per-sample shape: the last of a sequence ``[T, D]``, the first of ``[C, H, W]`` and
    ``[F]``.

    >>> channel_axis((8, 16)), channel_axis((3, 28, 28)), channel_axis((10,))
    (1, 0, 0)
    """
    return 1 if len(shape) == 2 else 0


def channel_width(shape) -> int:
    """The number of channels of a per-sample shape (``D`` of a sequence ``[T, D]``, ``C`` of ``[C, H, W]``)."""
    return int(shape[channel_axis(shape)])


def tokens_of(shape) -> int:
    """The positions a weight is applied at: ``T`` of a sequence ``[T, D]``, else 1 (linear MACs)."""
    return int(shape[0]) if len(shape) == 2 else 1


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

def check_groups(node, in_channels: int) -> None:
    """``groups`` must divide both the input and the output channels (as PyTorch's convolutions require)."""
    if in_channels % node.groups:
        bad("groups", f"groups={node.groups} does not divide the {in_channels} input channels")
    if node.out_channels % node.groups:
        bad("groups", f"groups={node.groups} does not divide out_channels={node.out_channels}")


def conv_shape(node: S.Conv2d, ins):
    c, _, _ = need_rank(ins, 3, "conv2d")
    check_groups(node, c)
    _, h, w = spatial(node, ins)
    return (node.out_channels, h, w)


def conv_transpose_size(size: int, k: int, s: int, p: int, op: int, d: int) -> int:
    """Output length along one axis of a transposed conv, as ``torch.nn.ConvTranspose2d`` documents it."""
    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1


def conv_transpose_in_size(out: int, k: int, s: int, p: int, op: int, d: int) -> int:
    """The input length a transposed conv makes ``out`` from (its inverse of :func:`conv_transpose_size`)."""
    return (out - 1 - op - d * (k - 1) + 2 * p) // s + 1


def conv_transpose_shape(node: S.ConvTranspose2d, ins):
    c, h, w = need_rank(ins, 3, "conv_transpose2d")
    check_groups(node, c)
    k, st, p, op, d = (pair(v) for v in (node.kernel_size, node.stride, node.padding, node.output_padding,
                                          node.dilation))
    for axis in (0, 1):
        if op[axis] >= max(st[axis], d[axis]):
            bad("output_padding", f"output_padding {list(op)} must be smaller than the stride {list(st)} or the "
                                  f"dilation {list(d)}")
    ho, wo = (conv_transpose_size(n, k[a], st[a], p[a], op[a], d[a]) for a, n in ((0, h), (1, w)))
    if ho <= 0 or wo <= 0:
        bad("padding", f"padding {list(p)} leaves no output positions ({ho}x{wo}) from {h}x{w}")
    return (node.out_channels, ho, wo)


def upsample_shape(node: S.Upsample, ins):
    c, h, w = need_rank(ins, 3, "upsample")
    if node.size is not None:
        return (c, *pair(node.size))
    fh, fw = upsample_factors(node)
    return (c, math.floor(h * fh), math.floor(w * fw))


def upsample_factors(node: S.Upsample) -> tuple[float, float]:
    f = node.scale_factor
    return (float(f), float(f)) if isinstance(f, (int, float)) else (float(f[0]), float(f[1]))


def rnn_shape(node, ins):
    t, _ = need_rank(ins, 2, f"{node.op} over a sequence")
    return (t, node.hidden_size)


def linear_shape(node: S.Linear, ins):
    if len(ins[0]) == 2:
        return (ins[0][0], node.out_features)
    need_rank(ins, 1, "linear; flatten or pool first")
    return (node.out_features,)


def same_shape(node, ins):
    return tuple(ins[0])


def rank_shape(rank):
    def shape(node, ins):
        return tuple(need_rank(ins, rank, node.op))
    return shape


def ln_shape(node, ins):
    if len(ins[0]) not in (1, 2, 3):
        bad("in", f"needs a [F], [T, D] or [C, H, W] input, got {list(ins[0])}")
    if getattr(node, "mask_ramp", None) is not None and len(ins[0]) == 3:
        bad("mask_ramp", f"a masked layer norm normalises [F] or [T, D], not the channels of {list(ins[0])}")
    return tuple(ins[0])


def group_norm_shape(node: S.GroupNorm, ins):
    c = need_rank(ins, 3, "group_norm")[0]
    if c % node.num_groups:
        bad("num_groups", f"num_groups={node.num_groups} does not divide the {c} input channels")
    return tuple(ins[0])


def last_axis_shape(node, ins):
    return tuple(need_ranks(ins, (1, 2), node.op))


def attention_dims(node: S.Attention, ins) -> tuple[int, int, int, int]:
    """``(D, num_heads, head_dim, kv_heads)`` of an attention node reading ``ins``."""
    d = channel_width(ins[0])
    return d, node.num_heads, node.head_dim or d // node.num_heads, node.kv_heads or node.num_heads


def attention_shape(node: S.Attention, ins):
    shape = need_rank(ins, 2, node.op)
    if node.head_dim is None and shape[1] % node.num_heads:
        bad("num_heads", f"num_heads={node.num_heads} does not divide the {shape[1]} features; set head_dim")
    if node.rotary and attention_dims(node, ins)[2] % 2:
        bad("rotary", f"rotary position embeddings rotate pairs of features: head_dim "
                      f"{attention_dims(node, ins)[2]} must be even")
    return tuple(shape)


def window_dims(node: S.WindowAttention, ins) -> tuple[int, int, int]:
    """``(C, num_heads, head_dim)`` of a window attention node reading ``ins``."""
    d = channel_width(ins[0])
    return d, node.num_heads, node.head_dim or d // node.num_heads


def window_shape(node: S.WindowAttention, ins):
    c, h, w = need_rank(ins, 3, node.op)
    if node.head_dim is None and c % node.num_heads:
        bad("num_heads", f"num_heads={node.num_heads} does not divide the {c} channels; set head_dim")
    wh, ww = pair(node.window_size)
    if node.grid and (h % wh or w % ww):
        bad("window_size", f"grid attention needs window_size {[wh, ww]} to divide the {h}x{w} positions")
    if node.position_bias == "mlp" and min(wh, ww) < 2:
        bad("window_size", f"the continuous position bias (position_bias 'mlp') needs windows of at least 2x2, "
                           f"got {[wh, ww]}")
    return (c, h, w)


def subsample_shape(node: S.Subsample, ins):
    c, h, w = need_rank(ins, 3, node.op)
    (sh, sw), (oh, ow) = pair(node.stride), pair(node.offset)
    if oh >= h or ow >= w:
        bad("offset", f"offset {[oh, ow]} is past the {h}x{w} positions")
    return (c, -(-(h - oh) // sh), -(-(w - ow) // sw))


def position_shape(node, ins):
    return tuple(need_rank(ins, 2, node.op))


def to_tokens_shape(node, ins):
    c, h, w = need_rank(ins, 3, node.op)
    return (h * w, c)


def class_token_shape(node: S.ClassToken, ins):
    t, d = need_rank(ins, 2, node.op)
    return (t + node.tokens, d)


def token_pool_shape(node: S.TokenPool, ins):
    t, d = need_rank(ins, 2, node.op)
    if node.skip >= t:
        bad("skip", f"skip={node.skip} leaves none of the {t} tokens")
    return (d,)


def embedding_shape(node: S.Embedding, ins):
    shape = ins[0]
    if getattr(shape, "vocab", None) is None:
        bad("in", f"reads token ids: its input must be a token input ({{shape: [T], vocab: V}}), got a float "
                  f"input of shape {list(shape)}")
    return (shape[0], node.embedding_dim)


def adaptive_shape(node: S.AdaptiveAvgPool2d, ins):
    c, _, _ = need_rank(ins, 3, node.op)
    return (c, *pair(node.output_size))


def gap_shape(node, ins):
    c, _, _ = need_rank(ins, 3, node.op)
    return (c,)


def flatten_shape(node, ins):
    if len(ins[0]) == 2:
        bad("in", f"a sequence {list(ins[0])} is not flattened; pool it to [D] with token_pool")
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
    if len(first) == 2:
        bad("in", f"concat joins channels of [C, H, W] or [F] values; '{node.inputs[0]}' is a sequence "
                  f"{list(first)}")
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


def shuffle_blocks(node: S.ChannelShuffle, width: int) -> tuple[int, list[int]]:
    """A channel shuffle's tied blocks (its groups: a column of the ``[g, C/g]`` grid goes as a whole) and its
    permutation."""
    return node.groups, shuffle_permutation(width, node.groups)


def no_shuffle(node, width: int) -> tuple[int, list[int]]:
    return 1, list(range(width))


# ---- split attention (radix_softmax) ---------------------------------------------------------------------------

def radix_shape(node: S.RadixSoftmax, ins):
    shape = need_ranks(ins, (1, 3), node.op)
    blocks = node.radix * node.cardinality
    if shape[0] % blocks:
        bad("radix", f"radix={node.radix} times cardinality={node.cardinality} does not divide the {shape[0]} "
                     f"channels")
    return tuple(shape)


def radix_permutation(channels: int, radix: int, cardinality: int) -> list[int]:
    """``perm`` with output channel ``c`` of a ``radix_softmax`` equal to (the softmax at) input channel
    ``perm[c]``: ``[cardinality, radix, i]`` in, ``[radix, cardinality, i]`` out.

    >>> radix_permutation(8, 2, 2)
    [0, 1, 4, 5, 2, 3, 6, 7]
    """
    per = channels // (radix * cardinality)
    return [g * radix * per + r * per + i for r in range(radix) for g in range(cardinality) for i in range(per)]


def radix_blocks(node: S.RadixSoftmax, width: int) -> tuple[int, list[int]]:
    """The channels at one place of every ``[g, r]`` block are tied: a softmax over the radix reads them together,
    and removing them from every cardinality group alike keeps the ``[cardinality, radix, i]`` layout. A sigmoid
    (radix 1) ties nothing."""
    blocks = node.radix * node.cardinality if node.radix > 1 else 1
    return blocks, radix_permutation(width, node.radix, node.cardinality)


# ---- sizes ----------------------------------------------------------------------------------------------------

def no_count(node, ins, out) -> int:
    return 0


def conv_params(node: S.Conv2d, ins, out):
    kh, kw = pair(node.kernel_size)
    return node.out_channels * (ins[0][0] // node.groups) * kh * kw + (node.out_channels if node.bias else 0)


def conv_macs(node: S.Conv2d, ins, out):
    kh, kw = pair(node.kernel_size)
    return node.out_channels * (ins[0][0] // node.groups) * kh * kw * out[1] * out[2]


def conv_transpose_params(node: S.ConvTranspose2d, ins, out):
    kh, kw = pair(node.kernel_size)
    return ins[0][0] * (node.out_channels // node.groups) * kh * kw + (node.out_channels if node.bias else 0)


def conv_transpose_macs(node: S.ConvTranspose2d, ins, out):
    """Every weight entry is applied once at every input position (the input is scattered onto the output)."""
    kh, kw = pair(node.kernel_size)
    return ins[0][0] * (node.out_channels // node.groups) * kh * kw * ins[0][1] * ins[0][2]


def rnn_gates(node) -> int:
    return RNN_GATES[node.op]


def rnn_inner(node, ins) -> int:
    """Weights per time step: every layer's ``weight_ih`` and ``weight_hh``."""
    h, d = node.hidden_size, channel_width(ins[0])
    return sum(rnn_gates(node) * h * ((d if k == 0 else h) + h) for k in range(node.num_layers))


def rnn_params(node, ins, out):
    biases = 2 * rnn_gates(node) * node.hidden_size * node.num_layers if node.bias else 0
    return rnn_inner(node, ins) + biases


def rnn_macs(node, ins, out):
    return rnn_inner(node, ins) * ins[0][0]


def linear_params(node: S.Linear, ins, out):
    return channel_width(ins[0]) * node.out_features + (node.out_features if node.bias else 0)


def linear_macs(node: S.Linear, ins, out):
    return channel_width(ins[0]) * node.out_features * tokens_of(ins[0])


def bn_params(node, ins, out):
    return 2 * ins[0][0] if node.affine else 0


def ln_params(node: S.LayerNorm, ins, out):
    if not node.elementwise_affine:
        return 0
    return channel_width(ins[0]) * (2 if node.bias else 1)


def gn_params(node: S.GroupNorm, ins, out):
    return 2 * ins[0][0] if node.affine else 0


def rms_params(node: S.RMSNorm, ins, out):
    return channel_width(ins[0]) if node.elementwise_affine else 0


def embedding_params(node: S.Embedding, ins, out):
    return ins[0].vocab * node.embedding_dim


def qkv_bias(node: S.Attention) -> bool:
    """Whether an attention's q/k/v projections have biases (``qkv_bias``, by default ``bias``)."""
    return node.bias if node.qkv_bias is None else node.qkv_bias


def attention_params(node: S.Attention, ins, out):
    d, h, hd, kv = attention_dims(node, ins)
    weights = d * h * hd * 2 + d * kv * hd * 2
    return weights + ((h + 2 * kv) * hd if qkv_bias(node) else 0) + (d if node.bias else 0)


def attention_macs(node: S.Attention, ins, out):
    """The four projections at every token, plus the ``T^2`` scores (``q . k``) and the ``T^2`` weighted sum of
    values, per head (all ``T^2`` pairs, causal or not)."""
    d, h, hd, kv = attention_dims(node, ins)
    t = ins[0][0]
    return t * (2 * d * h * hd + 2 * d * kv * hd) + 2 * t * t * h * hd


def window_tables(node: S.WindowAttention, ins) -> dict[str, tuple[int, ...]]:
    """The shapes of a window attention's position tensors (``relative_position_bias_table``, ``cpb_mlp``,
    ``logit_scale``), by name."""
    _, h, _ = window_dims(node, ins)
    wh, ww = pair(node.window_size)
    shapes: dict[str, tuple[int, ...]] = {}
    if node.position_bias == "table":
        shapes["relative_position_bias_table"] = ((2 * wh - 1) * (2 * ww - 1), h)
    elif node.position_bias == "mlp":
        shapes.update({"cpb_mlp.0.weight": (node.cpb_hidden, 2), "cpb_mlp.0.bias": (node.cpb_hidden,),
                       "cpb_mlp.2.weight": (h, node.cpb_hidden)})
    if node.cosine:
        shapes["logit_scale"] = (h, 1, 1)
    return shapes


def window_biases(node: S.WindowAttention) -> tuple[str, ...]:
    """The projections with a bias: q, k, v (``qkv_bias``, by default ``bias``; no key bias with ``cosine``, as in
    Swin v2) and o (``bias``)."""
    qkv = node.bias if node.qkv_bias is None else node.qkv_bias
    return tuple(p for p, has in (("q_proj", qkv), ("k_proj", qkv and not node.cosine), ("v_proj", qkv),
                                  ("o_proj", node.bias)) if has)


def window_params(node: S.WindowAttention, ins, out):
    d, h, hd = window_dims(node, ins)
    biases = sum(d if p == "o_proj" else h * hd for p in window_biases(node))
    return 4 * d * h * hd + biases + sum(math.prod(s) for s in window_tables(node, ins).values())


def window_macs(node: S.WindowAttention, ins, out):
    """The four projections at every position of the image padded to whole windows, plus the ``N^2`` scores and
    the ``N^2`` weighted sum of values of every window of ``N`` tokens, per head (the position bias MLP is not
    counted)."""
    d, h, hd = window_dims(node, ins)
    wh, ww = pair(node.window_size)
    _, rows, cols = ins[0]
    t = (-(-rows // wh) * wh) * (-(-cols // ww) * ww)
    return t * 4 * d * h * hd + 2 * t * wh * ww * h * hd


def table_params(node, ins, out):
    return math.prod(ins[0])


def token_params(node: S.ClassToken, ins, out):
    return channel_width(ins[0]) * node.tokens


def scale_params(node: S.Scale, ins, out):
    return (1 if node.shared else channel_width(ins[0])) * (2 if node.bias else 1)


def grn_params(node: S.GRN, ins, out):
    return 2 * ins[0][0]


# ---- channel roles and tensor layouts -------------------------------------------------------------------------

def conv_role(node: S.Conv2d, ins):
    if node.groups == 1:
        return SOURCE
    if node.groups == ins[0][0] == node.out_channels:
        return THROUGH
    return GROUPED


def conv_transpose_role(node: S.ConvTranspose2d, ins):
    return conv_role(node, ins)


def conv_transpose_layout(node: S.ConvTranspose2d, ins):
    """The weight is ``[in, out / groups, kh, kw]``: output channels on axis 1, input channels on axis 0. A depthwise
    one (``[C, 1, kh, kw]``) follows its input's channels on axis 0; a grouped one holds its output channels within
    a group on axis 1 (see :attr:`OpDef.group_side`)."""
    if node.groups == 1:
        layout = {"weight": (1, 0)}
    elif node.groups == ins[0][0] == node.out_channels:
        layout = {"weight": (0, None)}
    else:
        layout = {"weight": (None, 0)}
    if node.bias:
        layout["bias"] = (0, None)
    return layout


def rnn_layout(node, ins):
    """``nn.LSTM``/``nn.GRU``'s tensors: every one holds the gate blocks of the hidden units on axis 0 (see
    :attr:`OpDef.gates`); ``weight_ih_l0`` reads the input on axis 1, the other weights read the op's own hidden
    units there (see :attr:`OpDef.recurrent`)."""
    layout = {}
    for k in range(node.num_layers):
        layout[f"weight_ih_l{k}"] = (0, 1)
        layout[f"weight_hh_l{k}"] = (0, 1)
        if node.bias:
            layout[f"bias_ih_l{k}"] = (0, None)
            layout[f"bias_hh_l{k}"] = (0, None)
    return layout


def rnn_recurrent(node) -> frozenset:
    return frozenset([f"weight_hh_l{k}" for k in range(node.num_layers)]
                     + [f"weight_ih_l{k}" for k in range(1, node.num_layers)])


def one_gate(node) -> int:
    return 1


def no_norm_groups(node) -> int:
    return 1


def no_recurrent(node) -> frozenset:
    return frozenset()


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
    if node.mask_ramp is not None:
        layout["mask"] = (0, None)   # a buffer: the entering channels' mask (add_filters init=masked)
    return layout


def channel_vector_layout(node, ins):
    return {"weight": (0, None)}


def scale_layout(node: S.Scale, ins):
    """One entry per channel on axis 0, or (``shared``) one number for all: no channel axis, so the channels prune
    and grow through it untouched."""
    axis = None if node.shared else 0
    return {"weight": (axis, None), **({"bias": (axis, None)} if node.bias else {})}


def affine_layout(node, ins):
    return {"weight": (0, None), "bias": (0, None)}


def gn_layout(node: S.GroupNorm, ins):
    return {"weight": (0, None), "bias": (0, None)} if node.affine else {}


def rms_layout(node: S.RMSNorm, ins):
    return {"weight": (0, None)} if node.elementwise_affine else {}


def embedding_layout(node: S.Embedding, ins):
    return {"weight": (1, None)}   # [vocab, D]: the channels are the columns


def attention_layout(node: S.Attention, ins):
    """Input channels are the columns of q/k/v, output channels the rows of o; the head axes (q/k/v rows, o columns)
    are no channel axis: the head rules map them."""
    layout = {"q_proj.weight": (None, 1), "k_proj.weight": (None, 1), "v_proj.weight": (None, 1),
              "o_proj.weight": (0, None)}
    if qkv_bias(node):
        layout.update({"q_proj.bias": (None, None), "k_proj.bias": (None, None), "v_proj.bias": (None, None)})
    if node.bias:
        layout["o_proj.bias"] = (0, None)
    return layout


def window_layout(node: S.WindowAttention, ins):
    """As the attention op's: input channels are the columns of q/k/v, output channels the rows of o; the head axes
    and the position tensors hold no channel axis."""
    layout = {"q_proj.weight": (None, 1), "k_proj.weight": (None, 1), "v_proj.weight": (None, 1),
              "o_proj.weight": (0, None)}
    layout.update({f"{p}.bias": (0 if p == "o_proj" else None, None) for p in window_biases(node)})
    layout.update({name: (None, None) for name in window_tables(node, ins)})
    return layout


def column_layout(node, ins):
    return {"weight": (1, None)}


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


def rnn_resize(node, width: int) -> dict:
    return {"hidden_size": width}


def linear_resize(node: S.Linear, width: int) -> dict:
    return {"out_features": width}


def embedding_resize(node: S.Embedding, width: int) -> dict:
    return {"embedding_dim": width}


def no_pin(node, ins) -> dict:
    return {}


def attention_heads(node: S.Attention, ins):
    """``(num_heads, head_dim, {tensor: axis})``: the tensors holding one block of ``head_dim`` entries per query
    head on ``axis``, ``o_proj.weight`` (which reads the heads' outputs) first; ``k_proj``/``v_proj`` only when
    every query head has its own kv head."""
    _, h, hd, kv = attention_dims(node, ins)
    names = ["o_proj.weight", "q_proj.weight"] + (["k_proj.weight", "v_proj.weight"] if kv == h else [])
    if qkv_bias(node):
        names += ["q_proj.bias"] + (["k_proj.bias", "v_proj.bias"] if kv == h else [])
    return h, hd, {n: (1 if n == "o_proj.weight" else 0) for n in names}


def window_pin(node: S.WindowAttention, ins) -> dict:
    return {} if node.head_dim is not None else {"head_dim": window_dims(node, ins)[2]}


def window_heads(node: S.WindowAttention, ins):
    """As :func:`attention_heads` (every query head has its own k and v); the position tables' one entry per head
    is :func:`window_head_tables`."""
    _, h, hd = window_dims(node, ins)
    names = ["o_proj.weight", "q_proj.weight", "k_proj.weight", "v_proj.weight"]
    names += [f"{p}.bias" for p in window_biases(node) if p != "o_proj"]
    return h, hd, {n: (1 if n == "o_proj.weight" else 0) for n in names}


def window_head_tables(node: S.WindowAttention, ins) -> dict[str, int]:
    """``{tensor: axis}``: the tensors holding one entry per head on ``axis`` (the position bias table's columns,
    the position MLP's output rows, the logit scales)."""
    axes = {"relative_position_bias_table": 1, "cpb_mlp.2.weight": 0, "logit_scale": 0}
    return {name: axes[name] for name in window_tables(node, ins) if name in axes}


def no_head_tables(node, ins) -> dict[str, int]:
    return {}


def no_heads(node, ins):
    return None


def attention_pin(node: S.Attention, ins) -> dict:
    return {} if node.head_dim is not None else {"head_dim": attention_dims(node, ins)[2]}


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


def conv_transpose_module(T, node: S.ConvTranspose2d, ins):
    return T.nn.ConvTranspose2d(ins[0][0], node.out_channels, pair(node.kernel_size), stride=pair(node.stride),
                                padding=pair(node.padding), output_padding=pair(node.output_padding),
                                groups=node.groups, bias=node.bias, dilation=pair(node.dilation))


def upsample_kwargs(node: S.Upsample) -> dict:
    kw: dict = {"mode": node.mode}
    if node.size is not None:
        kw["size"] = pair(node.size)
    else:
        kw["scale_factor"] = upsample_factors(node)
    if node.mode == "bilinear":
        kw["align_corners"] = node.align_corners
    return kw


def upsample_call(T, node: S.Upsample):
    return T.F.interpolate, upsample_kwargs(node)


def rnn_module(T, node, ins):
    cls = T.nn.LSTM if node.op == "lstm" else T.nn.GRU
    return cls(channel_width(ins[0]), node.hidden_size, num_layers=node.num_layers, bias=node.bias,
               batch_first=True, dropout=node.dropout)


def linear_module(T, node: S.Linear, ins):
    return T.nn.Linear(channel_width(ins[0]), node.out_features, bias=node.bias)


def embedding_module(T, node: S.Embedding, ins):
    return T.nn.Embedding(ins[0].vocab, node.embedding_dim)


def attention_module(T, node: S.Attention, ins):
    d, h, hd, kv = attention_dims(node, ins)
    return T.extra.Attention(d, h, hd, kv, causal=node.causal, bias=node.bias, dropout=node.dropout,
                             rotary=node.rotary, rope_theta=node.rope_theta, qkv_bias=node.qkv_bias)


def window_module(T, node: S.WindowAttention, ins):
    d, h, hd = window_dims(node, ins)
    return T.extra.WindowAttention(d, h, hd, pair(node.window_size), pair(node.shift_size), grid=node.grid,
                                   position_bias=node.position_bias, cpb_hidden=node.cpb_hidden, cosine=node.cosine,
                                   scale=node.scale, bias=node.bias, qkv_bias=node.qkv_bias, dropout=node.dropout)


def rms_module(T, node: S.RMSNorm, ins):
    return T.extra.RMSNorm(channel_width(ins[0]), eps=node.eps, elementwise_affine=node.elementwise_affine)


def bn2d_module(T, node, ins):
    return T.nn.BatchNorm2d(ins[0][0], eps=node.eps, momentum=node.momentum, affine=node.affine,
                            track_running_stats=node.track_running_stats)


def bn1d_module(T, node, ins):
    return T.nn.BatchNorm1d(ins[0][0], eps=node.eps, momentum=node.momentum, affine=node.affine,
                            track_running_stats=node.track_running_stats)


def ln_module(T, node: S.LayerNorm, ins):
    if node.mask_ramp is not None:
        return T.extra.MaskedLayerNorm(channel_width(ins[0]), node.mask_ramp, eps=node.eps,
                                       elementwise_affine=node.elementwise_affine, bias=node.bias)
    cls = T.nn.LayerNorm if len(ins[0]) in (1, 2) else T.extra.LayerNorm2d
    return cls(channel_width(ins[0]), eps=node.eps, elementwise_affine=node.elementwise_affine, bias=node.bias)


def gn_module(T, node: S.GroupNorm, ins):
    return T.nn.GroupNorm(node.num_groups, ins[0][0], eps=node.eps, affine=node.affine)


def dropout_module(T, node: S.Dropout, ins):
    return T.nn.Dropout(node.p)


def scale_module(T, node: S.Scale, ins):
    return T.extra.Scale(channel_width(ins[0]), init=node.init, bias=node.bias, shared=node.shared)


def grn_module(T, node: S.GRN, ins):
    return T.extra.GRN(ins[0][0], eps=node.eps)


def scale_source(m) -> str:
    extra = (", bias=True" if m.bias is not None else "") + (", shared=True" if m.shared else "")
    return f"Scale({m.num_channels}, init={m.init!r}{extra})"


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


def conv_transpose_nonzero_macs(node, out: Shape, nonzero: int) -> int:
    k, st, p, op, d = (pair(v) for v in (node.kernel_size, node.stride, node.padding, node.output_padding,
                                          node.dilation))
    h, w = (conv_transpose_in_size(out[a + 1], k[a], st[a], p[a], op[a], d[a]) for a in (0, 1))
    return nonzero * h * w


def linear_nonzero_macs(node, out: Shape, nonzero: int) -> int:
    return nonzero * tokens_of(out)


# ---- standalone Python export: constructor source of a built module ``m`` (torch-free: it only reads attributes)

def conv_source(m) -> str:
    return (f"nn.Conv2d({m.in_channels}, {m.out_channels}, {m.kernel_size}, stride={m.stride}, "
            f"padding={m.padding!r}, dilation={m.dilation}, groups={m.groups}, bias={m.bias is not None})")


def conv_transpose_source(m) -> str:
    return (f"nn.ConvTranspose2d({m.in_channels}, {m.out_channels}, {m.kernel_size}, stride={m.stride}, "
            f"padding={m.padding}, output_padding={m.output_padding}, groups={m.groups}, "
            f"bias={m.bias is not None}, dilation={m.dilation})")


def rnn_source(cls: str):
    def source(m) -> str:
        return (f"nn.{cls}({m.input_size}, {m.hidden_size}, num_layers={m.num_layers}, bias={m.bias}, "
                f"batch_first=True, dropout={m.dropout!r})")
    return source


def linear_source(m) -> str:
    return f"nn.Linear({m.in_features}, {m.out_features}, bias={m.bias is not None})"


def embedding_source(m) -> str:
    return f"nn.Embedding({m.num_embeddings}, {m.embedding_dim})"


def attention_source(m) -> str:
    return (f"Attention({m.dim}, {m.num_heads}, {m.head_dim}, {m.kv_heads}, causal={m.causal}, "
            f"bias={m.o_proj.bias is not None}, dropout={m.dropout!r}"
            + (f", rotary=True, rope_theta={m.rope_theta!r}" if m.rotary else "")
            + (f", qkv_bias={m.q_proj.bias is not None})" if (m.q_proj.bias is None) != (m.o_proj.bias is None)
               else ")"))


def window_source(m) -> str:
    return (f"WindowAttention({m.dim}, {m.num_heads}, {m.head_dim}, {m.window_size}, {m.shift_size}, grid={m.grid}, "
            f"position_bias={m.position_bias!r}, cpb_hidden={m.cpb_hidden}, cosine={m.cosine}, scale={m.scale!r}, "
            f"bias={m.o_proj.bias is not None}, qkv_bias={m.q_proj.bias is not None}, dropout={m.dropout!r})")


def rms_source(m) -> str:
    return f"RMSNorm({tuple(m.normalized_shape)}, eps={m.eps!r}, elementwise_affine={m.elementwise_affine})"


def bn_source(cls: str):
    def source(m) -> str:
        return (f"nn.{cls}({m.num_features}, eps={m.eps!r}, momentum={m.momentum!r}, affine={m.affine}, "
                f"track_running_stats={m.track_running_stats})")
    return source


def masked_ln_source(m) -> str:
    return (f"MaskedLayerNorm({m.num_channels}, {m.ramp}, eps={m.eps!r}, elementwise_affine={m.weight is not None}, "
            f"bias={m.bias is not None})")


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
    #: why the importer cannot produce this op yet (it then has no torch names and no pattern)
    unsupported: str = ""


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
    #: a grouped op (role GROUPED): which side's position within a group weight axis 1 indexes, ``"in"`` for a
    #: conv (``[out, in / groups, ...]``), ``"out"`` for a transposed conv (``[in, out / groups, ...]``)
    group_side: str = "in"
    #: ``gates(node)``: how many gate blocks of its output channels the out axis of each of its tensors holds, one
    #: after another (4 for an LSTM: input, forget, cell, output; 3 for a GRU); a new unit appears in every block
    gates: Callable[[Any], int] = one_gate
    #: the gate block whose rows, zero for a new unit, keep that unit's state and output at exactly zero from a zero
    #: initial state (an LSTM's cell candidate, a GRU's new gate); ``None`` for ops without gates
    quiet_gate: Optional[int] = None
    #: ``recurrent(node)``: the tensors whose in axis reads the op's own output channels, not its input's
    #: (``weight_hh_l0``, the upper layers' ``weight_ih``)
    recurrent: Callable[[Any], frozenset] = no_recurrent
    #: ``heads(node, ins)`` -> ``(num_heads, head_dim, {tensor: axis})``, the tensors whose ``axis`` holds one block
    #: of ``head_dim`` entries per head, the first being the one that reads the heads' outputs (attention's
    #: ``o_proj.weight`` columns: a head gate scales it, ``prune_heads`` removes a head); ``None`` without heads
    heads: Callable[[Any, list[Shape]], Optional[tuple[int, int, dict[str, int]]]] = no_heads
    #: ``head_tables(node, ins)`` -> ``{tensor: axis}``: the tensors holding one entry (not ``head_dim``) per head on
    #: ``axis``, which the head rules slice with the heads (window attention's position bias table)
    head_tables: Callable[[Any, list[Shape]], dict[str, int]] = no_head_tables
    #: ``norm_groups(node)``: a THROUGH op that normalises its channels in this many equal groups (group_norm): the
    #: channels at one position of every group are tied, so every group keeps the same size when channels go
    norm_groups: Callable[[Any], int] = no_norm_groups
    #: ``shuffle(node, width)`` -> ``(blocks, perm)`` of a SHUFFLE op: its input's ``width`` channels split into
    #: ``blocks`` equal blocks whose channels at one place are tied (they go together), and output channel ``c`` is
    #: input channel ``perm[c]``
    shuffle: Callable[[Any, int], tuple[int, list[int]]] = no_shuffle
    #: the built module returns a tuple whose first element is the output (``nn.LSTM``, ``nn.GRU``)
    tuple_output: bool = False
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
    #: a zero input channel can come out as a non-zero constant (a norm's shift, sigmoid(0) = 0.5): removing such a
    #: channel downstream is not exact
    shifts_zero: bool = False
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
    #: ``pin(node, ins)`` -> the field values a node must write out before its input's width changes (attention's
    #: default ``head_dim``, which follows the width), so a rewrite keeps what it computes
    pin: Callable[[Any, list[Shape]], dict] = no_pin
    #: its channel parameters are added to (or stand beside) its input's values: position_embedding, class_token;
    #: when the channels grow their new entries start like a producer's new channels (``zero`` for exact growth)
    offset: bool = False
    #: a mixing norm whose statistic is the mean of squares over the channels (rmsnorm): zero channels added to its
    #: input are compensated exactly by scaling its weight by ``sqrt(old / new)`` and its ``eps`` by ``old / new``
    rescalable: bool = False
    #: a mixing norm that takes new channels through a mask ramping from 0 (its ``mask_ramp`` field): layernorm
    maskable: bool = False
    #: a mixing norm whose statistics are the same over ``[x, x, ...]`` as over ``x`` (mean and variance, mean
    #: square), so copying every channel alike keeps its output (add_filters init=clone)
    keeps_stats_of_copies: bool = False
    #: ``mixes(node, ins)`` -> whether an output channel depends on the *other* channels of its input beyond what
    #: the channel role says (layernorm's statistics over the channels): adding or removing a channel then changes
    #: the others, so widening through it is not function-preserving
    mixes: Callable[[Any, list[Shape]], bool] = no_mixing
    #: for an op that mixes: the statistics it takes over the channels (named when pruning under it is not exact)
    mix_stats: str = "mean and variance"
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
EMBED_COLOUR, ATTENTION_COLOUR, TOKEN_COLOUR = "#ffe5d0", "#f7d6e6", "#e0f2f1"
RNN_COLOUR = "#fde2c8"
#: gate blocks per hidden unit, in PyTorch's order: LSTM (input, forget, cell, output), GRU (reset, update, new)
RNN_GATES = {"lstm": 4, "gru": 3}
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
ACT = fixed(THROUGH)
F_ = "torch.nn.functional."
A_ = "torch.ops.aten."   # the ATen overloads of a torch.export graph (models torch.fx cannot trace)


def _activation(kind, target: Callable, *, block: bool = False, nonneg=never, identity=never, modules=(),
                functions=(), methods=(), shifts_zero: bool = False, **kwargs_of) -> OpDef:
    """An element-wise activation built as a function call."""
    return OpDef(kind=kind, shape=same_shape, channels=ACT, function=call(target, **kwargs_of), is_activation=True,
                 block_activation=block, nonneg=nonneg, identity=identity, shifts_zero=shifts_zero,
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
          buffers=BN_BUFFERS, in_rank=3, is_norm=True, running_stats=True, shifts_zero=True, module=bn2d_module, colour=NORM_COLOUR,
          python={"torch.nn.BatchNorm2d": bn_source("BatchNorm2d")},
          # F.batch_norm of a [N, F] input becomes a batchnorm1d
          imports=Imports(modules=("torch.nn.BatchNorm2d",), functions=(F_ + "batch_norm", A_ + "batch_norm.default"))),
    OpDef(kind=S.BatchNorm1d, shape=rank_shape(1), channels=ACT, layout=bn_layout, params=bn_params,
          buffers=BN_BUFFERS, in_rank=1, is_norm=True, running_stats=True, shifts_zero=True, module=bn1d_module, colour=NORM_COLOUR,
          python={"torch.nn.BatchNorm1d": bn_source("BatchNorm1d")},
          imports=Imports(modules=("torch.nn.BatchNorm1d",))),
    OpDef(kind=S.LayerNorm, shape=ln_shape, channels=ACT, layout=ln_layout, params=ln_params, is_norm=True,
          buffers=("mask",), module=ln_module, mixes=ln_mixing, maskable=True, keeps_stats_of_copies=True,
          shifts_zero=True, colour=NORM_COLOUR,
          python={"torch.nn.LayerNorm": ln_source("nn.LayerNorm"), EXTRA + ".LayerNorm2d": ln_source("LayerNorm2d"),
                  EXTRA + ".MaskedLayerNorm": masked_ln_source},
          imports=Imports(modules=("torch.nn.LayerNorm",), functions=(F_ + "layer_norm", A_ + "layer_norm.default"))),
    _activation(S.ReLU, lambda T: T.torch.relu, block=True, nonneg=always, identity=every,  # relu(x) = x, x >= 0
                modules=("torch.nn.ReLU",), functions=("torch.relu", F_ + "relu", A_ + "relu.default", A_ + "relu_.default"), methods=("relu", "relu_")),
    _activation(S.ReLU6, lambda T: T.F.relu6, block=True, nonneg=always, modules=("torch.nn.ReLU6",),
                functions=(F_ + "relu6", A_ + "relu6.default")),
    _activation(S.GELU, lambda T: T.F.gelu, block=True, modules=("torch.nn.GELU",), functions=(F_ + "gelu", A_ + "gelu.default"),
                approximate=lambda n: n.approximate),
    _activation(S.SiLU, lambda T: T.F.silu, block=True, modules=("torch.nn.SiLU",), functions=(F_ + "silu", A_ + "silu.default", A_ + "silu_.default")),
    _activation(S.Sigmoid, lambda T: T.torch.sigmoid, nonneg=always, shifts_zero=True, modules=("torch.nn.Sigmoid",),
                functions=("torch.sigmoid", F_ + "sigmoid", A_ + "sigmoid.default"), methods=("sigmoid",)),
    _activation(S.Tanh, lambda T: T.torch.tanh, modules=("torch.nn.Tanh",), functions=("torch.tanh", F_ + "tanh", A_ + "tanh.default"),
                methods=("tanh",)),
    _activation(S.Hardswish, lambda T: T.F.hardswish, modules=("torch.nn.Hardswish",),
                functions=(F_ + "hardswish", A_ + "hardswish.default", A_ + "hardswish_.default")),
    _activation(S.LeakyReLU, lambda T: T.F.leaky_relu, block=True, modules=("torch.nn.LeakyReLU",),
                functions=(F_ + "leaky_relu", A_ + "leaky_relu.default", A_ + "leaky_relu_.default"),
                negative_slope=lambda n: n.negative_slope),
    OpDef(kind=S.GroupNorm, shape=group_norm_shape, channels=ACT, layout=gn_layout, params=gn_params, in_rank=3,
          is_norm=True, module=gn_module, mixes=ln_mixing, shifts_zero=True, norm_groups=lambda n: n.num_groups,
          colour=NORM_COLOUR, python={"torch.nn.GroupNorm": lambda m: f"nn.GroupNorm({m.num_groups}, {m.num_channels}, "
                                                                      f"eps={m.eps!r}, affine={m.affine})"},
          imports=Imports(modules=("torch.nn.GroupNorm",), functions=(F_ + "group_norm", A_ + "group_norm.default"))),
    # GRN's statistic is taken over the channels (it mixes them), and a zero channel comes out as its bias; it is no
    # is_norm op: its weight scales only the normalised term, not the channel's output (which keeps x itself)
    OpDef(kind=S.GRN, shape=rank_shape(3), channels=ACT, layout=affine_layout, params=grn_params, in_rank=3,
          module=grn_module, mixes=ln_mixing, mix_stats="mean of the channels' L2 norms", shifts_zero=True,
          colour=NORM_COLOUR, python={EXTRA + ".GRN": lambda m: f"GRN({m.num_channels}, eps={m.eps!r})"},
          # timm's GlobalResponseNorm (channels-first or channels-last) is kept whole: archgraph.interop.timm_layers
          imports=Imports(modules=(EXTRA + ".GRN",))),
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
    _activation(S.Hardsigmoid, lambda T: T.F.hardsigmoid, nonneg=always, shifts_zero=True, modules=("torch.nn.Hardsigmoid",),
                functions=(F_ + "hardsigmoid", A_ + "hardsigmoid.default")),
    OpDef(kind=S.Scale, shape=ln_shape, channels=ACT, layout=scale_layout, params=scale_params,
          # shifts_zero is one flag per op: a scale with a bias does map a zero channel to its bias, but the
          # ones imported (LearnableAffineBlock) follow a batchnorm, which the pruning note names already
          module=scale_module, python={EXTRA + ".Scale": scale_source},
          # a mul by a per-channel parameter or by a number; a division by a number; timm's LearnableAffineBlock
          # and archgraph's own Scale as modules (archgraph.interop.timm_layers)
          imports=Imports(functions=("operator.truediv", "operator.itruediv", "torch.div", A_ + "div.Tensor"),
                          methods=("div", "__truediv__", "div_"),
                          via="a mul by a per-channel parameter or a number; timm's LearnableAffineBlock "
                              "(archgraph.interop.timm_layers)")),
    OpDef(kind=S.StochasticDepth, shape=same_shape, channels=ACT, module=stochastic_depth_module, nonneg=every,
          identity=always,   # eval mode
          python={EXTRA + ".StochasticDepth": lambda m: f"StochasticDepth({m.p!r}, {m.mode!r})"},
          imports=Imports(functions=("torchvision.ops.stochastic_depth",))),
    OpDef(kind=S.ChannelShuffle, shape=shuffle_shape, channels=fixed(SHUFFLE), in_rank=3, shuffle=shuffle_blocks,
          function=call(lambda T: T.extra.channel_shuffle, groups=lambda n: n.groups), nonneg=every,
          identity=shuffle_identity, imports=Imports(via="reshape to groups, transpose(1, 2), reshape back")),
    OpDef(kind=S.Slice, shape=slice_shape, channels=fixed(SLICE), nonneg=every,   # start/stop: see rules/draft.py
          function=call(lambda T: T.extra.channel_slice, start=lambda n: n.start, stop=lambda n: n.stop),
          imports=Imports(via="x[:, start:stop] and the pieces of chunk/split along the channels")),
    OpDef(kind=S.ConvTranspose2d, shape=conv_transpose_shape, channels=conv_transpose_role,
          layout=conv_transpose_layout, params=conv_transpose_params, macs=conv_transpose_macs,
          nonzero_macs=conv_transpose_nonzero_macs, weighted=True, group_side="out", in_rank=3,
          width_field="out_channels", module=conv_transpose_module, resize=conv_resize, colour=WEIGHT_COLOUR,
          python={"torch.nn.ConvTranspose2d": conv_transpose_source},
          imports=Imports(modules=("torch.nn.ConvTranspose2d",))),
    OpDef(kind=S.Upsample, shape=upsample_shape, channels=ACT, in_rank=3, function=upsample_call, nonneg=every,
          colour="#e7f1f4",   # nearest copies, bilinear averages: never negative from a non-negative input
          imports=Imports(modules=("torch.nn.Upsample", "torch.nn.UpsamplingNearest2d",
                                   "torch.nn.UpsamplingBilinear2d"),
                          functions=(F_ + "interpolate", F_ + "upsample"))),
    OpDef(kind=S.RMSNorm, shape=last_axis_shape, channels=ACT, layout=rms_layout, params=rms_params, is_norm=True,
          module=rms_module, mixes=ln_mixing, mix_stats="mean square", rescalable=True,
          keeps_stats_of_copies=True, colour=NORM_COLOUR, python={EXTRA + ".RMSNorm": rms_source},
          imports=Imports(modules=("torch.nn.RMSNorm", EXTRA + ".RMSNorm"))),
    OpDef(kind=S.Embedding, shape=embedding_shape, channels=fixed(SOURCE), layout=embedding_layout,
          params=embedding_params, width_field="embedding_dim", module=embedding_module, resize=embedding_resize,
          colour=EMBED_COLOUR, python={"torch.nn.Embedding": embedding_source},
          imports=Imports(modules=("torch.nn.Embedding",))),
    OpDef(kind=S.PositionEmbedding, shape=position_shape, channels=ACT, layout=column_layout, params=table_params,
          in_rank=2, module=lambda T, n, ins: T.extra.PositionEmbedding(*ins[0]), offset=True, colour=EMBED_COLOUR,
          python={EXTRA + ".PositionEmbedding": lambda m: f"PositionEmbedding({m.weight.shape[0]}, "
                                                          f"{m.weight.shape[1]})"},
          # a [T, D] / [1, T, D] parameter (or constant) added to a sequence
          imports=Imports(modules=(EXTRA + ".PositionEmbedding",),
                          via="a [T, D] or [1, T, D] parameter added to a sequence")),
    OpDef(kind=S.Attention, shape=attention_shape, channels=fixed(MIXER), layout=attention_layout,
          params=attention_params, macs=attention_macs, in_rank=2, module=attention_module, pin=attention_pin,
          heads=attention_heads,
          colour=ATTENTION_COLOUR, python={EXTRA + ".Attention": attention_source},
          # an encoder layer is imported as its norms, attention, linears and residual adds around this op
          # and hand-written attention (timm's, nanoGPT's): heads of linear projections, these functions, the
          # heads merged back and an output projection
          imports=Imports(modules=("torch.nn.MultiheadAttention", "torch.nn.TransformerEncoderLayer",
                                   "torch.nn.TransformerEncoder", EXTRA + ".Attention"),
                          functions=(F_ + "scaled_dot_product_attention", "torch.matmul", "operator.matmul",
                                     "torch.softmax", F_ + "softmax", "torch.unbind"),
                          methods=("softmax", "masked_fill", "unbind", "matmul", "__matmul__"))),
    OpDef(kind=S.ToTokens, shape=to_tokens_shape, channels=ACT, in_rank=3, nonneg=every, colour=TOKEN_COLOUR,
          function=call(lambda T: T.extra.to_tokens), imports=Imports(functions=(EXTRA + ".to_tokens",))),
    OpDef(kind=S.ClassToken, shape=class_token_shape, channels=ACT, layout=column_layout, params=token_params,
          in_rank=2, module=lambda T, n, ins: T.extra.ClassToken(ins[0][1], n.tokens), offset=True, colour=TOKEN_COLOUR,
          python={EXTRA + ".ClassToken": lambda m: f"ClassToken({m.weight.shape[1]}, {m.weight.shape[0]})"},
          imports=Imports(modules=(EXTRA + ".ClassToken",))),
    OpDef(kind=S.TokenPool, shape=token_pool_shape, channels=ACT, in_rank=2, nonneg=every, colour=TOKEN_COLOUR,
          function=call(lambda T: T.extra.token_pool, mode=lambda n: n.mode, skip=lambda n: n.skip),
          imports=Imports(functions=(EXTRA + ".token_pool",), via="x.mean(dim=1) and x[:, 0] of a sequence")),
    OpDef(kind=S.LSTM, shape=rnn_shape, channels=fixed(SOURCE), layout=rnn_layout, params=rnn_params,
          macs=rnn_macs, in_rank=2, width_field="hidden_size", gates=rnn_gates, quiet_gate=2,
          recurrent=rnn_recurrent, tuple_output=True, module=rnn_module, resize=rnn_resize, colour=RNN_COLOUR,
          python={"torch.nn.LSTM": rnn_source("LSTM")}, imports=Imports(modules=("torch.nn.LSTM",))),
    OpDef(kind=S.GRU, shape=rnn_shape, channels=fixed(SOURCE), layout=rnn_layout, params=rnn_params,
          macs=rnn_macs, in_rank=2, width_field="hidden_size", gates=rnn_gates, quiet_gate=2,
          recurrent=rnn_recurrent, tuple_output=True, module=rnn_module, resize=rnn_resize, colour=RNN_COLOUR,
          python={"torch.nn.GRU": rnn_source("GRU")}, imports=Imports(modules=("torch.nn.GRU",))),
    OpDef(kind=S.WindowAttention, shape=window_shape, channels=fixed(MIXER), layout=window_layout,
          params=window_params, macs=window_macs, in_rank=3, module=window_module, pin=window_pin,
          heads=window_heads, head_tables=window_head_tables, colour=ATTENTION_COLOUR,
          python={EXTRA + ".WindowAttention": window_source},
          imports=Imports(via="torchvision's Swin (ShiftedWindowAttention, ShiftedWindowAttentionV2) and MaxViT "
                              "(PartitionAttentionLayer) attention modules, and archgraph's own WindowAttention: "
                              "archgraph.interop.windows")),
    OpDef(kind=S.Subsample, shape=subsample_shape, channels=ACT, in_rank=3, nonneg=every,
          identity=lambda n, flags: pair(n.stride) == (1, 1) and pair(n.offset) == (0, 0),
          function=call(lambda T: T.extra.subsample, stride=lambda n: pair(n.stride), offset=lambda n: pair(n.offset)),
          imports=Imports(functions=(EXTRA + ".subsample", "torchvision.models.swin_transformer._patch_merging_pad"),
                          via="torchvision Swin's patch merging: a pad to even sizes, four subsamples and a concat")),
    # a zero padding read only by a convolution is folded into the convolution's padding when it is symmetric
    OpDef(kind=S.Pad, shape=pad_shape, channels=ACT, in_rank=3,
          function=call(lambda T: T.F.pad, pad=lambda n: list(n.padding), value=lambda n: n.value),
          nonneg=lambda n, flags: all(flags) and n.value >= 0, identity=lambda n, flags: not any(n.padding),
          imports=Imports(modules=("torch.nn.ConstantPad2d", "torch.nn.ZeroPad2d"), functions=(F_ + "pad", A_ + "pad.default", A_ + "constant_pad_nd.default"))),
    # ---- split attention --------------------------------------------------------------------------------------
    OpDef(kind=S.RadixSoftmax, shape=radix_shape, channels=fixed(SHUFFLE), shuffle=radix_blocks, nonneg=always,
          shifts_zero=True,   # softmax(0) = 1/radix, sigmoid(0) = 0.5
          function=call(lambda T: T.extra.radix_softmax, radix=lambda n: n.radix,
                        cardinality=lambda n: n.cardinality), colour=ATTENTION_COLOUR,
          imports=Imports(via="timm's RadixSoftmax (a view to [N, cardinality, radix, -1], transpose(1, 2), a "
                              "softmax over dim 1, a reshape back) and a softmax over the radix axis of a [N, radix, "
                              "C, H, W] view (SelectiveKernelAttn): archgraph.interop.split_attention")),
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
