"""Calls on the channels-last view ``[N, H, W, C]`` of an image that map onto existing ops (timm's models):

* the mean over its positions (``x.mean((1, 2))``, MambaOut's head) -> ``global_avg_pool``;
* ``F.pad`` that leaves the channels alone (``F.pad(x, (0, 0, l, r, t, b))``, TinyViT's window padding) -> ``pad``
  of the image, still seen channels-last;
* a reshape to ``[N, H*W, C]`` (PVT-v2) -> ``to_tokens``.

These are cases the handlers of ``mean`` (:mod:`.pooling`), ``pad`` (:mod:`.convs`) and ``reshape``
(:mod:`.views`) ask first; each returns ``None`` where it does not apply.
"""
from __future__ import annotations

from typing import Optional

from ..arguments import ints
from ..values import CL, Val


def mean(c, x, dim, keepdim, dtype) -> Optional[Val]:
    """``x.mean((1, 2))`` of a channels-last image: a ``global_avg_pool`` (with ``keepdim``: a 1x1 average pool,
    still channels-last)."""
    if isinstance(x, Val) and x.layout == CL and dim is not None and dtype is None and \
            {d % 4 for d in ints(dim)} == {1, 2}:
        if keepdim:   # [N, 1, 1, C]: the channels-last view of [C, 1, 1]
            return Val(c.emit(None, "adaptive_avgpool2d", [x.node], output_size=1), CL)
        return Val(c.emit(None, "global_avg_pool", [x.node]))
    return None


def pad(c, x, pad, mode, value) -> Optional[Val]:
    """``F.pad(x, (0, 0, left, right, top, bottom))`` of a channels-last image: a ``pad`` of the image."""
    pad = ints(pad)
    if isinstance(x, Val) and x.layout == CL and len(pad) == 6 and pad[:2] == (0, 0) and mode == "constant" \
            and min(pad) >= 0:
        if not any(pad):
            return x
        return Val(c.emit(None, "pad", [x.node], padding=list(pad[2:]), value=float(value or 0.0)), CL)
    return None


def reshape(c, n, x) -> Optional[Val]:
    """A channels-last image reshaped to ``[N, H*W, C]``: its positions as tokens."""
    out = tuple(c.values[n.name].shape)
    if isinstance(x, Val) and x.layout == CL:
        ch, h, w = c.shape(x)
        if out[1:] == (h * w, ch):
            return Val(c.emit(None, "to_tokens", [x.node]))
    return None
