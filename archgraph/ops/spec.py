"""The node kinds of the graph format: one frozen pydantic model per op.

Each model holds only what defines the node (its op, its inputs and PyTorch's own parameter names); input widths
(`in_channels`, `in_features`, `num_features`) are never written, they are inferred from the graph. The union of
all kinds is discriminated on ``op``, so a validation error points at exactly one kind and field.
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_serializer, model_validator

# Strict scalars: YAML gives real ints, floats and booleans, so `out_channels: true` or `kernel_size: "3"` is an error
# (as the JSON Schema says), not 1 or 3. Lists still read as tuples (strict mode as a whole would refuse them).
Int = Annotated[int, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
Float = Annotated[float, Strict()]  # an int is still a float
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0)]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]

Pair = Union[PositiveInt, Annotated[tuple[PositiveInt, PositiveInt], Field(min_length=2, max_length=2)]]
Padding = Union[NonNegativeInt, tuple[NonNegativeInt, NonNegativeInt], Literal["same", "valid"]]
Probability = Annotated[float, Strict(), Field(ge=0.0, le=1.0)]


def _op_required(schema: dict) -> None:
    """In the JSON Schema ``op`` is required: editors pick the node kind by it (the discriminator). In Python it
    keeps its default, so ``Conv2d(inputs="x", out_channels=8, kernel_size=3)`` needs no ``op``."""
    if "op" in schema.get("properties", {}):
        schema["required"] = ["op", *[r for r in schema.get("required", []) if r != "op"]]


class NodeSpec(BaseModel):
    """Fields every node has: ``op`` (the kind) and ``in`` (one input id or a list of them)."""

    # every float field is finite unless it says otherwise (pad's ``value``)
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, json_schema_extra=_op_required,
                              allow_inf_nan=False)

    op: str
    inputs: Union[Str, tuple[Str, ...]] = Field(alias="in", description="input node id, or a list of ids")

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
    bias: bool = True


class Upsample(NodeSpec):
    """Resize ``[C, H, W]`` (``torch.nn.Upsample`` / ``F.interpolate``) to ``size`` or by ``scale_factor`` (the output
    is ``floor(size * scale_factor)``); exactly one of the two. ``align_corners`` goes with ``bilinear`` only."""
    op: Literal["upsample"] = "upsample"
    scale_factor: Optional[Union[PositiveFloat, tuple[PositiveFloat, PositiveFloat]]] = None
    size: Optional[Pair] = None
    mode: Literal["nearest", "bilinear"] = "nearest"
    align_corners: Optional[bool] = None

    @model_validator(mode="after")
    def _one_size(self) -> "Upsample":
        if (self.scale_factor is None) == (self.size is None):
            raise ValueError("give exactly one of scale_factor and size")
        if self.align_corners is not None and self.mode != "bilinear":
            raise ValueError("align_corners goes with mode 'bilinear' only")
        return self


class LSTM(NodeSpec):
    """A multi-layer LSTM over a sequence ``[T, D]`` (``torch.nn.LSTM``, ``batch_first=True``), from a zero initial
    state; the output is the last layer's hidden state at every step, ``[T, hidden_size]``. Its parameters are
    ``nn.LSTM``'s: ``weight_ih_l{k}`` ``[4 * hidden_size, in]``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
    ``bias_hh_l{k}``, with the gate blocks in PyTorch's order (input, forget, cell, output)."""
    op: Literal["lstm"] = "lstm"
    hidden_size: PositiveInt
    num_layers: PositiveInt = 1
    bias: bool = True
    dropout: Probability = 0.0


class GRU(NodeSpec):
    """A multi-layer GRU over a sequence ``[T, D]`` (``torch.nn.GRU``, ``batch_first=True``), from a zero initial
    state; output ``[T, hidden_size]``. Parameters as ``nn.GRU``'s, gate blocks (reset, update, new)."""
    op: Literal["gru"] = "gru"
    hidden_size: PositiveInt
    num_layers: PositiveInt = 1
    bias: bool = True
    dropout: Probability = 0.0


class Linear(NodeSpec):
    """Fully connected layer (``torch.nn.Linear``) on a flat ``[F]`` input, or on the last axis of a sequence
    ``[T, D]`` (``[T, D] -> [T, out_features]``, as ``nn.Linear`` does)."""
    op: Literal["linear"] = "linear"
    out_features: PositiveInt
    bias: Bool = True


class BatchNorm2d(NodeSpec):
    """Batch normalisation over the channels of a ``[C, H, W]`` input."""
    op: Literal["batchnorm2d"] = "batchnorm2d"
    eps: PositiveFloat = 1e-5
    momentum: Optional[Probability] = 0.1
    affine: Bool = True
    track_running_stats: Bool = True


class BatchNorm1d(NodeSpec):
    """Batch normalisation over the features of a ``[F]`` input."""
    op: Literal["batchnorm1d"] = "batchnorm1d"
    eps: PositiveFloat = 1e-5
    momentum: Optional[Probability] = 0.1
    affine: Bool = True
    track_running_stats: Bool = True


class LayerNorm(NodeSpec):
    """Layer normalisation over the features of ``[F]``, over the last axis of a sequence ``[T, D]``, or over the
    channels of ``[C, H, W]`` at each position (the channels-first LayerNorm of ConvNeXt)."""
    op: Literal["layernorm"] = "layernorm"
    eps: PositiveFloat = 1e-5
    elementwise_affine: Bool = True
    bias: Bool = True


class RMSNorm(NodeSpec):
    """Root-mean-square normalisation (``torch.nn.RMSNorm``) over the features of ``[F]`` or the last axis of a
    sequence ``[T, D]``: ``x / sqrt(mean(x**2) + eps) * weight``; ``eps`` None is the dtype's machine epsilon."""
    op: Literal["rmsnorm"] = "rmsnorm"
    eps: Optional[PositiveFloat] = None
    elementwise_affine: bool = True


class Embedding(NodeSpec):
    """A learned vector per token id (``torch.nn.Embedding``): token ids ``[T] -> [T, embedding_dim]``; the number
    of rows is the ``vocab`` of the token input it reads."""
    op: Literal["embedding"] = "embedding"
    embedding_dim: PositiveInt


class PositionEmbedding(NodeSpec):
    """A learned ``[T, D]`` table added to its ``[T, D]`` input (``<id>.weight``)."""
    op: Literal["position_embedding"] = "position_embedding"


class Attention(NodeSpec):
    """Multi-head self-attention on a sequence ``[T, D] -> [T, D]`` (``F.scaled_dot_product_attention``).

    Parameters ``q_proj`` ``[num_heads*head_dim, D]``, ``k_proj``/``v_proj`` ``[kv_heads*head_dim, D]`` and
    ``o_proj`` ``[D, num_heads*head_dim]`` (with biases when ``bias``). Query head ``h`` owns rows
    ``h*head_dim:(h+1)*head_dim`` of ``q_proj`` and the same columns of ``o_proj`` and reads kv head
    ``h // (num_heads // kv_heads)`` (Hugging Face's ``repeat_kv``): ``kv_heads`` below ``num_heads`` is grouped-query
    attention. ``head_dim`` defaults to ``D // num_heads``, ``kv_heads`` to ``num_heads``. ``qkv_bias``: whether the
    q/k/v projections have biases, when that differs from ``bias`` (timm's ``qkv_bias=False`` with a biased output
    projection); by default they follow ``bias``.

    ``rotary``: rotary position embeddings on the queries and keys (Hugging Face Llama's ``rotate_half`` form: the
    feature pairs ``(i, i + head_dim/2)`` of every head rotate by ``t * rope_theta**(-2i/head_dim)`` at token ``t``;
    the angles are computed in float32, as Llama computes them); ``head_dim`` must then be even."""
    op: Literal["attention"] = "attention"
    num_heads: PositiveInt
    head_dim: Optional[PositiveInt] = None
    kv_heads: Optional[PositiveInt] = None
    causal: bool = False
    bias: bool = True
    qkv_bias: Optional[bool] = None
    dropout: Probability = 0.0
    rotary: bool = False
    rope_theta: PositiveFloat = 10000.0

    @model_validator(mode="after")
    def _groups(self) -> "Attention":
        if self.kv_heads is not None and self.num_heads % self.kv_heads:
            raise ValueError(f"kv_heads={self.kv_heads} must divide num_heads={self.num_heads}")
        return self


class ToTokens(NodeSpec):
    """An image's positions as tokens: ``[C, H, W] -> [H*W, C]`` (a ViT's patch embedding is a strided conv2d, then
    this)."""
    op: Literal["to_tokens"] = "to_tokens"


class ClassToken(NodeSpec):
    """Prepends ``tokens`` learned tokens (``<id>.weight``, ``[tokens, D]``: a class token, and DeiT's distillation
    token or register tokens after it): ``[T, D] -> [T+tokens, D]``."""
    op: Literal["class_token"] = "class_token"
    tokens: PositiveInt = 1


class TokenPool(NodeSpec):
    """A sequence to one vector: ``[T, D] -> [D]``, the mean over the tokens or the first token (a class token);
    the first ``skip`` tokens left out (prefix tokens: ``x[:, skip:].mean(1)``, or ``x[:, skip]``)."""
    op: Literal["token_pool"] = "token_pool"
    mode: Literal["mean", "first"] = "mean"
    skip: NonNegativeInt = 0


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


class LeakyReLU(NodeSpec):
    """``x`` where ``x >= 0``, else ``negative_slope * x`` (CSPDarknet's activation)."""
    op: Literal["leaky_relu"] = "leaky_relu"
    negative_slope: float = 0.01


class GroupNorm(NodeSpec):
    """``nn.GroupNorm`` over ``[C, H, W]``: the channels split into ``num_groups`` groups of ``C / num_groups``, each
    normalised over its channels and positions, then a per-channel affine (``weight``, ``bias`` ``[C]``)."""
    op: Literal["group_norm"] = "group_norm"
    num_groups: PositiveInt
    eps: PositiveFloat = 1e-5
    affine: bool = True


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
    """A learnable per-channel multiplier (ConvNeXt's layer scale, timm's ``LayerScale``): ``x * weight`` with one
    weight per channel of a ``[C, H, W]`` input (per feature of ``[F]``, per feature of each token of a sequence
    ``[T, D]``); the weights start at ``init``. ``bias``: plus a learnable ``bias`` of the same shape, starting at
    zero (``x * weight + bias``). ``shared``: one weight (and bias) ``[1]`` for every channel instead of one per
    channel (timm's ``LearnableAffineBlock`` in HGNet-V2: ``scale * x + bias`` with two learnable numbers)."""
    op: Literal["scale"] = "scale"
    init: Float = 1.0
    bias: Bool = False
    shared: Bool = False


class GRN(NodeSpec):
    """Global response normalisation of ``[C, H, W]`` (ConvNeXt-V2's GRN, timm's ``GlobalResponseNorm``): each
    channel's L2 norm over the positions ``g[c]``, divided by the mean of the ``g`` over the channels plus ``eps``,
    is ``n[c]``; the output is ``x + bias + weight * x * n`` with ``weight`` and ``bias`` ``[C]`` (both starting at
    zero, so a new GRN is the identity)."""
    op: Literal["grn"] = "grn"
    eps: PositiveFloat = 1e-6


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
    value: Annotated[float, Field(allow_inf_nan=True, description="may be infinite (-.inf before a max pool); "
                                                                  "never NaN")] = 0.0

    @field_validator("value")
    @classmethod
    def _not_nan(cls, value: float) -> float:
        if value != value:
            raise ValueError("value is NaN; give a number (infinite is allowed)")
        return value


class WindowAttention(NodeSpec):
    """Multi-head self-attention inside windows of an image: ``[C, H, W] -> [C, H, W]`` (Swin's ``W-MSA`` /
    ``SW-MSA``, MaxViT's block and grid attention). The positions are cut into windows of ``window_size`` tokens;
    each window is one sequence for attention with the parameters of the ``attention`` op (``q_proj``, ``k_proj``,
    ``v_proj`` ``[num_heads*head_dim, C]``, ``o_proj`` ``[C, num_heads*head_dim]``; ``head_dim`` defaults to
    ``C // num_heads``; ``qkv_bias`` as the attention op's), and the windows are put back in place.

    * ``shift_size``: Swin's shifted windows: the image is rolled by ``-shift_size`` first (and back afterwards)
      and tokens that were not neighbours before the roll do not attend to each other (``-100`` added to their
      scores, as torchvision does). An image that is not a multiple of the window is padded with zeros at the
      bottom and right first (and cropped back); along an axis whose padded size is at most the window there is no
      shift (torchvision's rule).
    * ``grid``: MaxViT's grid attention: a window's tokens are spread over the image, ``H / window_size[0]`` rows
      and ``W / window_size[1]`` columns apart (both must divide); no padding, no shift.
    * ``position_bias``: what is added to the scores of tokens ``i, j`` of a window, per head: ``table`` a learned
      ``relative_position_bias_table`` ``[(2*wh-1)*(2*ww-1), num_heads]`` indexed by their offset (Swin v1, MaxViT);
      ``mlp`` Swin v2's continuous position bias ``16 * sigmoid(cpb_mlp(log-spaced offsets))`` (``cpb_mlp.0``
      ``Linear(2, cpb_hidden)``, ReLU, ``cpb_mlp.2`` ``Linear(cpb_hidden, num_heads, bias=False)``; the offsets are
      computed in float32, as torchvision computes them); ``none``.
    * ``cosine``: Swin v2's scaled cosine attention: ``cos(q, k) * exp(min(logit_scale, log 100))`` with a learned
      ``logit_scale`` ``[num_heads, 1, 1]``; the keys then have no bias (as in Swin v2). Otherwise the scores are
      ``q . k * scale``, ``scale`` by default ``head_dim ** -0.5`` (MaxViT's is ``C ** -0.5``)."""
    op: Literal["window_attention"] = "window_attention"
    num_heads: PositiveInt
    window_size: Pair
    head_dim: Optional[PositiveInt] = None
    shift_size: Union[NonNegativeInt, tuple[NonNegativeInt, NonNegativeInt]] = 0
    grid: Bool = False
    position_bias: Literal["table", "mlp", "none"] = "table"
    cpb_hidden: PositiveInt = 512
    cosine: Bool = False
    scale: Optional[PositiveFloat] = None
    bias: Bool = True
    qkv_bias: Optional[Bool] = None
    dropout: Probability = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> "WindowAttention":
        window = (self.window_size,) * 2 if isinstance(self.window_size, int) else tuple(self.window_size)
        shift = (self.shift_size,) * 2 if isinstance(self.shift_size, int) else tuple(self.shift_size)
        if any(s >= w for s, w in zip(shift, window)):
            raise ValueError(f"shift_size {list(shift)} must be smaller than window_size {list(window)}")
        if self.grid and any(shift):
            raise ValueError("grid attention has no shift (shift_size must be 0)")
        if self.cosine and self.scale is not None:
            raise ValueError("cosine attention has a learned logit_scale, not a fixed scale")
        return self


class Subsample(NodeSpec):
    """Every ``stride``-th position of ``[C, H, W]`` from ``offset`` on (``x[:, :, a::s, b::s]``): ``[C,
    ceil((H - a) / s), ceil((W - b) / s)]``. Swin's patch merging is a ``pad`` to even sizes, the four subsamples
    at offsets ``(0, 0), (1, 0), (0, 1), (1, 1)`` and a ``concat``."""
    op: Literal["subsample"] = "subsample"
    stride: Pair = 2
    offset: Union[NonNegativeInt, tuple[NonNegativeInt, NonNegativeInt]] = 0


# ---- split attention (ResNeSt's SplitAttn, SKNet's SelectiveKernel) -------------------------------------------

class RadixSoftmax(NodeSpec):
    """Split attention's softmax across the radix groups (timm's ``RadixSoftmax`` of ResNeSt; the softmax over the
    paths of SKNet's ``SelectiveKernelAttn`` is ``cardinality`` 1). The ``C`` channels of a ``[C, H, W]`` or ``[F]``
    input are read as ``[cardinality, radix, C / (cardinality * radix)]``; every channel is normalised by a softmax
    over the ``radix`` channels at its place, and the output is laid out ``[radix, cardinality, C / (cardinality *
    radix)]`` (the radix groups outermost, as the split convolution's output): output channel ``r * C/radix + g *
    C/(radix * cardinality) + i`` is the softmax over ``r`` of input channels ``g * C/cardinality + r * C/(radix *
    cardinality) + i``. With ``radix`` 1 it is a sigmoid (as timm's)."""
    op: Literal["radix_softmax"] = "radix_softmax"
    radix: PositiveInt
    cardinality: PositiveInt = 1


NODE_KINDS: tuple[type[NodeSpec], ...] = (
    Conv2d, Linear, BatchNorm2d, BatchNorm1d, LayerNorm, ReLU, ReLU6, GELU, SiLU, Sigmoid, Tanh, Hardswish,
    MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, GlobalAvgPool, Flatten, Dropout, Add, Mul, Concat, Identity,
    Hardsigmoid, Scale, StochasticDepth, ChannelShuffle, Slice, Pad, RMSNorm, Embedding,
    PositionEmbedding, Attention, ToTokens, ClassToken, TokenPool, ConvTranspose2d, Upsample, LSTM, GRU,
    WindowAttention, Subsample, LeakyReLU, GroupNorm, GRN,
    RadixSoftmax,
)

Node = Annotated[Union[NODE_KINDS], Field(discriminator="op")]  # type: ignore[valid-type]

#: op name -> node model
KIND_BY_OP: dict[str, type[NodeSpec]] = {k.model_fields["op"].default: k for k in NODE_KINDS}
