"""Split attention: timm's ``SplitAttn`` (ResNeSt) and ``SelectiveKernel`` (SKNet).

Both hold a stack of ``R`` values of ``C`` channels, ``[N, R, C, H, W]`` (SplitAttn's radix groups, SelectiveKernel's
paths). The graph holds the stack as one ``[R*C, H, W]`` value seen through the importer's grouped view
``[N, g, C/g, H, W]`` (``g = R``): one conv's output reshaped (SplitAttn's ``x.reshape(B, radix, C, H, W)``), or the
concat of the paths (``torch.stack(paths, dim=1)``). Then

* the sum over the stack (``x.sum(1)``, ``torch.sum(x, dim=1)``) is an ``add`` of its ``R`` channel slices (of the
  paths themselves when the stack is their concat): existing ops, so pruning ties the ``R`` channels at one place;
* the softmax across the stack is one ``radix_softmax``: timm's ``RadixSoftmax`` (``x.view(B, cardinality, radix,
  -1).transpose(1, 2)``, ``softmax(dim=1)``, ``reshape(B, -1)``, viewed back as ``[B, R*C, 1, 1]``), or
  ``softmax(dim=1)`` of a grouped view (SelectiveKernelAttn's ``x.view(B, paths, C, 1, 1)``);
* the stack times its attention is a ``mul`` of the two grouped values (:mod:`.arithmetic`'s, for views of one
  layout).

``sum`` and ``stack`` are registered here; the reshape, transpose and softmax cases (:func:`reshape`,
:func:`transpose`, :func:`softmax`) are asked first by the handlers of those calls (:mod:`.views`,
:mod:`.hand_attention`), and return ``None`` where they do not apply.

>>> import torch, archgraph
>>> class Selective(torch.nn.Module):   # SelectiveKernel, in short
...     def __init__(self):
...         super().__init__()
...         self.a, self.b = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(3, 4, 3, padding=1)
...         self.fc = torch.nn.Conv2d(4, 8, 1)
...     def forward(self, x):
...         s = torch.stack([self.a(x), self.b(x)], dim=1)          # [N, 2, 4, H, W]
...         w = self.fc(s.sum(1).mean((2, 3), keepdim=True))        # [N, 8, 1, 1]
...         w = torch.softmax(w.view(x.shape[0], 2, 4, 1, 1), dim=1)
...         return (s * w).sum(1)
>>> g, _ = archgraph.from_module(Selective(), input_shape=(3, 6, 6))
>>> [n.op for n in g.nodes.values()]   # doctest: +NORMALIZE_WHITESPACE
['conv2d', 'conv2d', 'concat', 'add', 'adaptive_avgpool2d', 'conv2d', 'radix_softmax', 'mul', 'slice', 'slice',
 'add']
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch

from ....ops.spec import KIND_BY_OP, Concat, Flatten
from .. import table
from ..arguments import ints
from ..values import CF, GROUPED, Val, layout_words


@dataclass(frozen=True)
class RadixView:
    """The channel vector ``source`` (``[C, 1, 1]`` or ``[C]``) viewed as ``[N, cardinality, radix, C /
    (cardinality * radix)]`` on its way into timm's ``RadixSoftmax``; ``transposed``: its cardinality and radix
    axes swapped (``transpose(1, 2)``); ``done``: ``source`` is the ``radix_softmax`` node (laid out as the
    transposed view reads)."""
    source: Val
    cardinality: int
    radix: int
    transposed: bool = False
    done: bool = False


def _is(c, node: str, kind) -> bool:
    data = c.nodes.get(node)
    return data is not None and KIND_BY_OP[data["op"]] is kind


def _vector(c, x) -> bool:
    """A channels-first ``[C, 1, 1]`` or ``[C]`` value (split attention's per-channel weights)."""
    return isinstance(x, Val) and x.layout == CF and len(c.shape(x)) in (1, 3) and \
        all(s == 1 for s in c.shape(x)[1:])


def reshape(c, n, x):
    """The radix view's reshapes, and a channel vector viewed as ``[B, cardinality, radix, -1]`` or back; ``None``
    for any other reshape."""
    out = tuple(c.values[n.name].shape)
    if isinstance(x, RadixView):
        return _radix_reshape(c, x, out)
    if _vector(c, x) and out[0] == c.batch() and out[1:] != c.expected(x):
        if len(c.shape(x)) == 1 and _is(c, x.node, Flatten):   # [B, C] viewed back as the [B, C, 1, 1] flattened
            source = Val(c.nodes[x.node]["in"][0])
            if c.expected(source) == out[1:]:
                return source
        if len(out) == 4 and out[2] > 1 and math.prod(out[1:]) == c.channels(x):   # view(B, cardinality, radix, -1)
            return RadixView(x, int(out[1]), int(out[2]))
    return None


def _radix_reshape(c, x: RadixView, out: tuple) -> Val:
    if x.done and out[1:] == c.expected(x.source):
        return x.source
    if x.done and out[1:] == (c.channels(x.source),):   # reshape(B, -1)
        return Val(c.emit(None, "flatten", [x.source.node]))
    raise c.fail(f"a reshape of the radix view of '{x.source.node}' to {list(out)} is not supported (only timm's "
                 f"RadixSoftmax: view(B, cardinality, radix, -1), transpose(1, 2), softmax(dim=1), reshape(B, -1))")


def transpose(c, x, dim0, dim1) -> Optional[RadixView]:
    """RadixSoftmax's ``transpose(1, 2)`` of the radix view; ``None`` for any other value."""
    if isinstance(x, RadixView) and not x.transposed and {dim0 % 4, dim1 % 4} == {1, 2}:
        return replace(x, transposed=True)
    if isinstance(x, RadixView):
        raise c.fail(f"transpose({dim0}, {dim1}) of the radix view of '{x.source.node}' is not supported (only "
                     f"RadixSoftmax's transpose(1, 2))")
    return None


def softmax(c, x, dim, dtype):
    """A softmax across the stack: the transposed radix view's axis 1, or a grouped view's; ``None`` for a value
    that is neither a radix view nor a graph value (attention's scores)."""
    if isinstance(x, RadixView) and x.transposed and not x.done and dim is not None and dim % 4 == 1 and \
            dtype is None:
        node = c.emit(None, "radix_softmax", [x.source.node], radix=x.radix, cardinality=x.cardinality)
        return replace(x, source=Val(node), done=True)
    if isinstance(x, Val) and x.layout == GROUPED and dim is not None and dim % 5 == 1 and dtype is None:
        return Val(c.emit(None, "radix_softmax", [x.node], radix=x.groups), GROUPED, x.groups)
    if isinstance(x, (RadixView, Val)):
        raise c.fail(f"a softmax over axis {dim} of a {_words(c, x)} is not supported (only across split "
                     f"attention's radix groups or selective kernel's paths, and over attention's keys)")
    return None


def _words(c, x) -> str:
    if isinstance(x, RadixView):
        return f"radix view of '{x.source.node}'"
    return f"{layout_words(x)} tensor of per-sample shape {list(c.expected(x))}"


@table.function(torch.sum)
@table.method("sum")
def stack_sum(c, n, x, dim=None, keepdim=False, *, dtype=None, out=None):
    """The sum over a stack's group axis: an ``add`` of its groups (the stacked paths, or slices of one value)."""
    dims = {d % 5 for d in ints(dim)} if dim is not None else set()
    if not (isinstance(x, Val) and x.layout == GROUPED and dims == {1} and not keepdim and dtype is None):
        words = _words(c, x) if isinstance(x, (RadixView, Val)) else type(x).__name__
        raise c.fail(f"a sum over axes {dim} of a {words} is not supported (only over the group axis of a stack "
                     f"[N, g, C/g, H, W], dim=1: split attention's radix groups, selective kernel's paths)")
    parts = _parts(c, x)
    return Val(parts[0] if len(parts) == 1 else c.emit(None, "add", parts))


def _parts(c, x: Val) -> list[str]:
    """The ids of the ``groups`` values a grouped view stacks: the inputs of a concat of them, else slices."""
    per = c.channels(x) // x.groups
    data = c.nodes.get(x.node)
    if _is(c, x.node, Concat) and len(data["in"]) == x.groups and all(c.shapes[i][0] == per for i in data["in"]):
        return list(data["in"])
    if x.groups == 1:
        return [x.node]
    return [c.emit(None, "slice", [x.node], start=k * per, stop=(k + 1) * per) for k in range(x.groups)]


@table.function(torch.stack)
def stack(c, n, tensors, dim=0, *, out=None):
    """``torch.stack(paths, dim=1)`` of ``[N, C, H, W]`` tensors: their concat, seen grouped by path."""
    vals = [c.cf(t, 3, "stacked tensor") for t in tensors]
    if dim % 5 != 1 or len({c.shape(v) for v in vals}) != 1:
        raise c.fail(f"a stack along axis {dim} is not supported (only of [N, C, H, W] tensors of one shape along "
                     f"axis 1: selective kernel's paths)")
    return Val(c.emit(None, "concat", [v.node for v in vals]), GROUPED, len(vals))
