"""Convolutions: ``conv2d`` (depthwise and grouped included) and ``conv_transpose2d``."""
from __future__ import annotations

from typing import Literal, Optional, Union

from .common import A_, F_, WEIGHT_COLOUR, bad, need_rank, pair, spatial
from .node import Bool, NodeSpec, NonNegativeInt, Padding, Pair, PositiveInt
from .opdef import GROUPED, SOURCE, THROUGH, Build, Coupling, Export, Imports, OpDef, RewriteFacts, Shape, Sizes, Traits

# ---- node kinds ------------------------------------------------------------------------------------------------


class Conv2d(NodeSpec):
    """2-D convolution (``torch.nn.Conv2d``); ``groups`` equal to the input channels is a depthwise conv."""
    op: Literal["conv2d"] = "conv2d"
    out_channels: PositiveInt
    kernel_size: Pair
    stride: Pair = 1
    padding: Padding = 0
    dilation: Pair = 1
    groups: PositiveInt = 1
    bias: Bool = True


class ConvTranspose2d(NodeSpec):
    """2-D transposed convolution (``torch.nn.ConvTranspose2d``): its weight is ``[in, out / groups, kh, kw]``, the
    output side on axis 1. Each output size is ``(size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) +
    output_padding + 1``; ``output_padding`` must be smaller than the stride or the dilation."""
    op: Literal["conv_transpose2d"] = "conv_transpose2d"
    out_channels: PositiveInt
    kernel_size: Pair
    stride: Pair = 1
    padding: Union[NonNegativeInt, tuple[NonNegativeInt, NonNegativeInt]] = 0
    output_padding: Union[NonNegativeInt, tuple[NonNegativeInt, NonNegativeInt]] = 0
    groups: PositiveInt = 1
    dilation: Pair = 1
    bias: Bool = True


# ---- facts ----------------------------------------------------------------------------------------------------


def check_groups(node, in_channels: int) -> None:
    """``groups`` must divide both the input and the output channels (as PyTorch's convolutions require)."""
    if in_channels % node.groups:
        bad("groups", f"groups={node.groups} does not divide the {in_channels} input channels")
    if node.out_channels % node.groups:
        bad("groups", f"groups={node.groups} does not divide out_channels={node.out_channels}")


def conv_shape(node: Conv2d, ins):
    c, _, _ = need_rank(ins, 3, "conv2d")
    check_groups(node, c)
    _, h, w = spatial(node, ins)
    return (node.out_channels, h, w)


def conv_transpose_size(size: int, k: int, s: int, p: int, op: int, d: int) -> int:
    """Output length along one axis of a transposed conv, as ``torch.nn.ConvTranspose2d`` documents it."""
    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1


def conv_transpose_in_size(out: int, k: int, s: int, p: int, op: int, d: int) -> int:
    """The input length a transposed conv makes ``out`` from (its inverse of :func:`conv_transpose_size`)."""
    return (out - 1 - op - d * (k - 1) + 2 * p) // s + 1


def conv_transpose_shape(node: ConvTranspose2d, ins):
    c, h, w = need_rank(ins, 3, "conv_transpose2d")
    check_groups(node, c)
    k, st, p, op, d = (pair(v) for v in (node.kernel_size, node.stride, node.padding, node.output_padding,
                                          node.dilation))
    for axis in (0, 1):
        if op[axis] >= max(st[axis], d[axis]):
            bad("output_padding", f"output_padding {list(op)} must be smaller than the stride {list(st)} or the "
                                  f"dilation {list(d)}")
    ho, wo = (conv_transpose_size(n, k[a], st[a], p[a], op[a], d[a]) for a, n in ((0, h), (1, w)))
    if ho <= 0 or wo <= 0:
        bad("padding", f"padding {list(p)} leaves no output positions ({ho}x{wo}) from {h}x{w}")
    return (node.out_channels, ho, wo)


def conv_params(node: Conv2d, ins, out):
    kh, kw = pair(node.kernel_size)
    return node.out_channels * (ins[0][0] // node.groups) * kh * kw + (node.out_channels if node.bias else 0)


def conv_macs(node: Conv2d, ins, out):
    kh, kw = pair(node.kernel_size)
    return node.out_channels * (ins[0][0] // node.groups) * kh * kw * out[1] * out[2]


def conv_transpose_params(node: ConvTranspose2d, ins, out):
    kh, kw = pair(node.kernel_size)
    return ins[0][0] * (node.out_channels // node.groups) * kh * kw + (node.out_channels if node.bias else 0)


def conv_transpose_macs(node: ConvTranspose2d, ins, out):
    """Every weight entry is applied once at every input position (the input is scattered onto the output)."""
    kh, kw = pair(node.kernel_size)
    return ins[0][0] * (node.out_channels // node.groups) * kh * kw * ins[0][1] * ins[0][2]


def conv_role(node: Conv2d, ins):
    if node.groups == 1:
        return SOURCE
    if node.groups == ins[0][0] == node.out_channels:
        return THROUGH
    return GROUPED


def conv_transpose_role(node: ConvTranspose2d, ins):
    return conv_role(node, ins)  # type: ignore[arg-type]  # the same fields: groups, out_channels


def conv_layout(node: Conv2d, ins):
    weight_in = 1 if node.groups == 1 else None
    layout: dict[str, tuple[Optional[int], Optional[int]]] = {"weight": (0, weight_in)}
    if node.bias:
        layout["bias"] = (0, None)
    return layout


def conv_transpose_layout(node: ConvTranspose2d, ins):
    """The weight is ``[in, out / groups, kh, kw]``: output channels on axis 1, input channels on axis 0. A depthwise
    one (``[C, 1, kh, kw]``) follows its input's channels on axis 0; a grouped one holds its output channels within
    a group on axis 1 (see :attr:`Coupling.group_side`)."""
    layout: dict[str, tuple[Optional[int], Optional[int]]]
    if node.groups == 1:
        layout = {"weight": (1, 0)}
    elif node.groups == ins[0][0] == node.out_channels:
        layout = {"weight": (0, None)}
    else:
        layout = {"weight": (None, 0)}
    if node.bias:
        layout["bias"] = (0, None)
    return layout


def conv_resize(node: Conv2d, width: int) -> dict:
    """A depthwise conv follows its input's channels (its groups too); any other conv sets its own width."""
    if node.groups > 1 and node.groups == node.out_channels:
        return {"out_channels": width, "groups": width}
    return {"out_channels": width}


def conv_module(T, node: Conv2d, ins):
    padding = node.padding if isinstance(node.padding, (int, str)) else tuple(node.padding)
    return T.nn.Conv2d(ins[0][0], node.out_channels, pair(node.kernel_size), stride=pair(node.stride),
                       padding=padding, dilation=pair(node.dilation), groups=node.groups, bias=node.bias)


def conv_transpose_module(T, node: ConvTranspose2d, ins):
    return T.nn.ConvTranspose2d(ins[0][0], node.out_channels, pair(node.kernel_size), stride=pair(node.stride),
                                padding=pair(node.padding), output_padding=pair(node.output_padding),
                                groups=node.groups, bias=node.bias, dilation=pair(node.dilation))


def conv_nonzero_macs(node, out: Shape, nonzero: int) -> int:
    return nonzero * out[1] * out[2]


def conv_transpose_nonzero_macs(node, out: Shape, nonzero: int) -> int:
    k, st, p, op, d = (pair(v) for v in (node.kernel_size, node.stride, node.padding, node.output_padding,
                                          node.dilation))
    h, w = (conv_transpose_in_size(out[a + 1], k[a], st[a], p[a], op[a], d[a]) for a in (0, 1))
    return nonzero * h * w


def conv_source(m) -> str:
    return (f"nn.Conv2d({m.in_channels}, {m.out_channels}, {m.kernel_size}, stride={m.stride}, "
            f"padding={m.padding!r}, dilation={m.dilation}, groups={m.groups}, bias={m.bias is not None})")


def conv_transpose_source(m) -> str:
    return (f"nn.ConvTranspose2d({m.in_channels}, {m.out_channels}, {m.kernel_size}, stride={m.stride}, "
            f"padding={m.padding}, output_padding={m.output_padding}, groups={m.groups}, "
            f"bias={m.bias is not None}, dilation={m.dilation})")


DEFS: tuple[OpDef, ...] = (
    OpDef(
        kind=Conv2d,
        sizes=Sizes(shape=conv_shape, params=conv_params, macs=conv_macs, nonzero_macs=conv_nonzero_macs, in_rank=3),
        coupling=Coupling(role=conv_role, layout=conv_layout, width_field="out_channels"),
        traits=Traits(weighted=True, conv=True),
        build=Build(module=conv_module),
        rewrite=RewriteFacts(identity_fill="dirac", resize=conv_resize),
        export=Export(colour=WEIGHT_COLOUR, python={"torch.nn.Conv2d": conv_source}),
        imports=Imports(modules=("torch.nn.Conv2d",), functions=(F_ + "conv2d", A_ + "conv2d.default")),
    ),
    OpDef(
        kind=ConvTranspose2d,
        sizes=Sizes(shape=conv_transpose_shape, params=conv_transpose_params, macs=conv_transpose_macs,
                    nonzero_macs=conv_transpose_nonzero_macs, in_rank=3),
        coupling=Coupling(role=conv_transpose_role, layout=conv_transpose_layout, group_side="out",
                          width_field="out_channels"),
        traits=Traits(weighted=True),
        build=Build(module=conv_transpose_module),
        rewrite=RewriteFacts(resize=conv_resize),
        export=Export(colour=WEIGHT_COLOUR, python={"torch.nn.ConvTranspose2d": conv_transpose_source}),
        imports=Imports(modules=("torch.nn.ConvTranspose2d",)),
    ),
)
