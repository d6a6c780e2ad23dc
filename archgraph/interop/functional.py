"""Importer handlers for functional forms and small compositions that map onto existing ops.

* ``nn.GroupNorm``, ``F.group_norm`` and ATen's ``group_norm`` -> ``group_norm`` (timm's ``GroupNorm``/``GroupNorm1``
  subclasses trace into ``F.group_norm``);
* ``F.leaky_relu`` (and ATen's) -> ``leaky_relu`` with its ``negative_slope``;
* ``a - b`` of two tensors -> ``add(a, scale(b, -1))`` (exact: negation is exact in floating point), ``a - 0`` -> a;
* the mean over the positions of a channels-last image (``x.mean((1, 2))``, MambaOut's head) -> ``global_avg_pool``;
* ``F.pad`` of a channels-last image that leaves the channels alone (``F.pad(x, (0, 0, l, r, t, b))``, TinyViT's
  window padding) -> ``pad`` of the image, still seen channels-last;
* a channels-last image reshaped to ``[N, H*W, C]`` (PVT-v2) -> ``to_tokens``.

Each handler falls back to :mod:`archgraph.interop.importer`'s own where the pattern does not match. Importing this
module registers them in the importer's tables; the importer imports it before its first trace (``_functions``).

>>> import torch, archgraph
>>> g, _ = archgraph.from_module(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.GroupNorm(2, 8),
...                                                  torch.nn.LeakyReLU(0.2)), input_shape=(3, 4, 4))
>>> [n.op for n in g.nodes.values()], g.nodes["n1"].num_groups, g.nodes["n2"].negative_slope
(['conv2d', 'group_norm', 'leaky_relu'], 2, 0.2)
"""
from __future__ import annotations

import operator

import torch
from torch import nn

from . import importer as I
from ..fx.torchnames import resolve
from ..ops.registry import OPS


def _group_norm(c, n, x, num_groups, weight, bias, eps, hint):
    x = c.cf(x, 3)
    if weight is None and bias is None:
        state, affine = {}, False
    else:
        ref = weight if weight is not None else bias
        state = {"weight": weight if weight is not None else torch.ones_like(ref),
                 "bias": bias if bias is not None else torch.zeros_like(ref)}
        affine = True
    return I.Val(c.emit(hint, "group_norm", [x.node], state, num_groups=int(num_groups), eps=float(eps),
                        affine=affine))


def group_norm_module(c, n, m: nn.GroupNorm, x):
    return _group_norm(c, n, x, m.num_groups, m.weight if m.affine else None, m.bias if m.affine else None, m.eps,
                       None)


def f_group_norm(c, n, x, num_groups, weight=None, bias=None, eps=1e-5, *rest):
    """``F.group_norm(x, g, weight, bias, eps)``; ATen's ``group_norm(x, g, weight, bias, eps, cudnn_enabled)``."""
    w, b = I._param(c, weight, "weight"), I._param(c, bias, "bias")
    return _group_norm(c, n, x, num_groups, w, b, eps, I._owner(weight if weight is not None else bias))


def _slope(args, kwargs) -> float:
    return float(args[0] if args else kwargs.get("negative_slope", 0.01))


def f_sub(c, n, a, b, *rest, alpha=1, out=None):
    """``a - alpha * b``: ``b`` scaled by ``-alpha`` and added; ``a - 0`` is ``a``."""
    if isinstance(a, I.Val) and I._number(b) and b == 0:
        return a
    if not (isinstance(a, I.Val) and isinstance(b, I.Val)):
        raise c.fail("only a difference of two tensors (or x - 0) is supported")
    return I._binary(c, n, "add", a, I._constant_scale(c, n, b, -float(alpha)))


def f_mean(c, n, x, dim=None, keepdim=False, *, dtype=None, out=None):
    if isinstance(x, I.Val) and x.layout == I.CL and dim is not None and dtype is None and \
            {d % 4 for d in I._ints(dim)} == {1, 2}:
        if keepdim:   # [N, 1, 1, C]: the channels-last view of [C, 1, 1]
            return I.Val(c.emit(None, "adaptive_avgpool2d", [x.node], output_size=1), I.CL)
        return I.Val(c.emit(None, "global_avg_pool", [x.node]))
    return I.f_mean(c, n, x, dim, keepdim, dtype=dtype, out=out)


def f_pad(c, n, x, pad, *args, **kwargs):
    value = kwargs.get("value", args[1] if len(args) > 1 else None)
    mode = kwargs.get("mode", args[0] if args else "constant")
    if n.target is torch.ops.aten.constant_pad_nd.default:   # (x, pad, value)
        mode, value = "constant", (args[0] if args else kwargs.get("value", 0.0))
    pad = I._ints(pad)
    if isinstance(x, I.Val) and x.layout == I.CL and len(pad) == 6 and pad[:2] == (0, 0) and mode == "constant" \
            and min(pad) >= 0:
        if not any(pad):
            return x
        return I.Val(c.emit(None, "pad", [x.node], padding=list(pad[2:]), value=float(value or 0.0)), I.CL)
    return I.f_pad(c, n, x, pad, *args, **kwargs)


def f_reshape(c, n, x, *shape):
    out = tuple(c.values[n.name].shape)
    if isinstance(x, I.Val) and x.layout == I.CL:
        ch, h, w = c.shape(x)
        if out[1:] == (h * w, ch):
            return I.Val(c.emit(None, "to_tokens", [x.node]))
    return I.f_reshape(c, n, x, *shape)


#: handlers by op, for the importer's ``FUNCTION_HANDLERS`` (functions and methods) and ``MODULE_HANDLERS``
FUNCTION_HANDLERS = {"group_norm": f_group_norm, "leaky_relu": I.f_unary("leaky_relu", negative_slope=_slope),
                     "global_avg_pool": f_mean, "pad": f_pad}
MODULE_HANDLERS = {"group_norm": group_norm_module}
_A = torch.ops.aten
#: compositions and views: functions and methods that make no op of their own name
FUNCTIONS = {operator.sub: f_sub, operator.isub: f_sub, torch.sub: f_sub, _A.sub.Tensor: f_sub,
             torch.reshape: f_reshape, _A.view.default: f_reshape, _A.reshape.default: f_reshape}
METHODS = {"sub": f_sub, "__sub__": f_sub, "sub_": f_sub, "view": f_reshape, "reshape": f_reshape}


def register() -> None:
    """Put these handlers in the importer's tables (idempotent)."""
    I.FUNCTION_HANDLERS.update(FUNCTION_HANDLERS)
    I.MODULE_HANDLERS.update(MODULE_HANDLERS)
    for op, handler in MODULE_HANDLERS.items():
        for cls in OPS[op].imports.modules:
            I.MODULES[resolve(cls)] = handler
    for op, handler in FUNCTION_HANDLERS.items():
        for name in OPS[op].imports.methods:
            I.METHODS[name] = handler
    I.VIEW_FUNCTIONS.update(FUNCTIONS)
    I.VIEW_METHODS.update(METHODS)
    I.METHODS.update(METHODS)
    I._FUNCTIONS = None   # rebuilt on first use


register()
