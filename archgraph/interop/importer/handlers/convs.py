"""Convolutions, resampling and padding of images: ``nn.Conv2d`` / ``F.conv2d``, ``nn.ConvTranspose2d``,
``nn.Upsample`` / ``F.interpolate``, ``nn.ConstantPad2d`` / ``F.pad`` (a channels-last image's padding is
:mod:`.channels_last`'s)."""
from __future__ import annotations

import torch
from torch import nn

from .. import table
from ..arguments import ints, module_state, owner, pair, param
from ..values import Val
from . import channels_last


@table.modules_of("conv2d")
def conv2d(c, n, m: nn.Conv2d, x, *rest):
    x = c.cf(x, 3)
    if m.padding_mode != "zeros":
        raise c.fail(f"padding_mode='{m.padding_mode}' is not supported (only 'zeros')")
    padding = m.padding if isinstance(m.padding, str) else pair(m.padding)
    return Val(c.emit(None, "conv2d", [x.node], module_state(m), out_channels=m.out_channels,
                      kernel_size=pair(m.kernel_size), stride=pair(m.stride), padding=padding,
                      dilation=pair(m.dilation), groups=m.groups, bias=m.bias is not None))


@table.functions_of("conv2d")
def f_conv2d(c, n, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    x = c.cf(x, 3)
    w, b = param(c, weight, "weight"), param(c, bias, "bias")
    if w is None or w.dim() != 4:
        raise c.fail("F.conv2d needs a 4-D weight parameter")
    weights = {"weight": w} if b is None else {"weight": w, "bias": b}
    padding = padding if isinstance(padding, str) else pair(padding)
    return Val(c.emit(owner(weight), "conv2d", [x.node], weights, out_channels=int(w.shape[0]),
                      kernel_size=pair(tuple(w.shape[2:])), stride=pair(stride), padding=padding,
                      dilation=pair(dilation), groups=int(groups), bias=b is not None))


@table.modules_of("conv_transpose2d")
def conv_transpose2d(c, n, m: nn.ConvTranspose2d, x, output_size=None):
    x = c.cf(x, 3)
    if m.padding_mode != "zeros":
        raise c.fail(f"padding_mode='{m.padding_mode}' is not supported (only 'zeros')")
    if output_size is not None:
        raise c.fail("a transposed conv called with output_size is not supported (set output_padding instead)")
    return Val(c.emit(None, "conv_transpose2d", [x.node], module_state(m), out_channels=m.out_channels,
                      kernel_size=pair(m.kernel_size), stride=pair(m.stride), padding=pair(m.padding),
                      output_padding=pair(m.output_padding), groups=m.groups, dilation=pair(m.dilation),
                      bias=m.bias is not None))


def _upsample(c, x, size, scale_factor, mode, align_corners, recompute_scale_factor=None):
    x = c.cf(x, 3)
    if mode not in ("nearest", "bilinear"):
        raise c.fail(f"upsampling mode '{mode}' is not supported (only nearest and bilinear)")
    fields: dict = {"mode": mode}
    if size is not None:
        fields["size"] = pair(size)
    else:
        f = tuple(float(v) for v in scale_factor) if isinstance(scale_factor, (tuple, list)) else float(scale_factor)
        if recompute_scale_factor:   # the output size is floor(size * f) either way; only the sampling differs
            h, w = c.shape(x)[1:]
            fh, fw = (f, f) if isinstance(f, float) else f
            fields["size"] = [int(h * fh), int(w * fw)]
        else:
            fields["scale_factor"] = f[0] if isinstance(f, tuple) and f[0] == f[1] else f
    if mode == "bilinear" and align_corners is not None:
        fields["align_corners"] = bool(align_corners)
    return Val(c.emit(None, "upsample", [x.node], **fields))


@table.modules_of("upsample")
def upsample(c, n, m: nn.Upsample, x):
    align = True if isinstance(m, nn.UpsamplingBilinear2d) else m.align_corners   # it always aligns the corners
    return _upsample(c, x, m.size, m.scale_factor, m.mode, align, m.recompute_scale_factor)


@table.functions_of("upsample")
def f_interpolate(c, n, x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                  recompute_scale_factor=None, antialias=False):
    if antialias:
        raise c.fail("antialias=True is not supported")
    return _upsample(c, x, size, scale_factor, mode, align_corners, recompute_scale_factor)


@table.modules_of("pad")
def pad_module(c, n, m: nn.ConstantPad2d, x):
    return _pad(c, n, x, m.padding, "constant", m.value)


def _pad(c, n, x, pad, mode="constant", value=None):
    x = c.cf(x, 3)
    pad = ints(pad)
    if mode != "constant":
        raise c.fail(f"padding mode '{mode}' is not supported (only 'constant')")
    if len(pad) not in (2, 4) or min(pad) < 0:
        raise c.fail(f"padding {list(pad)} is not supported (only non-negative padding of the last two axes)")
    pad = (*pad, 0, 0) if len(pad) == 2 else pad
    if not any(pad):
        return x
    return Val(c.emit(None, "pad", [x.node], padding=list(pad), value=float(value or 0.0)))


@table.functions_of("pad")
def f_pad(c, n, x, pad, *args, **kwargs):
    """``F.pad(x, pad, mode, value)``; ATen's ``constant_pad_nd(x, pad, value)``."""
    value = kwargs.get("value", args[1] if len(args) > 1 else None)
    mode = kwargs.get("mode", args[0] if args else "constant")
    if n.target is torch.ops.aten.constant_pad_nd.default:   # (x, pad, value)
        mode, value = "constant", (args[0] if args else kwargs.get("value", 0.0))
    special = channels_last.pad(c, x, pad, mode, value)
    if special is not None:
        return special
    if n.target is torch.ops.aten.constant_pad_nd.default:
        return _pad(c, n, x, ints(pad), "constant", *args, **kwargs)
    return _pad(c, n, x, ints(pad), *args, **kwargs)
