"""Layers that change no shape: dropout (of a tensor, or of hand-written attention's probabilities), stochastic
depth, ``nn.Identity``, and the elementwise ops whose function form carries a field (``F.gelu``'s
``approximate``, ``F.leaky_relu``'s ``negative_slope``). Other elementwise ops take :mod:`..elementwise`'s
defaults."""
from __future__ import annotations

from dataclasses import replace

from torch import nn

from .. import table
from ..elementwise import f_unary
from ..values import HAND, Attended, Val


@table.modules_of("dropout")
def dropout(c, n, m: nn.Dropout, x):
    if isinstance(x, Attended) and x.stage == "probs":   # attention dropout, on the probabilities
        return replace(x, dropout=float(m.p))
    x = c.tensor(x)
    return Val(c.emit(None, "dropout", [x.node], p=float(m.p)), x.layout, x.groups)


@table.functions_of("dropout")
def f_dropout(c, n, x, p=0.5, training=False, inplace=False):
    if training:
        raise c.fail("F.dropout with training=True is not a layer (use nn.Dropout)")
    if isinstance(x, Attended) and x.stage == "probs":
        return replace(x, dropout=float(p))
    x = c.tensor(x)
    return Val(c.emit(None, "dropout", [x.node], p=float(p)), x.layout)


@table.modules_of("identity")
def identity(c, n, m, x, *rest, **kw):
    return x if isinstance(x, HAND) else c.tensor(x)


@table.functions_of("stochastic_depth")
def f_stochastic_depth(c, n, x, p, mode, training=True):
    x = c.tensor(x)
    return Val(c.emit(None, "stochastic_depth", [x.node], p=float(p), mode=mode), x.layout)


@table.functions_of("gelu")
def f_gelu(c, n, x, approximate="none"):
    x = c.tensor(x)
    return Val(c.emit(None, "gelu", [x.node], approximate=approximate), x.layout)


def _slope(args, kwargs) -> float:
    return float(args[0] if args else kwargs.get("negative_slope", 0.01))


f_leaky_relu = table.functions_of("leaky_relu")(f_unary("leaky_relu", negative_slope=_slope))
