"""Calls that change how a value is viewed and make no node of their own (or one ``flatten``, ``slice``,
``channel_shuffle``, ``to_tokens`` or ``token_pool`` where the view ends): permutes and transposes between layouts,
reshapes, ``chunk``/``split`` into pieces and indexing, casts that change nothing. The ATen forms come from
torch.export graphs. Where the value is a step of hand-written attention, :mod:`.hand_attention` reads the view;
split attention's and channels-last images' special cases (:mod:`.split_attention`, :mod:`.channels_last`) are
asked first.
"""
from __future__ import annotations

import math
import operator

import torch

from .. import table
from ..arguments import ints
from ..values import (
    CF,
    CL,
    FLAT,
    GROUPED,
    GROUPED_T,
    HAND,
    TND,
    TOKENS,
    Pieces,
    Projected,
    Tail,
    Unconverted,
    Val,
    layout_words,
)
from . import channels_last, hand_attention, split_attention

_A = torch.ops.aten


@table.function(torch.permute, _A.permute.default)
@table.method("permute")
def permute(c, n, x, *dims):
    dims = ints(dims[0]) if len(dims) == 1 and not isinstance(dims[0], int) else ints(dims)
    if isinstance(x, HAND):
        return hand_attention.relabel(c, x, [d % len(x.axes) for d in dims])
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
    raise c.fail(f"permute{list(dims)} of a {layout_words(x)} tensor of per-sample shape {list(c.expected(x))} is "
                 f"not supported (only NCHW <-> NHWC, as around ConvNeXt's channels-last layers)")


def _tokens(c, x: Val) -> Val:
    """``[N, C, H*W]`` transposed to ``[N, H*W, C]``: the image's positions as tokens."""
    return Val(c.emit(None, "to_tokens", [x.node]))


@table.function(torch.transpose, _A.transpose.int)
@table.method("transpose")
def transpose(c, n, x, dim0, dim1):
    radix = split_attention.transpose(c, x, dim0, dim1)
    if radix is not None:
        return radix
    if isinstance(x, HAND):
        order = list(range(len(x.axes)))
        a, b = dim0 % len(order), dim1 % len(order)
        order[a], order[b] = b, a
        return hand_attention.relabel(c, x, order)
    x = c.tensor(x)
    if x.layout == FLAT and {dim0 % 3, dim1 % 3} == {1, 2}:
        return _tokens(c, x)
    if x.layout in (CF, TND) and len(c.shape(x)) == 2 and {dim0 % 3, dim1 % 3} == {0, 1}:
        return Val(x.node, TND if x.layout == CF else CF)   # [N, T, D] <-> [T, N, D]
    pair = {dim0 % 5, dim1 % 5} if x.layout in (GROUPED, GROUPED_T) else None
    if pair == {1, 2}:
        return Val(x.node, GROUPED_T if x.layout == GROUPED else GROUPED, x.groups)
    raise c.fail(f"transpose({dim0}, {dim1}) of a {layout_words(x)} tensor is not supported (only the group "
                 f"transpose of a channel shuffle, and a sequence's batch and time axes)")


@table.function(_A.contiguous.default, _A.clone.default, _A.alias.default, _A.detach.default)
@table.method("contiguous")
def contiguous(c, n, x, *args, **kwargs):
    return x if isinstance(x, HAND) else c.tensor(x)


@table.function(_A._to_copy.default, _A.to.dtype, _A.to.dtype_layout)
@table.method("float", "double", "half", "long", "to", "type", "type_as")
def cast(c, n, x, *args, **kwargs):
    """``x.float()``, ``x.to(dtype)``, ``x.type_as(y)``, ... that leave the traced tensor's dtype as it was."""
    x = c.tensor(x, tokens=True)
    before = c.values[n.args[0].name].dtype
    after = c.values[n.name].dtype
    if before != after:
        raise c.fail(f"a cast from {before} to {after} has no graph op (only casts that change nothing)")
    return x


@table.function(torch.reshape, _A.view.default, _A.reshape.default)
@table.method("view", "reshape")
def reshape(c, n, x, *shape):
    """A reshape: split attention's radix view and a channels-last image's tokens first, then :func:`view_as`."""
    special = split_attention.reshape(c, n, x)
    if special is None:
        special = channels_last.reshape(c, n, x)
    return special if special is not None else view_as(c, n, x, *shape)


@table.function(_A.squeeze.dims, _A.squeeze.dim, _A.unflatten.int)
@table.method("squeeze")
def view_as(c, n, x, *shape):
    """The traced output's shape as a view: heads of hand-written attention, a grouped view, a flatten."""
    out = tuple(c.values[n.name].shape)
    if isinstance(x, HAND):
        return hand_attention.hand_reshape(c, x, out)
    x = c.tensor(x)
    if x.layout == CF and len(c.shape(x)) == 2 and len(out) in (4, 5):   # a projection split into heads
        return hand_attention.hand_reshape(c, hand_attention.projection(c, x, (0, c.channels(x))), out)
    return _reshape(c, n, x, out)


def _reshape(c, n, x: Val, out: tuple[int, ...]) -> Val:
    if x.layout in (TND, TOKENS):
        if tuple(out) == tuple(c.values[n.args[0].name].shape):
            return x
        raise c.fail(f"a reshape of a {layout_words(x)} tensor to {list(out)} has no graph op")
    if out[0] != c.batch():
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
    raise c.fail(f"a reshape of a {layout_words(x)} tensor of per-sample shape {list(c.expected(x))} to "
                 f"{list(out)} has no graph op (supported: flatten to [F], and the grouped views of a channel "
                 f"shuffle)")


@table.modules_of("flatten")
def flatten_module(c, n, m, x):
    return _flatten(c, n, x, m.start_dim, m.end_dim)


@table.functions_of("flatten")
def flatten(c, n, x, start_dim=0, end_dim=-1):
    return _flatten(c, n, x, start_dim, end_dim)


def _flatten(c, n, x, start_dim=0, end_dim=-1):
    x = c.tensor(x)
    out = c.values[n.name].shape
    if x.layout == CF and start_dim == 1 and end_dim == -1:
        if len(c.shape(x)) == 1:
            return x
        return Val(c.emit(None, "flatten", [x.node]))
    if x.layout == CF and len(c.shape(x)) == 3 and start_dim == 2 and end_dim in (-1, 3):
        return Val(x.node, FLAT)
    return _reshape(c, n, x, out)


# ---- pieces and indexing ------------------------------------------------------------------------------------------

def _split(c, n, x, dim):
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


@table.function(torch.chunk, _A.chunk.default)
@table.method("chunk")
def chunk(c, n, x, chunks, dim=0):
    return _split(c, n, x, dim)


@table.function(torch.split, _A.split.Tensor, _A.split_with_sizes.default)
@table.method("split")
def split(c, n, x, split_size_or_sections, dim=0):
    return _split(c, n, x, dim)


@table.function(operator.getitem)
def getitem(c, n, obj, index):
    """``obj[index]``: by what ``obj`` is (a module's tuple output, a sequence, the pieces of a split, ...)."""
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
        return _sequence_item(c, obj, index)
    if isinstance(obj, Projected) and isinstance(index, int):   # qkv[0]: the queries of a fused projection
        return hand_attention.hand_part(c, obj, index, 0)
    if isinstance(obj, Pieces):
        return _piece(c, obj, index)
    if isinstance(obj, Val) and obj.layout == CF and _channel_slice(index):
        return _channels(c, obj, index[1])
    raise c.fail(f"indexing with {index!r} is not supported (only x[:, start:stop] along the channels, and the "
                 f"pieces of chunk/split)")


def _sequence_item(c, obj: Val, index):
    """A sequence's tokens: all of them, those after ``k`` prefix tokens (a :class:`Tail`), or one token."""
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
    raise c.fail(f"indexing a {layout_words(obj)} sequence with {index!r} is not supported (only its first "
                 f"token, {'x[:, 0]' if obj.layout == CF else 'x[0]'})")


def _piece(c, obj: Pieces, index):
    """A piece of ``chunk``/``split``: a ``slice`` node (or the rows of a projection on its way into attention)."""
    start, stop = obj.bounds[index]
    src = obj.source
    if (start, stop) == (0, c.channels(src)):
        return src
    if src.layout == CF and len(c.shape(src)) == 2:   # nanoGPT's c_attn(x).split(n_embd, dim=2)
        return hand_attention.projection(c, src, (start, stop))
    return Val(c.emit(None, "slice", [src.node], start=start, stop=stop), src.layout)


def _channel_slice(index) -> bool:
    return isinstance(index, tuple) and len(index) == 2 and index[0] == slice(None) and \
        isinstance(index[1], slice) and index[1].step in (None, 1)


def _channels(c, obj: Val, channels: slice) -> Val:
    """``x[:, start:stop]`` of a channels-first value: a ``slice`` node."""
    start, stop, _ = channels.indices(c.channels(obj))
    if stop <= start:
        raise c.fail(f"the channel slice {channels} is empty")
    if (start, stop) == (0, c.channels(obj)):
        return obj
    return Val(c.emit(None, "slice", [obj.node], start=start, stop=stop))


@table.function(_A.slice.Tensor)
def aten_slice(c, n, x, dim=0, start=None, end=None, step=1):
    """``aten.slice.Tensor``: ``x[:, start:end]`` along one axis in a torch.export graph."""
    index = [slice(None)] * (dim % (len(c.expected(c.tensor(x))) + 1)) + [slice(start, end, step)]
    return getitem(c, n, x, tuple(index) if len(index) > 1 else index[0])
