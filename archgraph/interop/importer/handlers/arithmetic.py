"""Arithmetic on graph values: ``+``, ``-``, ``*``, ``/`` and concatenation. Two tensors make an ``add``/``mul``
(``a - b`` is ``add(a, scale(b, -1))``, exact: negation is exact in floating point); a tensor and a number a
constant ``scale``; a tensor and a parameter a per-channel ``scale``, a ``position_embedding`` (a sequence plus a
table) or a ``class_token`` (tokens concatenated before a sequence)."""
from __future__ import annotations

import operator
from typing import Sequence

import torch

from .. import table
from ..arguments import number
from ..values import CF, CL, GROUPED, GROUPED_T, HAND, TND, Param, Unconverted, Val, layout_words
from . import hand_attention


def binary(c, n, op: str, a, b, alpha=1) -> Val:
    """``op`` (``add``, ``mul``) of two graph values of one layout."""
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
        raise c.fail(f"its inputs have different layouts ({layout_words(a)} and {layout_words(b)})")
    if a.layout in (GROUPED, GROUPED_T) and c.channels(a) != c.channels(b):
        # grouped views of as many channels are laid out alike (split attention's stack times its attention), so
        # the op on the values they view is the op on the views; others would broadcast across the groups
        raise c.fail(f"{op} of {layout_words(a)} views of {c.channels(a)} and {c.channels(b)} channels is not "
                     f"supported (only of views of as many channels)")
    return Val(c.emit(None, op, [a.node, b.node]), a.layout, a.groups)


def _scale(c, n, x: Val, weight: Param) -> Val:
    if x.layout not in (CF, CL):
        raise c.fail(f"scaling a {layout_words(x)} view is not supported")
    channels = c.channels(x)
    rank = len(c.expected(x)) + 1
    shape = tuple(weight.tensor.shape)
    per_channel = [1] * rank
    per_channel[c.channel_axis(x)[0]] = channels
    if weight.tensor.numel() == 1 and channels > 1:  # one number for every channel
        weight = Param(weight.name, weight.tensor.reshape(1).expand(channels).clone())
        shape = (channels,) if x.layout == CL else (channels, 1, 1)[:rank - 1]
    if weight.tensor.numel() != channels or tuple(per_channel[rank - len(shape):]) != shape or \
            any(s != 1 for s in per_channel[:rank - len(shape)]):
        raise c.fail(f"multiplying by the parameter '{weight.name}' of shape {list(shape)} is not a per-channel "
                     f"scale of the {channels} channels")
    return Val(c.emit(weight.name, "scale", [x.node], {"weight": weight.tensor.reshape(-1)}), x.layout)


def constant_scale(c, n, x: Val, factor: float) -> Val:
    """``x * factor`` for a number: ``x`` itself when it is 1, else a ``scale`` node whose weights all hold
    ``factor`` (exact in eval; the graph can then learn them)."""
    if factor == 1:
        return x
    if x.layout not in (CF, CL):
        raise c.fail(f"scaling a {layout_words(x)} view is not supported")
    weight = torch.full((c.channels(x),), float(factor))
    return Val(c.emit(None, "scale", [x.node], {"weight": weight}, init=float(factor)), x.layout)


@table.functions_of("add")
def add(c, n, a, b, *rest, alpha=1, out=None):
    for x, other in ((a, b), (b, a)):
        if isinstance(x, Val) and number(other) and other == 0:
            return x   # x + 0
        if isinstance(x, Val) and isinstance(other, Param) and x.layout in (CF, TND) and len(c.shape(x)) == 2 \
                and alpha == 1:
            return _position(c, x, other)
    return binary(c, n, "add", a, b, alpha)


def _position(c, x: Val, positions: Param) -> Val:
    """A sequence plus a learned ``[T, D]`` table (``[1, T, D]``; ``[T, 1, D]`` time-first; a slice of a longer
    one, or an ``nn.Embedding`` of ``arange(T)``, is a constant of that shape): a ``position_embedding``."""
    t, d = c.shape(x)
    want = (t, d) if x.layout == CF else (t, 1, d)
    shape = tuple(positions.tensor.shape)
    lead = shape[:len(shape) - len(want)]
    if shape[len(lead):] != want or any(s != 1 for s in lead) or (x.layout == TND and len(shape) < 3):
        words = "[T, D] or [1, T, D]" if x.layout == CF else "[T, 1, D]"
        raise c.fail(f"adding the parameter '{positions.name}' of shape {list(shape)} to a {layout_words(x)} "
                     f"sequence of {t} tokens of {d} features is not a position table ({words})")
    return Val(c.emit(positions.name, "position_embedding", [x.node], {"weight": positions.tensor.reshape(t, d)}),
               x.layout)


@table.function(operator.sub, operator.isub, torch.sub, torch.ops.aten.sub.Tensor)
@table.method("sub", "__sub__", "sub_")
def sub(c, n, a, b, *rest, alpha=1, out=None):
    """``a - alpha * b``: ``b`` scaled by ``-alpha`` and added; ``a - 0`` is ``a``."""
    if isinstance(a, Val) and number(b) and b == 0:
        return a
    if not (isinstance(a, Val) and isinstance(b, Val)):
        raise c.fail("only a difference of two tensors (or x - 0) is supported")
    return binary(c, n, "add", a, constant_scale(c, n, b, -float(alpha)))


@table.functions_of("mul")
def mul(c, n, a, b, *rest, out=None):
    for x, other in ((a, b), (b, a)):
        if isinstance(x, HAND) and number(other):
            return hand_attention.hand_scale(c, x, float(other))
    vals = [v for v in (a, b) if isinstance(v, Val)]
    params = [v for v in (a, b) if isinstance(v, Param)]
    if len(vals) == 1 and len(params) == 1:
        return _scale(c, n, vals[0], params[0])
    numbers = [v for v in (a, b) if number(v)]
    if len(vals) == 1 and len(numbers) == 1:
        return constant_scale(c, n, vals[0], numbers[0])
    return binary(c, n, "mul", a, b)


@table.functions_of("scale")
def div(c, n, a, b, *rest, rounding_mode=None, out=None):
    """``x / number`` (a constant scale); ``x / tensor`` has no graph op."""
    if isinstance(a, HAND) and number(b) and b != 0:
        return hand_attention.hand_scale(c, a, 1.0 / b)
    if isinstance(a, Val) and number(b) and b != 0 and rounding_mode is None:
        return constant_scale(c, n, a, 1.0 / b)
    raise c.fail("only a division by a non-zero number is supported")


@table.functions_of("concat")
def cat(c, n, tensors, dim=0, *, out=None):
    if len(tensors) >= 2 and all(isinstance(t, Param) for t in tensors[:-1]) and isinstance(tensors[-1], Val):
        return _class_token(c, tensors[-1], tensors[:-1], dim)
    vals = [c.tensor(t) for t in tensors]
    layouts = {(v.layout, v.groups) for v in vals}
    if len(layouts) != 1 or vals[0].layout not in (CF, CL):
        raise c.fail("concatenation is supported for tensors of one layout, channels-first or channels-last")
    if dim not in c.channel_axis(vals[0]):
        raise c.fail(f"concatenation along axis {dim} is not supported (only along the channels)")
    return Val(c.emit(None, "concat", [v.node for v in vals]), vals[0].layout)


def _class_token(c, x: Val, tokens: Sequence[Param], dim) -> Val:
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
    rows = torch.cat([t.tensor[0] for t in tokens])
    return Val(c.emit(tokens[0].name, "class_token", [x.node], {"weight": rows}, tokens=int(rows.shape[0])))
