"""Normalisation layers: batch norm (``nn.BatchNorm1d/2d``, ``F.batch_norm`` as timm's norm-act layers call it),
layer norm (``nn.LayerNorm``, ``F.layer_norm``, archgraph's ``MaskedLayerNorm``), ``nn.RMSNorm``, group norm
(``nn.GroupNorm``, ``F.group_norm``: timm's ``GroupNorm``/``GroupNorm1`` subclasses trace into it) and archgraph's
own ``GRN`` (timm's ``GlobalResponseNorm`` is :mod:`.timm_layers`').

>>> import torch, archgraph
>>> g, _ = archgraph.from_module(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.GroupNorm(2, 8),
...                                                  torch.nn.LeakyReLU(0.2)), input_shape=(3, 4, 4))
>>> [n.op for n in g.nodes.values()], g.nodes["n1"].num_groups, g.nodes["n2"].negative_slope
(['conv2d', 'group_norm', 'leaky_relu'], 2, 0.2)
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ....ops.registry import OPS
from .. import table
from ..arguments import ints, module_state, owner, param
from ..values import CF, CL, TND, Param, Val, layout_words


def _batchnorm(op: str):
    def handler(c, n, m, x):
        x = c.cf(x, OPS[op].in_rank)
        return Val(c.emit(None, op, [x.node], module_state(m), eps=m.eps, momentum=m.momentum, affine=m.affine,
                          track_running_stats=m.track_running_stats))
    return handler


batchnorm2d = table.modules_of("batchnorm2d")(_batchnorm("batchnorm2d"))
batchnorm1d = table.modules_of("batchnorm1d")(_batchnorm("batchnorm1d"))


@table.functions_of("batchnorm2d")
def f_batch_norm(c, n, x, *args, **kwargs):
    if n.target is torch.ops.aten.batch_norm.default:  # (x, weight, bias, running_mean, running_var, ...)
        weight, bias, mean, var, *rest = args
        return _batch_norm(c, n, x, mean, var, weight, bias, *rest[:3])
    return _batch_norm(c, n, x, *args, **kwargs)


def _batch_norm(c, n, x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                eps=1e-5):
    """``F.batch_norm`` (timm's norm-act layers): its running statistics and affine parameters are the module's
    buffers and parameters; the module that holds them gives the node id, ``momentum`` and ``num_batches_tracked``."""
    x = c.cf(x)
    rank = len(c.shape(x))
    op = next((o for o, d in OPS.items() if d.running_stats and d.in_rank == rank), None)
    if op is None:
        raise c.fail(f"batch norm of a per-sample shape {list(c.shape(x))} is not supported ([C, H, W] or [F])")
    mean, var = param(c, running_mean, "running_mean"), param(c, running_var, "running_var")
    w, b = param(c, weight, "weight"), param(c, bias, "bias")
    if mean is None or var is None or training:
        raise c.fail("a batch norm that normalises with the batch's statistics in eval mode (no running "
                     "statistics, or training=True) is not supported")
    if w is None and b is not None:
        raise c.fail("a batch norm with a bias but no weight is not supported")
    path = owner(running_mean)
    module = c.originals.get(path) if path is not None else None
    tracked = getattr(module, "num_batches_tracked", None)
    weights = {"running_mean": mean, "running_var": var,
               "num_batches_tracked": tracked if isinstance(tracked, torch.Tensor) else torch.tensor(0)}
    if w is not None:
        weights.update(weight=w, bias=b if b is not None else torch.zeros_like(w))
    mom = getattr(module, "momentum", momentum) if isinstance(module, nn.modules.batchnorm._BatchNorm) else momentum
    return Val(c.emit(path, op, [x.node], weights, eps=float(eps), momentum=mom, affine=w is not None,
                      track_running_stats=True))


def layernorm_node(c, hint: Optional[str], x, normalized_shape, eps: float, weight, bias) -> Val:
    """A ``layernorm`` node over the last axis of ``[N, F]`` or a sequence, or the channels of a channels-last
    image (whose view it keeps)."""
    x = c.tensor(x)
    if not (x.layout == CL or (x.layout in (CF, TND) and len(c.shape(x)) in (1, 2))):
        raise c.fail(f"layer norm over the last axis of a {layout_words(x)} tensor of per-sample shape "
                     f"{list(c.expected(x))} is not supported: only over features [N, F], the last axis of a "
                     f"sequence [N, T, D] or over the channels of a channels-last [N, H, W, C] tensor")
    if tuple(ints(normalized_shape)) != (c.channels(x),):
        raise c.fail(f"normalized_shape {list(ints(normalized_shape))} must be the {c.channels(x)} channels")
    weights = {}
    if weight is not None:
        weights["weight"] = weight.reshape(-1)
    if bias is not None:
        weights["bias"] = bias.reshape(-1)
    if weight is None and bias is not None:
        raise c.fail("a layer norm with a bias but no weight is not supported")
    return Val(c.emit(hint, "layernorm", [x.node], weights, eps=float(eps), elementwise_affine=weight is not None,
                      bias=bias is not None), x.layout)


@table.modules_of("layernorm")
def layernorm(c, n, m: nn.LayerNorm, x):
    if hasattr(m, "ramp") and hasattr(m, "mask"):   # archgraph's MaskedLayerNorm (add_filters init=masked)
        return _masked_layernorm(c, n, m, x)
    return layernorm_node(c, None, x, m.normalized_shape, m.eps, m.weight, m.bias)


def _masked_layernorm(c, n, m, x):
    """archgraph's own ``MaskedLayerNorm``: a layernorm with ``mask_ramp`` and its ``mask`` buffer."""
    x = c.tensor(x)
    if x.layout not in (CF, TND) or len(c.shape(x)) not in (1, 2):
        raise c.fail("a masked layer norm normalises the last axis of [N, F] or a sequence [N, T, D]")
    return Val(c.emit(None, "layernorm", [x.node], module_state(m), eps=float(m.eps),
                      elementwise_affine=m.weight is not None, bias=m.bias is not None, mask_ramp=int(m.ramp)),
               x.layout)


@table.functions_of("layernorm")
def f_layer_norm(c, n, x, normalized_shape, weight=None, bias=None, eps=1e-5, *rest):
    """``F.layer_norm``; ATen's ``layer_norm`` has a trailing ``cudnn_enable``."""
    for p in (weight, bias):
        if p is not None and not isinstance(p, Param):
            raise c.fail("a layer norm whose weight or bias is computed is not supported")
    hint = weight.name.rpartition(".")[0] if isinstance(weight, Param) and "." in weight.name else None
    return layernorm_node(c, hint, x, normalized_shape, eps, weight.tensor if weight is not None else None,
                          bias.tensor if bias is not None else None)


@table.modules_of("rmsnorm")
def rmsnorm(c, n, m, x):
    """``nn.RMSNorm`` (and archgraph's own) over the last axis of ``[N, F]`` or a sequence."""
    x = c.tensor(x)
    if x.layout not in (CF, TND) or len(c.shape(x)) not in (1, 2):
        raise c.fail(f"RMS norm of a {layout_words(x)} tensor of per-sample shape {list(c.expected(x))} is not "
                     f"supported (only [N, F] and sequences)")
    if tuple(m.normalized_shape) != (c.channels(x),):
        raise c.fail(f"normalized_shape {list(m.normalized_shape)} must be the last axis's {c.channels(x)}")
    return Val(c.emit(None, "rmsnorm", [x.node], module_state(m), eps=None if m.eps is None else float(m.eps),
                      elementwise_affine=m.weight is not None), x.layout)


@table.modules_of("grn")
def grn(c, n, m, x):
    """archgraph's own ``GRN`` (channels-first; timm's ``GlobalResponseNorm`` is :mod:`.timm_layers`')."""
    x = c.cf(x, 3)
    return Val(c.emit(None, "grn", [x.node], module_state(m), eps=float(m.eps)))


def _group_norm(c, x, num_groups, weight, bias, eps, hint):
    x = c.cf(x, 3)
    if weight is None and bias is None:
        weights, affine = {}, False
    else:
        ref = weight if weight is not None else bias
        weights = {"weight": weight if weight is not None else torch.ones_like(ref),
                   "bias": bias if bias is not None else torch.zeros_like(ref)}
        affine = True
    return Val(c.emit(hint, "group_norm", [x.node], weights, num_groups=int(num_groups), eps=float(eps),
                      affine=affine))


@table.modules_of("group_norm")
def group_norm(c, n, m: nn.GroupNorm, x):
    return _group_norm(c, x, m.num_groups, m.weight if m.affine else None, m.bias if m.affine else None, m.eps,
                       None)


@table.functions_of("group_norm")
def f_group_norm(c, n, x, num_groups, weight=None, bias=None, eps=1e-5, *rest):
    """``F.group_norm(x, g, weight, bias, eps)``; ATen's ``group_norm(x, g, weight, bias, eps, cudnn_enabled)``."""
    w, b = param(c, weight, "weight"), param(c, bias, "bias")
    return _group_norm(c, x, num_groups, w, b, eps, owner(weight if weight is not None else bias))
