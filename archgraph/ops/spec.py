"""The node kinds of the graph format: one frozen pydantic model per op.

Each model holds only what defines the node (its op, its inputs and PyTorch's own parameter names); input widths
(`in_channels`, `in_features`, `num_features`) are never written, they are inferred from the graph. The union of
all kinds is discriminated on ``op``, so a validation error points at exactly one kind and field.
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Optional, Union

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator,
                      model_serializer, model_validator)

Pair = Union[PositiveInt, Annotated[tuple[PositiveInt, PositiveInt], Field(min_length=2, max_length=2)]]
Padding = Union[NonNegativeInt, tuple[NonNegativeInt, NonNegativeInt], Literal["same", "valid"]]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _op_required(schema: dict) -> None:
    """In the JSON Schema ``op`` is required: editors pick the node kind by it (the discriminator). In Python it
    keeps its default, so ``Conv2d(inputs="x", out_channels=8, kernel_size=3)`` needs no ``op``."""
    if "op" in schema.get("properties", {}):
        schema["required"] = ["op", *[r for r in schema.get("required", []) if r != "op"]]


class NodeSpec(BaseModel):
    """Fields every node has: ``op`` (the kind) and ``in`` (one input id or a list of them)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, json_schema_extra=_op_required)

    op: str
    inputs: Union[str, tuple[str, ...]] = Field(alias="in", description="input node id, or a list of ids")

    #: (least, most) number of inputs; ``None`` means no upper bound.
    arity: ClassVar[tuple[int, Optional[int]]] = (1, 1)

    @field_validator("inputs", mode="after")
    @classmethod
    def _as_tuple(cls, value):
        return (value,) if isinstance(value, str) else tuple(value)

    @model_serializer(mode="wrap")
    def _serialize(self, handler):
        data = handler(self)
        key = "in" if "in" in data else "inputs"
        if key in data and len(self.inputs) == 1 and self.arity == (1, 1):
            data[key] = self.inputs[0]
        elif key in data:
            data[key] = list(self.inputs)
        return data

    def replace(self, **changes) -> "NodeSpec":
        """A copy with some fields changed, validated again (nodes are immutable)."""
        data = self.model_dump(by_alias=True, exclude_defaults=True)
        data["op"] = self.op
        data["in"] = list(changes.pop("inputs", self.inputs))
        data.update(changes)
        return type(self).model_validate(data)

    def fields(self) -> dict:
        """The op's own settings (everything but ``op`` and ``in``), defaults included."""
        return {k: v for k, v in self.model_dump().items() if k not in ("op", "inputs")}


class Conv2d(NodeSpec):
    """2-D convolution (``torch.nn.Conv2d``); ``groups`` equal to the input channels is a depthwise conv."""
    op: Literal["conv2d"] = "conv2d"
    out_channels: PositiveInt
    kernel_size: Pair
    stride: Pair = 1
    padding: Padding = 0
    dilation: Pair = 1
    groups: PositiveInt = 1
    bias: bool = True


class Linear(NodeSpec):
    """Fully connected layer (``torch.nn.Linear``) on a flat ``[F]`` input."""
    op: Literal["linear"] = "linear"
    out_features: PositiveInt
    bias: bool = True


class BatchNorm2d(NodeSpec):
    """Batch normalisation over the channels of a ``[C, H, W]`` input."""
    op: Literal["batchnorm2d"] = "batchnorm2d"
    eps: PositiveFloat = 1e-5
    momentum: Optional[Probability] = 0.1
    affine: bool = True
    track_running_stats: bool = True


class BatchNorm1d(NodeSpec):
    """Batch normalisation over the features of a ``[F]`` input."""
    op: Literal["batchnorm1d"] = "batchnorm1d"
    eps: PositiveFloat = 1e-5
    momentum: Optional[Probability] = 0.1
    affine: bool = True
    track_running_stats: bool = True


class LayerNorm(NodeSpec):
    """Layer normalisation over the features of ``[F]``, or over the channels of ``[C, H, W]`` at each position
    (the channels-first LayerNorm of ConvNeXt)."""
    op: Literal["layernorm"] = "layernorm"
    eps: PositiveFloat = 1e-5
    elementwise_affine: bool = True
    bias: bool = True


class ReLU(NodeSpec):
    op: Literal["relu"] = "relu"


class ReLU6(NodeSpec):
    op: Literal["relu6"] = "relu6"


class GELU(NodeSpec):
    op: Literal["gelu"] = "gelu"
    approximate: Literal["none", "tanh"] = "none"


class SiLU(NodeSpec):
    op: Literal["silu"] = "silu"


class Sigmoid(NodeSpec):
    op: Literal["sigmoid"] = "sigmoid"


class Tanh(NodeSpec):
    op: Literal["tanh"] = "tanh"


class Hardswish(NodeSpec):
    op: Literal["hardswish"] = "hardswish"


class Hardsigmoid(NodeSpec):
    """``relu6(x + 3) / 6`` (the gate of MobileNetV3's squeeze-excitation)."""
    op: Literal["hardsigmoid"] = "hardsigmoid"


class MaxPool2d(NodeSpec):
    """Max pooling; ``stride`` defaults to ``kernel_size`` as in PyTorch."""
    op: Literal["maxpool2d"] = "maxpool2d"
    kernel_size: Pair
    stride: Optional[Pair] = None
    padding: Union[NonNegativeInt, tuple[NonNegativeInt, NonNegativeInt]] = 0
    dilation: Pair = 1
    ceil_mode: bool = False


class AvgPool2d(NodeSpec):
    """Average pooling; ``stride`` defaults to ``kernel_size`` as in PyTorch."""
    op: Literal["avgpool2d"] = "avgpool2d"
    kernel_size: Pair
    stride: Optional[Pair] = None
    padding: Union[NonNegativeInt, tuple[NonNegativeInt, NonNegativeInt]] = 0
    ceil_mode: bool = False
    count_include_pad: bool = True


class AdaptiveAvgPool2d(NodeSpec):
    op: Literal["adaptive_avgpool2d"] = "adaptive_avgpool2d"
    output_size: Pair


class GlobalAvgPool(NodeSpec):
    """Mean over the spatial positions: ``[C, H, W] -> [C]``."""
    op: Literal["global_avg_pool"] = "global_avg_pool"


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


class Scale(NodeSpec):
    """A learnable per-channel multiplier (ConvNeXt's layer scale): ``x * weight`` with one weight per channel of a
    ``[C, H, W]`` input (or per feature of ``[F]``); the weights start at ``init``."""
    op: Literal["scale"] = "scale"
    init: float = 1.0


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
    value: float = 0.0


NODE_KINDS: tuple[type[NodeSpec], ...] = (
    Conv2d, Linear, BatchNorm2d, BatchNorm1d, LayerNorm, ReLU, ReLU6, GELU, SiLU, Sigmoid, Tanh, Hardswish,
    MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, GlobalAvgPool, Flatten, Dropout, Add, Mul, Concat, Identity,
    Hardsigmoid, Scale, StochasticDepth, ChannelShuffle, Slice, Pad,
)

Node = Annotated[Union[NODE_KINDS], Field(discriminator="op")]  # type: ignore[valid-type]

#: op name -> node model
KIND_BY_OP: dict[str, type[NodeSpec]] = {k.model_fields["op"].default: k for k in NODE_KINDS}
