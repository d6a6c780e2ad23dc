"""Pooling: max and average pools (modules and functions), adaptive average pools, and means: over an image's
positions (a global average pool; a channels-last image's is :mod:`.channels_last`'s), over a sequence's tokens
(a ``token_pool``)."""
from __future__ import annotations

from torch import nn

from .. import table
from ..arguments import ints, pair
from ..values import CF, TND, Tail, Val, layout_words
from . import channels_last


@table.modules_of("maxpool2d")
def maxpool(c, n, m: nn.MaxPool2d, x):
    if m.return_indices:
        raise c.fail("return_indices=True is not supported")
    return _maxpool(c, n, x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)


@table.functions_of("maxpool2d")
def f_maxpool(c, n, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    if return_indices:
        raise c.fail("return_indices=True is not supported")
    return _maxpool(c, n, x, kernel_size, stride, padding, dilation, ceil_mode)


def _maxpool(c, n, x, kernel_size, stride, padding, dilation, ceil_mode):
    return _pool2d(c, "maxpool2d", c.cf(x, 3), kernel_size, stride, padding, dilation=pair(dilation),
                   ceil_mode=bool(ceil_mode))


def _pool2d(c, op, x, kernel_size, stride, padding, **fields):
    """A pooling node on ``x`` (already channels-first); no ``stride`` (None or empty) means the kernel size."""
    fields = {"kernel_size": pair(kernel_size), "padding": pair(padding), **fields}
    if stride is not None and ints(stride) != ():
        fields["stride"] = pair(stride)
    return Val(c.emit(None, op, [x.node], **fields))


@table.modules_of("avgpool2d")
def avgpool(c, n, m: nn.AvgPool2d, x):
    return _avgpool(c, n, x, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad,
                    m.divisor_override)


@table.functions_of("avgpool2d")
def f_avgpool(c, n, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
              divisor_override=None):
    return _avgpool(c, n, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def _avgpool(c, n, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    x = c.cf(x, 3)
    if divisor_override is not None:
        raise c.fail("divisor_override is not supported")
    return _pool2d(c, "avgpool2d", x, kernel_size, stride, padding, ceil_mode=bool(ceil_mode),
                   count_include_pad=bool(count_include_pad))


@table.modules_of("adaptive_avgpool2d")
def adaptive_avgpool(c, n, m: nn.AdaptiveAvgPool2d, x):
    return _adaptive(c, n, x, m.output_size)


@table.functions_of("adaptive_avgpool2d")
def f_adaptive(c, n, x, output_size):
    return _adaptive(c, n, x, output_size)


def _adaptive(c, n, x, output_size):
    x = c.cf(x, 3)
    size = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if any(s is None for s in size):
        raise c.fail(f"output_size {list(size)} with None is not supported")
    return Val(c.emit(None, "adaptive_avgpool2d", [x.node], output_size=pair(size)))


@table.functions_of("global_avg_pool")
def mean(c, n, x, dim=None, keepdim=False, *, dtype=None, out=None):
    """``x.mean(...)``: over the tokens after a sequence's prefix tokens, over a sequence's tokens, over an image's
    positions (channels-first, or channels-last: :func:`.channels_last.mean`)."""
    special = channels_last.mean(c, x, dim, keepdim, dtype)
    if special is not None:
        return special
    if isinstance(x, Tail) and _axes(dim, 3) == {1} and not keepdim and dtype is None:
        return Val(c.emit(None, "token_pool", [x.source.node], mode="mean", skip=x.skip))
    x = c.tensor(x)
    if x.layout in (CF, TND) and len(c.shape(x)) == 2:
        return _sequence_mean(c, x, dim, keepdim, dtype)
    return _image_mean(c, c.cf(x, 3), dim, keepdim, dtype)


def _axes(dim, rank: int) -> set[int]:
    """``dim`` (None, an int or a sequence of them, negative counted from the end) as a set of axes of a tensor of
    ``rank`` axes; None is no axis."""
    return {d % rank for d in ints(dim)} if dim is not None else set()


def _sequence_mean(c, x: Val, dim, keepdim, dtype) -> Val:
    """A mean over a sequence's tokens (axis 1 of ``[N, C, T]``, axis 0 of ``[T, N, D]``): a ``token_pool``."""
    if _axes(dim, 3) != ({1} if x.layout == CF else {0}) or keepdim or dtype is not None:
        raise c.fail(f"a mean over axes {dim} of a {layout_words(x)} sequence is not supported (only over "
                     f"the tokens, without keepdim)")
    return Val(c.emit(None, "token_pool", [x.node], mode="mean"))


def _image_mean(c, x: Val, dim, keepdim, dtype) -> Val:
    """A mean over a channels-first image's positions: a global average pool (an adaptive one of size 1 with
    ``keepdim``)."""
    if _axes(dim, 4) != {2, 3} or dtype is not None:
        raise c.fail(f"a mean over axes {dim} is not supported (only over the spatial axes 2 and 3)")
    if keepdim:
        return Val(c.emit(None, "adaptive_avgpool2d", [x.node], output_size=1))
    return Val(c.emit(None, "global_avg_pool", [x.node]))
