"""Pooling and resampling of ``[C, H, W]``: max, average, adaptive and global pools, ``upsample`` and ``subsample``."""
from __future__ import annotations

import math
from typing import Literal, Optional, Union

from pydantic import model_validator

from .common import A_, ACT, EXTRA, F_, bad, call, every, need_rank, pair, spatial
from .node import Bool, NodeSpec, NonNegativeInt, Pair, PositiveFloat
from .opdef import Build, Coupling, Export, Imports, OpDef, RewriteFacts, Sizes, Traits

# ---- node kinds ------------------------------------------------------------------------------------------------


class MaxPool2d(NodeSpec):
    """Max pooling; ``stride`` defaults to ``kernel_size`` as in PyTorch."""
    op: Literal["maxpool2d"] = "maxpool2d"
    kernel_size: Pair
    stride: Optional[Pair] = None
    padding: Union[NonNegativeInt, tuple[NonNegativeInt, NonNegativeInt]] = 0
    dilation: Pair = 1
    ceil_mode: Bool = False


class AvgPool2d(NodeSpec):
    """Average pooling; ``stride`` defaults to ``kernel_size`` as in PyTorch."""
    op: Literal["avgpool2d"] = "avgpool2d"
    kernel_size: Pair
    stride: Optional[Pair] = None
    padding: Union[NonNegativeInt, tuple[NonNegativeInt, NonNegativeInt]] = 0
    ceil_mode: Bool = False
    count_include_pad: Bool = True


class AdaptiveAvgPool2d(NodeSpec):
    op: Literal["adaptive_avgpool2d"] = "adaptive_avgpool2d"
    output_size: Pair


class GlobalAvgPool(NodeSpec):
    """Mean over the spatial positions: ``[C, H, W] -> [C]``."""
    op: Literal["global_avg_pool"] = "global_avg_pool"


class Upsample(NodeSpec):
    """Resize ``[C, H, W]`` (``torch.nn.Upsample`` / ``F.interpolate``) to ``size`` or by ``scale_factor`` (the output
    is ``floor(size * scale_factor)``); exactly one of the two. ``align_corners`` goes with ``bilinear`` only."""
    op: Literal["upsample"] = "upsample"
    scale_factor: Optional[Union[PositiveFloat, tuple[PositiveFloat, PositiveFloat]]] = None
    size: Optional[Pair] = None
    mode: Literal["nearest", "bilinear"] = "nearest"
    align_corners: Optional[Bool] = None

    @model_validator(mode="after")
    def _one_size(self) -> "Upsample":
        if (self.scale_factor is None) == (self.size is None):
            raise ValueError("give exactly one of scale_factor and size")
        if self.align_corners is not None and self.mode != "bilinear":
            raise ValueError("align_corners goes with mode 'bilinear' only")
        return self


class Subsample(NodeSpec):
    """Every ``stride``-th position of ``[C, H, W]`` from ``offset`` on (``x[:, :, a::s, b::s]``): ``[C,
    ceil((H - a) / s), ceil((W - b) / s)]``. Swin's patch merging is a ``pad`` to even sizes, the four subsamples
    at offsets ``(0, 0), (1, 0), (0, 1), (1, 1)`` and a ``concat``."""
    op: Literal["subsample"] = "subsample"
    stride: Pair = 2
    offset: Union[NonNegativeInt, tuple[NonNegativeInt, NonNegativeInt]] = 0


# ---- facts ----------------------------------------------------------------------------------------------------


def adaptive_shape(node: AdaptiveAvgPool2d, ins):
    c, _, _ = need_rank(ins, 3, node.op)
    return (c, *pair(node.output_size))


def gap_shape(node, ins):
    c, _, _ = need_rank(ins, 3, node.op)
    return (c,)


def pool_kwargs(node):
    kw = {"kernel_size": pair(node.kernel_size),
          "stride": pair(node.stride if node.stride is not None else node.kernel_size),
          "padding": pair(node.padding), "ceil_mode": node.ceil_mode}
    if node.op == "maxpool2d":
        kw["dilation"] = pair(node.dilation)
    else:
        kw["count_include_pad"] = node.count_include_pad
    return kw


def pool_call(name):
    def make(T, node):
        return getattr(T.F, name), pool_kwargs(node)
    return make


def upsample_shape(node: Upsample, ins):
    c, h, w = need_rank(ins, 3, "upsample")
    if node.size is not None:
        return (c, *pair(node.size))
    fh, fw = upsample_factors(node)
    return (c, math.floor(h * fh), math.floor(w * fw))


def upsample_factors(node: Upsample) -> tuple[float, float]:
    f = node.scale_factor
    assert f is not None, "upsample by size has no factors"
    return (float(f), float(f)) if isinstance(f, (int, float)) else (float(f[0]), float(f[1]))


def upsample_kwargs(node: Upsample) -> dict:
    kw: dict = {"mode": node.mode}
    if node.size is not None:
        kw["size"] = pair(node.size)
    else:
        kw["scale_factor"] = upsample_factors(node)
    if node.mode == "bilinear":
        kw["align_corners"] = node.align_corners
    return kw


def upsample_call(T, node: Upsample):
    return T.F.interpolate, upsample_kwargs(node)


def subsample_shape(node: Subsample, ins):
    c, h, w = need_rank(ins, 3, node.op)
    (sh, sw), (oh, ow) = pair(node.stride), pair(node.offset)
    if oh >= h or ow >= w:
        bad("offset", f"offset {[oh, ow]} is past the {h}x{w} positions")
    return (c, -(-(h - oh) // sh), -(-(w - ow) // sw))


def _pool(kind, shape, function, imports: Imports) -> OpDef:
    return OpDef(kind=kind, sizes=Sizes(shape=shape, in_rank=3), coupling=Coupling(role=ACT),
                 traits=Traits(is_pool=True), build=Build(function=function), rewrite=RewriteFacts(nonneg=every),
                 imports=imports)


DEFS: tuple[OpDef, ...] = (
    _pool(MaxPool2d, lambda n, i: spatial(n, i, pool=True), pool_call("max_pool2d"),
          Imports(modules=("torch.nn.MaxPool2d",),
                  functions=(F_ + "max_pool2d", "torch.max_pool2d", A_ + "max_pool2d.default"))),
    _pool(AvgPool2d, lambda n, i: spatial(n, i, dilation=False, pool=True), pool_call("avg_pool2d"),
          Imports(modules=("torch.nn.AvgPool2d",), functions=(F_ + "avg_pool2d", A_ + "avg_pool2d.default"))),
    _pool(AdaptiveAvgPool2d, adaptive_shape,
          call(lambda T: T.F.adaptive_avg_pool2d, output_size=lambda n: pair(n.output_size)),
          Imports(modules=("torch.nn.AdaptiveAvgPool2d",),
                  functions=(F_ + "adaptive_avg_pool2d", A_ + "adaptive_avg_pool2d.default"))),
    _pool(GlobalAvgPool, gap_shape, call(lambda T: T.torch.mean, dim=lambda n: (-2, -1)),
          Imports(functions=("torch.mean", A_ + "mean.dim"), methods=("mean",))),
    # nearest copies, bilinear averages: never negative from a non-negative input
    OpDef(
        kind=Upsample,
        sizes=Sizes(shape=upsample_shape, in_rank=3),
        coupling=Coupling(role=ACT),
        build=Build(function=upsample_call),
        rewrite=RewriteFacts(nonneg=every),
        export=Export(colour="#e7f1f4"),
        imports=Imports(modules=("torch.nn.Upsample", "torch.nn.UpsamplingNearest2d", "torch.nn.UpsamplingBilinear2d"),
                        functions=(F_ + "interpolate", F_ + "upsample")),
    ),
    OpDef(
        kind=Subsample,
        sizes=Sizes(shape=subsample_shape, in_rank=3),
        coupling=Coupling(role=ACT),
        build=Build(function=call(lambda T: T.extra.subsample, stride=lambda n: pair(n.stride),
                                  offset=lambda n: pair(n.offset))),
        rewrite=RewriteFacts(nonneg=every, identity=lambda n,
                             flags: pair(n.stride) == (1, 1) and pair(n.offset) == (0, 0)),
        imports=Imports(functions=(EXTRA + ".subsample", "torchvision.models.swin_transformer._patch_merging_pad"),
                        via="torchvision Swin's patch merging: a pad to even sizes, four subsamples and a concat"),
    ),
)
