"""Importing timm's small layers that are one op each, kept whole by the tracer and converted from their parameters.

* timm's ``GlobalResponseNorm`` (ConvNeXt-V2's GRN, ``timm.layers.grn``) -> ``grn``, on a channels-first image
  (``channels_last=False``, the ``conv_mlp`` ConvNeXt-V2s: atto to nano) or on the channels-last view of one
  (``channels_last=True``, inside ``permute -> LayerNorm -> Linear -> ... -> permute``; the node keeps that view);
* timm's ``LearnableAffineBlock`` (HGNet-V2's ``scale * x + bias`` with two learnable numbers,
  ``timm.models.hgnet``) -> ``scale`` with ``shared`` and ``bias``, in any layout (one number for every channel);
* archgraph's own ``Scale`` (a built graph imported back) gives its node back.

The timm classes are registered by their module and name, so nothing here imports timm: a model holding one has
imported it already. Any other use of their internals is an error naming the module, as everywhere in the importer.

>>> import torch, archgraph
>>> from archgraph.fx import layers
>>> g, w = archgraph.from_module(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), layers.Scale(4, bias=True, shared=True),
...                                                  layers.GRN(4)), input_shape=(3, 5, 5))
>>> [(n.op, n.fields().get("shared")) for n in g.nodes.values()], list(w["n1.weight"].shape)
([('conv2d', None), ('scale', True), ('grn', None)], [1])
"""
from __future__ import annotations

from ....fx import layers
from .. import table
from ..values import CF, CL, TND, Val, layout_words

GRN_CLASS = "timm.layers.grn.GlobalResponseNorm"
AFFINE_CLASS = "timm.models.hgnet.LearnableAffineBlock"


@table.module(GRN_CLASS)
def global_response_norm(c, n, m, x):
    """timm's ``GlobalResponseNorm``: its norm over ``spatial_dim`` and mean over ``channel_dim`` must be those of
    the image ``x`` is (channels-first ``(2, 3)`` and 1, or channels-last ``(1, 2)`` and -1)."""
    x = c.tensor(x)
    words = layout_words(x)
    if x.layout not in (CF, CL) or len(c.shape(x)) != 3:
        raise c.fail(f"GlobalResponseNorm of a {words} tensor of per-sample shape {list(c.expected(x))} is not "
                     f"supported (only an image [N, C, H, W] or its channels-last view [N, H, W, C])")
    spatial, channel = tuple(int(d) % 4 for d in m.spatial_dim), int(m.channel_dim) % 4
    want = ((2, 3), 1) if x.layout == CF else ((1, 2), 3)
    if (tuple(sorted(spatial)), channel) != want:
        raise c.fail(f"GlobalResponseNorm with spatial_dim {list(m.spatial_dim)} and channel_dim {m.channel_dim} "
                     f"does not normalise the positions and channels of its {words} input "
                     f"(channels_last={x.layout == CL} would)")
    if tuple(m.weight.shape) != (c.channels(x),) or tuple(m.bias.shape) != (c.channels(x),):
        raise c.fail(f"its weight {list(m.weight.shape)} and bias {list(m.bias.shape)} must have one entry per "
                     f"channel ({c.channels(x)})")
    return Val(c.emit(None, "grn", [x.node], {"weight": m.weight, "bias": m.bias}, eps=float(m.eps)), x.layout)


@table.module(AFFINE_CLASS)
def learnable_affine(c, n, m, x):
    """timm's ``LearnableAffineBlock``: ``scale * x + bias``, both ``[1]``."""
    x = c.tensor(x)
    if m.scale.numel() != 1 or m.bias.numel() != 1:
        raise c.fail(f"a LearnableAffineBlock with scale {list(m.scale.shape)} and bias {list(m.bias.shape)} is not "
                     f"supported (only one number each)")
    return Val(c.emit(None, "scale", [x.node], {"weight": m.scale.reshape(1), "bias": m.bias.reshape(1)},
                      bias=True, shared=True), x.layout, x.groups)


@table.module(layers.Scale)
def own_scale(c, n, m: layers.Scale, x):
    """archgraph's own ``Scale``: per channel on an image or ``[N, F]`` (channels-first) or a sequence; shared in
    any layout."""
    x = c.tensor(x)
    if not m.shared and x.layout not in (CF, TND):
        raise c.fail(f"archgraph's Scale multiplies axis 1 of an image (the last axis of a sequence); its input "
                     f"is a {layout_words(x)} view")
    state = {"weight": m.weight} if m.bias is None else {"weight": m.weight, "bias": m.bias}
    return Val(c.emit(None, "scale", [x.node], state, init=float(m.init), bias=m.bias is not None,
                      shared=bool(m.shared)), x.layout, x.groups)
