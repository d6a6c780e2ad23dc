"""Normalisations and per-channel affines: batch, layer, RMS and group norms, GRN and layer scale."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .common import A_, ACT, EXTRA, F_, NORM_COLOUR, bad, channel_width, need_rank, need_ranks, rank_shape
from .node import Bool, Float, NodeSpec, PositiveFloat, PositiveInt, Probability
from .opdef import Build, Coupling, Export, Imports, OpDef, RewriteFacts, Sizes, Traits

# ---- node kinds ------------------------------------------------------------------------------------------------


class _BatchNorm(NodeSpec):
    """The fields of both batchnorms (``torch.nn.BatchNorm2d``/``1d``'s)."""
    eps: PositiveFloat = 1e-5
    momentum: Optional[Probability] = 0.1
    affine: Bool = True
    track_running_stats: Bool = True


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over the channels of a ``[C, H, W]`` input."""
    op: Literal["batchnorm2d"] = "batchnorm2d"


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over the features of a ``[F]`` input."""
    op: Literal["batchnorm1d"] = "batchnorm1d"


class LayerNorm(NodeSpec):
    """Layer normalisation over the features of ``[F]``, over the last axis of a sequence ``[T, D]``, or over the
    channels of ``[C, H, W]`` at each position (the channels-first LayerNorm of ConvNeXt).

    ``mask_ramp`` (set by ``add_filters(init=masked)``, MSG's masked growth): the norm holds a per-channel ``mask``
    buffer (0 for channels that are entering, 1 for the others), takes its mean and variance over the channels
    weighted by it and multiplies its output by it; each training forward pass moves every entry ``1/mask_ramp``
    closer to 1. With every entry 1 it is a plain layer norm; at 0 a channel changes nothing."""
    op: Literal["layernorm"] = "layernorm"
    eps: PositiveFloat = 1e-5
    elementwise_affine: Bool = True
    bias: Bool = True
    mask_ramp: Optional[PositiveInt] = Field(None, description="with a per-channel mask buffer that ramps to 1 "
                                                               "over this many training forward passes")


class RMSNorm(NodeSpec):
    """Root-mean-square normalisation (``torch.nn.RMSNorm``) over the features of ``[F]`` or the last axis of a
    sequence ``[T, D]``: ``x / sqrt(mean(x**2) + eps) * weight``; ``eps`` None is the dtype's machine epsilon.
    ``offset``: the gain is ``offset + weight`` (Gemma's norms: ``1 + weight``, a weight of zeros the identity)."""
    op: Literal["rmsnorm"] = "rmsnorm"
    eps: Optional[PositiveFloat] = None
    elementwise_affine: Bool = True
    offset: Float = 0.0


class GroupNorm(NodeSpec):
    """``nn.GroupNorm`` over ``[C, H, W]``: the channels split into ``num_groups`` groups of ``C / num_groups``, each
    normalised over its channels and positions, then a per-channel affine (``weight``, ``bias`` ``[C]``)."""
    op: Literal["group_norm"] = "group_norm"
    num_groups: PositiveInt
    eps: PositiveFloat = 1e-5
    affine: Bool = True


class GRN(NodeSpec):
    """Global response normalisation of ``[C, H, W]`` (ConvNeXt-V2's GRN, timm's ``GlobalResponseNorm``): each
    channel's L2 norm over the positions ``g[c]``, divided by the mean of the ``g`` over the channels plus ``eps``,
    is ``n[c]``; the output is ``x + bias + weight * x * n`` with ``weight`` and ``bias`` ``[C]`` (both starting at
    zero, so a new GRN is the identity)."""
    op: Literal["grn"] = "grn"
    eps: PositiveFloat = 1e-6


class Scale(NodeSpec):
    """A learnable per-channel multiplier (ConvNeXt's layer scale, timm's ``LayerScale``): ``x * weight`` with one
    weight per channel of a ``[C, H, W]`` input (per feature of ``[F]``, per feature of each token of a sequence
    ``[T, D]``); the weights start at ``init``. ``bias``: plus a learnable ``bias`` of the same shape, starting at
    zero (``x * weight + bias``). ``shared``: one weight (and bias) ``[1]`` for every channel instead of one per
    channel (timm's ``LearnableAffineBlock`` in HGNet-V2: ``scale * x + bias`` with two learnable numbers)."""
    op: Literal["scale"] = "scale"
    init: Float = 1.0
    bias: Bool = False
    shared: Bool = False


BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


# ---- facts ----------------------------------------------------------------------------------------------------


def ln_shape(node, ins):
    if len(ins[0]) not in (1, 2, 3):
        bad("in", f"needs a [F], [T, D] or [C, H, W] input, got {list(ins[0])}")
    if getattr(node, "mask_ramp", None) is not None and len(ins[0]) == 3:
        bad("mask_ramp", f"a masked layer norm normalises [F] or [T, D], not the channels of {list(ins[0])}")
    return tuple(ins[0])


def group_norm_shape(node: GroupNorm, ins):
    c = need_rank(ins, 3, "group_norm")[0]
    if c % node.num_groups:
        bad("num_groups", f"num_groups={node.num_groups} does not divide the {c} input channels")
    return tuple(ins[0])


def last_axis_shape(node, ins):
    return tuple(need_ranks(ins, (1, 2), node.op))


def bn_params(node, ins, out):
    return 2 * ins[0][0] if node.affine else 0


def ln_params(node: LayerNorm, ins, out):
    if not node.elementwise_affine:
        return 0
    return channel_width(ins[0]) * (2 if node.bias else 1)


def gn_params(node: GroupNorm, ins, out):
    return 2 * ins[0][0] if node.affine else 0


def rms_params(node: RMSNorm, ins, out):
    return channel_width(ins[0]) if node.elementwise_affine else 0


def scale_params(node: Scale, ins, out):
    return (1 if node.shared else channel_width(ins[0])) * (2 if node.bias else 1)


def grn_params(node: GRN, ins, out):
    return 2 * ins[0][0]


def bn_layout(node, ins):
    layout = {}
    if node.affine:
        layout.update(weight=(0, None), bias=(0, None))
    if node.track_running_stats:
        layout.update(running_mean=(0, None), running_var=(0, None), num_batches_tracked=(None, None))
    return layout


def ln_layout(node: LayerNorm, ins):
    layout = {}
    if node.elementwise_affine:
        layout["weight"] = (0, None)
        if node.bias:
            layout["bias"] = (0, None)
    if node.mask_ramp is not None:
        layout["mask"] = (0, None)   # a buffer: the entering channels' mask (add_filters init=masked)
    return layout


def scale_layout(node: Scale, ins):
    """One entry per channel on axis 0, or (``shared``) one number for all: no channel axis, so the channels prune
    and grow through it untouched."""
    axis = None if node.shared else 0
    return {"weight": (axis, None), **({"bias": (axis, None)} if node.bias else {})}


def affine_layout(node, ins):
    return {"weight": (0, None), "bias": (0, None)}


def gn_layout(node: GroupNorm, ins):
    return {"weight": (0, None), "bias": (0, None)} if node.affine else {}


def rms_layout(node: RMSNorm, ins):
    return {"weight": (0, None)} if node.elementwise_affine else {}


def ln_mixing(node, ins) -> bool:
    return True


def bn_module(cls: str):
    def module(T, node, ins):
        return getattr(T.nn, cls)(ins[0][0], eps=node.eps, momentum=node.momentum, affine=node.affine,
                                  track_running_stats=node.track_running_stats)
    return module


def ln_module(T, node: LayerNorm, ins):
    if node.mask_ramp is not None:
        return T.extra.MaskedLayerNorm(channel_width(ins[0]), node.mask_ramp, eps=node.eps,
                                       elementwise_affine=node.elementwise_affine, bias=node.bias)
    cls = T.nn.LayerNorm if len(ins[0]) in (1, 2) else T.extra.LayerNorm2d
    return cls(channel_width(ins[0]), eps=node.eps, elementwise_affine=node.elementwise_affine, bias=node.bias)


def gn_module(T, node: GroupNorm, ins):
    return T.nn.GroupNorm(node.num_groups, ins[0][0], eps=node.eps, affine=node.affine)


def rms_module(T, node: RMSNorm, ins):
    return T.extra.RMSNorm(channel_width(ins[0]), eps=node.eps, elementwise_affine=node.elementwise_affine,
                           offset=node.offset)


def grn_module(T, node: GRN, ins):
    return T.extra.GRN(ins[0][0], eps=node.eps)


def scale_module(T, node: Scale, ins):
    return T.extra.Scale(channel_width(ins[0]), init=node.init, bias=node.bias, shared=node.shared)


def bn_source(cls: str):
    def source(m) -> str:
        return (f"nn.{cls}({m.num_features}, eps={m.eps!r}, momentum={m.momentum!r}, affine={m.affine}, "
                f"track_running_stats={m.track_running_stats})")
    return source


def masked_ln_source(m) -> str:
    return (f"MaskedLayerNorm({m.num_channels}, {m.ramp}, eps={m.eps!r}, elementwise_affine={m.weight is not None}, "
            f"bias={m.bias is not None})")


def ln_source(cls: str):
    def source(m) -> str:
        return (f"{cls}({tuple(m.normalized_shape)}, eps={m.eps!r}, elementwise_affine={m.elementwise_affine}, "
                f"bias={m.bias is not None})")
    return source


def rms_source(m) -> str:
    return (f"RMSNorm({tuple(m.normalized_shape)}, eps={m.eps!r}, elementwise_affine={m.elementwise_affine}"
            + (f", offset={m.offset!r})" if m.offset else ")"))


def scale_source(m) -> str:
    extra = (", bias=True" if m.bias is not None else "") + (", shared=True" if m.shared else "")
    return f"Scale({m.num_channels}, init={m.init!r}{extra})"


def _batchnorm(kind, cls: str, rank: int, functions: tuple[str, ...] = ()) -> OpDef:
    return OpDef(
        kind=kind,
        sizes=Sizes(shape=rank_shape(rank), params=bn_params, in_rank=rank),
        coupling=Coupling(role=ACT, layout=bn_layout, buffers=BN_BUFFERS),
        traits=Traits(is_norm=True, running_stats=True),
        build=Build(module=bn_module(cls)),
        rewrite=RewriteFacts(shifts_zero=True),
        export=Export(colour=NORM_COLOUR, python={f"torch.nn.{cls}": bn_source(cls)}),
        imports=Imports(modules=(f"torch.nn.{cls}",), functions=functions),
    )


DEFS: tuple[OpDef, ...] = (
    # F.batch_norm of a [N, F] input becomes a batchnorm1d
    _batchnorm(BatchNorm2d, "BatchNorm2d", 3, functions=(F_ + "batch_norm", A_ + "batch_norm.default")),
    _batchnorm(BatchNorm1d, "BatchNorm1d", 1),
    OpDef(
        kind=LayerNorm,
        sizes=Sizes(shape=ln_shape, params=ln_params),
        coupling=Coupling(role=ACT, layout=ln_layout, mixes=ln_mixing, buffers=("mask",)),
        traits=Traits(is_norm=True),
        build=Build(module=ln_module),
        rewrite=RewriteFacts(shifts_zero=True, maskable=True, keeps_stats_of_copies=True),
        export=Export(colour=NORM_COLOUR,
                      python={"torch.nn.LayerNorm": ln_source("nn.LayerNorm"),
                              EXTRA + ".LayerNorm2d": ln_source("LayerNorm2d"),
                              EXTRA + ".MaskedLayerNorm": masked_ln_source}),
        imports=Imports(modules=("torch.nn.LayerNorm", EXTRA + ".MaskedLayerNorm"),
                        functions=(F_ + "layer_norm", A_ + "layer_norm.default")),
    ),
    OpDef(
        kind=RMSNorm,
        sizes=Sizes(shape=last_axis_shape, params=rms_params),
        coupling=Coupling(role=ACT, layout=rms_layout, mixes=ln_mixing, mix_stats="mean square"),
        traits=Traits(is_norm=True),
        build=Build(module=rms_module),
        rewrite=RewriteFacts(rescalable=True, keeps_stats_of_copies=True),
        export=Export(colour=NORM_COLOUR, python={EXTRA + ".RMSNorm": rms_source}),
        imports=Imports(modules=("torch.nn.RMSNorm", EXTRA + ".RMSNorm")),
    ),
    OpDef(
        kind=GroupNorm,
        sizes=Sizes(shape=group_norm_shape, params=gn_params, in_rank=3),
        coupling=Coupling(role=ACT, layout=gn_layout, mixes=ln_mixing, norm_groups=lambda n: n.num_groups),
        traits=Traits(is_norm=True),
        build=Build(module=gn_module),
        rewrite=RewriteFacts(shifts_zero=True),
        export=Export(colour=NORM_COLOUR,
                      python={"torch.nn.GroupNorm": lambda m: f"nn.GroupNorm({m.num_groups}, {m.num_channels}, "
                                                                      f"eps={m.eps!r}, affine={m.affine})"}),
        imports=Imports(modules=("torch.nn.GroupNorm",), functions=(F_ + "group_norm", A_ + "group_norm.default")),
    ),
    # GRN's statistic is taken over the channels (it mixes them), and a zero channel comes out as its bias; it is no
    # is_norm op: its weight scales only the normalised term, not the channel's output (which keeps x itself)
    # timm's GlobalResponseNorm (channels-first or channels-last) is kept whole:
    # archgraph.interop.importer.handlers.timm_layers
    OpDef(
        kind=GRN,
        sizes=Sizes(shape=rank_shape(3), params=grn_params, in_rank=3),
        coupling=Coupling(role=ACT, layout=affine_layout, mixes=ln_mixing,
                          mix_stats="mean of the channels' L2 norms"),
        build=Build(module=grn_module),
        rewrite=RewriteFacts(shifts_zero=True),
        export=Export(colour=NORM_COLOUR, python={EXTRA + ".GRN": lambda m: f"GRN({m.num_channels}, eps={m.eps!r})"}),
        imports=Imports(modules=(EXTRA + ".GRN",)),
    ),
    # shifts_zero is one flag per op: a scale with a bias does map a zero channel to its bias, but the
    # ones imported (LearnableAffineBlock) follow a batchnorm, which the pruning note names already
    # a mul by a per-channel parameter or by a number; a division by a number; timm's LearnableAffineBlock
    # and archgraph's own Scale as modules (archgraph.interop.importer.handlers.timm_layers)
    OpDef(
        kind=Scale,
        sizes=Sizes(shape=ln_shape, params=scale_params),
        coupling=Coupling(role=ACT, layout=scale_layout),
        build=Build(module=scale_module),
        export=Export(python={EXTRA + ".Scale": scale_source}),
        imports=Imports(functions=("operator.truediv", "operator.itruediv", "torch.div", A_ + "div.Tensor"),
                        methods=("div", "__truediv__", "div_"),
                        via="a mul by a per-channel parameter or a number; timm's LearnableAffineBlock "
                            "(archgraph.interop.importer.handlers.timm_layers)"),
    ),
)
