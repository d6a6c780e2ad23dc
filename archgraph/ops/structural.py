"""Structural ops that hold no weights: flatten, dropout, identity, add, mul, concat, stochastic depth, channel
shuffle, slice and pad."""
from __future__ import annotations

import math
import operator
from typing import Annotated, ClassVar, Literal, Optional

from pydantic import Field, field_validator, model_validator

from .common import (
    A_,
    ACT,
    CONCAT_COLOUR,
    EXTRA,
    F_,
    MERGE_COLOUR,
    always,
    bad,
    call,
    every,
    fixed,
    need_rank,
    same_shape,
    single,
)
from .node import Float, NodeSpec, NonNegativeInt, PositiveInt, Probability
from .opdef import (
    CHAIN,
    CONCAT,
    FLATTEN,
    LIST,
    MERGE,
    SHUFFLE,
    SLICE,
    THROUGH,
    Build,
    Coupling,
    Export,
    Imports,
    OpDef,
    RewriteFacts,
    Sizes,
    Traits,
)

# ---- node kinds ------------------------------------------------------------------------------------------------


class Flatten(NodeSpec):
    """Flatten the per-sample shape to ``[F]`` (``torch.flatten(x, 1)``)."""
    op: Literal["flatten"] = "flatten"


class Dropout(NodeSpec):
    op: Literal["dropout"] = "dropout"
    p: Probability = 0.5


class Identity(NodeSpec):
    op: Literal["identity"] = "identity"


class Add(NodeSpec):
    """Elementwise sum of any number of inputs of the same shape."""
    op: Literal["add"] = "add"
    arity: ClassVar[tuple[int, Optional[int]]] = (1, None)


class Mul(NodeSpec):
    """Elementwise product of inputs whose shapes broadcast (``[C, H, W] * [C, 1, 1]`` for squeeze-excitation)."""
    op: Literal["mul"] = "mul"
    arity: ClassVar[tuple[int, Optional[int]]] = (2, None)


class Concat(NodeSpec):
    """Concatenation along the channel (first per-sample) axis."""
    op: Literal["concat"] = "concat"
    arity: ClassVar[tuple[int, Optional[int]]] = (1, None)


class StochasticDepth(NodeSpec):
    """Stochastic depth (``torchvision.ops.stochastic_depth``): in training, drops the whole input of a sample
    (``row``) or of the batch (``batch``) with probability ``p`` and rescales the rest; the identity in eval mode."""
    op: Literal["stochastic_depth"] = "stochastic_depth"
    p: Probability = 0.0
    mode: Literal["row", "batch"] = "row"


class ChannelShuffle(NodeSpec):
    """ShuffleNet's channel shuffle: view ``[C, H, W]`` as ``[groups, C / groups, H, W]``, swap the first two axes
    and flatten them again, so output channel ``i * groups + g`` is input channel ``g * (C / groups) + i``."""
    op: Literal["channel_shuffle"] = "channel_shuffle"
    groups: PositiveInt


class Slice(NodeSpec):
    """Channels ``start .. stop - 1`` of the input (``x[:, start:stop]``; ``chunk``/``split`` along channels)."""
    op: Literal["slice"] = "slice"
    start: NonNegativeInt
    stop: PositiveInt

    @model_validator(mode="after")
    def _ordered(self) -> "Slice":
        if self.stop <= self.start:
            raise ValueError(f"stop ({self.stop}) must be greater than start ({self.start})")
        return self


class Pad(NodeSpec):
    """Constant padding of the spatial axes of ``[C, H, W]`` (``F.pad(x, padding, value=value)``):
    ``padding`` is ``[left, right, top, bottom]`` as in PyTorch; ``value`` fills the new positions (``-.inf`` before
    a max pool, as TensorFlow's 'same' pooling in timm's ``tf_`` models)."""
    op: Literal["pad"] = "pad"
    padding: tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt, NonNegativeInt]
    value: Annotated[Float, Field(allow_inf_nan=True, description="may be infinite (-.inf before a max pool); "
                                                                  "never NaN")] = 0.0

    @field_validator("value")
    @classmethod
    def _not_nan(cls, value: float) -> float:
        if value != value:
            raise ValueError("value is NaN; give a number (infinite is allowed)")
        return value


# ---- facts ----------------------------------------------------------------------------------------------------


def flatten_shape(node, ins):
    if len(ins[0]) == 2:
        bad("in", f"a sequence {list(ins[0])} is not flattened; pool it to [D] with token_pool")
    return (math.prod(ins[0]),)


def flatten_role(node, ins):
    return FLATTEN if len(ins[0]) >= 2 else THROUGH


def add_shape(node, ins):
    first = tuple(ins[0])
    for i, other in enumerate(ins[1:], 1):
        if tuple(other) != first:
            bad("in", f"inputs must have the same shape to be added: '{node.inputs[0]}' is {list(first)} but "
                      f"'{node.inputs[i]}' is {list(other)}")
    return first


def mul_shape(node, ins):
    # Same rank only: with the batch axis in front, [C, H, W] * [C] would line C up with W, not with C.
    first = ins[0]
    for i, other in enumerate(ins[1:], 1):
        if len(other) != len(first):
            bad("in", f"inputs must have the same rank to be multiplied ([C, H, W] * [C, 1, 1] broadcasts): "
                      f"'{node.inputs[0]}' is {list(first)} but '{node.inputs[i]}' is {list(other)}")
    out = []
    for axis in range(len(first)):
        sizes = {s[axis] for s in ins}
        sizes.discard(1)
        if len(sizes) > 1:
            names = ", ".join(f"'{n}' is {list(s)}" for n, s in zip(node.inputs, ins))
            bad("in", f"input shapes do not broadcast on axis {axis}: {names}")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def concat_shape(node, ins):
    first = ins[0]
    if len(first) == 2:
        bad("in", f"concat joins channels of [C, H, W] or [F] values; '{node.inputs[0]}' is a sequence "
                  f"{list(first)}")
    for i, other in enumerate(ins[1:], 1):
        if len(other) != len(first) or tuple(other[1:]) != tuple(first[1:]):
            bad("in", f"inputs must agree on every axis but the channels to be concatenated: "
                      f"'{node.inputs[0]}' is {list(first)} but '{node.inputs[i]}' is {list(other)}")
    return (sum(s[0] for s in ins), *first[1:])


def shuffle_shape(node: ChannelShuffle, ins):
    c, _, _ = need_rank(ins, 3, node.op)
    if c % node.groups:
        bad("groups", f"groups={node.groups} does not divide the {c} input channels")
    return tuple(ins[0])


def shuffle_permutation(channels: int, groups: int) -> list[int]:
    """``perm`` with output channel ``c`` of a ``channel_shuffle`` equal to input channel ``perm[c]``."""
    per = channels // groups
    return [g * per + i for i in range(per) for g in range(groups)]


def shuffle_blocks(node: ChannelShuffle, width: int) -> tuple[int, list[int]]:
    """A channel shuffle's tied blocks (its groups: a column of the ``[g, C/g]`` grid goes as a whole) and its
    permutation."""
    return node.groups, shuffle_permutation(width, node.groups)


def shuffle_identity(node: ChannelShuffle, flags) -> bool:
    return node.groups == 1


def slice_shape(node: Slice, ins):
    if len(ins[0]) not in (1, 3):
        bad("in", f"needs a [F] or [C, H, W] input, got {list(ins[0])}")
    c = ins[0][0]
    if node.stop > c:
        bad("stop", f"stop={node.stop} is past the {c} input channels")
    return (node.stop - node.start, *ins[0][1:])


def pad_shape(node: Pad, ins):
    c, h, w = need_rank(ins, 3, node.op)
    left, right, top, bottom = node.padding
    return (c, h + top + bottom, w + left + right)


def dropout_module(T, node: Dropout, ins):
    return T.nn.Dropout(node.p)


def stochastic_depth_module(T, node: StochasticDepth, ins):
    return T.extra.StochasticDepth(node.p, node.mode)


DEFS: tuple[OpDef, ...] = (
    OpDef(
        kind=Flatten,
        sizes=Sizes(shape=flatten_shape),
        coupling=Coupling(role=flatten_role),
        build=Build(function=call(lambda T: T.torch.flatten, start_dim=lambda n: 1)),
        rewrite=RewriteFacts(nonneg=every),
        imports=Imports(modules=("torch.nn.Flatten",), functions=("torch.flatten", A_ + "flatten.using_ints"),
                        methods=("flatten",)),
    ),
    # eval mode
    OpDef(
        kind=Dropout,
        sizes=Sizes(shape=same_shape),
        coupling=Coupling(role=ACT),
        traits=Traits(is_dropout=True),
        build=Build(module=dropout_module),
        rewrite=RewriteFacts(nonneg=every, identity=always),
        export=Export(python={"torch.nn.Dropout": lambda m: f"nn.Dropout({m.p!r})"}),
        imports=Imports(modules=("torch.nn.Dropout",), functions=(F_ + "dropout", A_ + "dropout.default")),
    ),
    OpDef(
        kind=Identity,
        sizes=Sizes(shape=same_shape),
        coupling=Coupling(role=ACT),
        build=Build(passthrough=True),
        rewrite=RewriteFacts(nonneg=every, identity=always),
        imports=Imports(modules=("torch.nn.Identity",)),
    ),
    OpDef(
        kind=Add,
        sizes=Sizes(shape=add_shape),
        coupling=Coupling(role=fixed(MERGE)),
        build=Build(function=call(lambda T: operator.add), packing=CHAIN),
        rewrite=RewriteFacts(residual=True, branch_end=True, nonneg=every, identity=single),
        export=Export(colour=MERGE_COLOUR),
        imports=Imports(functions=("operator.add", "operator.iadd", "torch.add", A_ + "add.Tensor", A_ + "add_.Tensor"),
                        methods=("add", "__add__", "add_", "__iadd__")),
    ),
    OpDef(
        kind=Mul,
        sizes=Sizes(shape=mul_shape),
        coupling=Coupling(role=fixed(MERGE)),
        build=Build(function=call(lambda T: operator.mul), packing=CHAIN),
        rewrite=RewriteFacts(nonneg=every, identity=single),
        export=Export(colour=MERGE_COLOUR),
        imports=Imports(functions=("operator.mul", "operator.imul", "torch.mul", A_ + "mul.Tensor", A_ + "mul_.Tensor"),
                        methods=("mul", "__mul__", "mul_", "__imul__")),
    ),
    OpDef(
        kind=Concat,
        sizes=Sizes(shape=concat_shape),
        coupling=Coupling(role=fixed(CONCAT)),
        build=Build(function=call(lambda T: T.torch.cat, dim=lambda n: 1), packing=LIST),
        rewrite=RewriteFacts(branch_end=True, nonneg=every, identity=single),
        export=Export(colour=CONCAT_COLOUR),
        imports=Imports(functions=("torch.cat", "torch.concat", "torch.concatenate", A_ + "cat.default")),
    ),
    # eval mode
    OpDef(
        kind=StochasticDepth,
        sizes=Sizes(shape=same_shape),
        coupling=Coupling(role=ACT),
        build=Build(module=stochastic_depth_module),
        rewrite=RewriteFacts(nonneg=every, identity=always),
        export=Export(python={EXTRA + ".StochasticDepth": lambda m: f"StochasticDepth({m.p!r}, {m.mode!r})"}),
        imports=Imports(functions=("torchvision.ops.stochastic_depth",)),
    ),
    OpDef(
        kind=ChannelShuffle,
        sizes=Sizes(shape=shuffle_shape, in_rank=3),
        coupling=Coupling(role=fixed(SHUFFLE), shuffle=shuffle_blocks),
        build=Build(function=call(lambda T: T.extra.channel_shuffle, groups=lambda n: n.groups)),
        rewrite=RewriteFacts(nonneg=every, identity=shuffle_identity),
        imports=Imports(via="reshape to groups, transpose(1, 2), reshape back"),
    ),
    # start/stop: see rules/draft.py
    OpDef(
        kind=Slice,
        sizes=Sizes(shape=slice_shape),
        coupling=Coupling(role=fixed(SLICE)),
        build=Build(function=call(lambda T: T.extra.channel_slice, start=lambda n: n.start, stop=lambda n: n.stop)),
        rewrite=RewriteFacts(nonneg=every),
        imports=Imports(via="x[:, start:stop] and the pieces of chunk/split along the channels"),
    ),
    # a zero padding read only by a convolution is folded into the convolution's padding when it is symmetric
    OpDef(
        kind=Pad,
        sizes=Sizes(shape=pad_shape, in_rank=3),
        coupling=Coupling(role=ACT),
        build=Build(function=call(lambda T: T.F.pad, pad=lambda n: list(n.padding), value=lambda n: n.value)),
        rewrite=RewriteFacts(nonneg=lambda n, flags: all(flags) and n.value >= 0, identity=lambda n,
                             flags: not any(n.padding)),
        imports=Imports(modules=("torch.nn.ConstantPad2d", "torch.nn.ZeroPad2d"),
                        functions=(F_ + "pad", A_ + "pad.default", A_ + "constant_pad_nd.default")),
    ),
)
