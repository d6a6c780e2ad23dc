"""Attention: ``attention`` over a sequence, ``window_attention`` over an image, and split attention's
``radix_softmax``."""
from __future__ import annotations

import math
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, model_validator

from .common import ATTENTION_COLOUR, EXTRA, F_, always, bad, call, channel_width, fixed, need_rank, need_ranks, pair
from .node import Bool, Float, NodeSpec, NonNegativeInt, Pair, PositiveFloat, PositiveInt, Probability
from .opdef import MIXER, SHUFFLE, Build, Coupling, Export, Imports, OpDef, RewriteFacts, Sizes

# ---- node kinds ------------------------------------------------------------------------------------------------


class RopeScaling(BaseModel):
    """How a rotary embedding's frequencies are rescaled for long contexts (Hugging Face's ``rope_parameters``):
    ``linear`` divides every frequency by ``factor``; ``llama3`` (Llama 3.1 to 3.3) divides the low frequencies
    (wavelength above ``original_max_position_embeddings / low_freq_factor``) by ``factor``, keeps the high ones
    (below ``... / high_freq_factor``) and blends the two between."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rope_type: Literal["llama3", "linear"] = "llama3"
    factor: PositiveFloat
    low_freq_factor: PositiveFloat = 1.0
    high_freq_factor: PositiveFloat = 4.0
    original_max_position_embeddings: PositiveInt = 8192


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
    the angles are computed in float32, as Llama computes them); ``head_dim`` must then be even. ``rope_scaling``:
    its frequencies rescaled for long contexts (Llama 3.x's ``llama3``, or ``linear``).

    ``qk_norm``: an RMSNorm over each query and key head's ``head_dim`` features before the rotation (Qwen3's
    ``q_norm`` / ``k_norm``: weights ``q_norm.weight``, ``k_norm.weight`` ``[head_dim]``, shared by the heads;
    epsilon ``qk_norm_eps``); with ``qk_norm_span: all`` one RMSNorm over all the heads' features of q and one of k
    (OLMo 2: ``q_norm.weight`` ``[num_heads*head_dim]``, ``k_norm.weight`` ``[kv_heads*head_dim]``, a block per
    head, so removing or adding heads changes the others' normalisation: not exact). ``qk_norm_offset``: those norms'
    gain is ``offset + weight`` (Gemma 3's q/k norms: 1).

    ``scale``: the factor of the scores ``q . k`` (by default ``head_dim ** -0.5``; Gemma's
    ``query_pre_attn_scalar ** -0.5``). ``softcap``: the scores capped as ``softcap * tanh(s / softcap)`` before the
    mask and the softmax (Gemma 2's ``attn_logit_softcapping``). ``window``: sliding-window attention (Mistral's,
    Gemma's local layers): query ``i`` reads only keys ``j`` with ``i - j < window`` (the ``window`` latest
    positions, itself included); it goes with ``causal``."""
    op: Literal["attention"] = "attention"
    num_heads: PositiveInt
    head_dim: Optional[PositiveInt] = None
    kv_heads: Optional[PositiveInt] = None
    causal: Bool = False
    bias: Bool = True
    qkv_bias: Optional[Bool] = None
    dropout: Probability = 0.0
    rotary: Bool = False
    rope_theta: PositiveFloat = 10000.0
    rope_scaling: Optional[RopeScaling] = None
    qk_norm: Bool = False
    qk_norm_eps: PositiveFloat = 1e-6
    qk_norm_span: Literal["head", "all"] = "head"
    qk_norm_offset: Float = 0.0
    scale: Optional[PositiveFloat] = None
    softcap: Optional[PositiveFloat] = None
    window: Optional[PositiveInt] = None

    @model_validator(mode="after")
    def _groups(self) -> "Attention":
        if self.rope_scaling is not None and not self.rotary:
            raise ValueError("rope_scaling goes with rotary: true")
        if self.window is not None and not self.causal:
            raise ValueError("window (sliding-window attention) goes with causal: true")
        if self.qk_norm_offset and not self.qk_norm:
            raise ValueError("qk_norm_offset goes with qk_norm: true")
        if self.kv_heads is not None and self.num_heads % self.kv_heads:
            raise ValueError(f"kv_heads={self.kv_heads} must divide num_heads={self.num_heads}")
        return self


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


# ---- facts ----------------------------------------------------------------------------------------------------


def attention_dims(node: Attention, ins) -> tuple[int, int, int, int]:
    """``(D, num_heads, head_dim, kv_heads)`` of an attention node reading ``ins``."""
    d = channel_width(ins[0])
    return d, node.num_heads, node.head_dim or d // node.num_heads, node.kv_heads or node.num_heads


def attention_shape(node: Attention, ins):
    shape = need_rank(ins, 2, node.op)
    if node.head_dim is None and shape[1] % node.num_heads:
        bad("num_heads", f"num_heads={node.num_heads} does not divide the {shape[1]} features; set head_dim")
    if node.rotary and attention_dims(node, ins)[2] % 2:
        bad("rotary", f"rotary position embeddings rotate pairs of features: head_dim "
                      f"{attention_dims(node, ins)[2]} must be even")
    return tuple(shape)


def qkv_bias(node: Attention) -> bool:
    """Whether an attention's q/k/v projections have biases (``qkv_bias``, by default ``bias``)."""
    return node.bias if node.qkv_bias is None else node.qkv_bias


def attention_params(node: Attention, ins, out):
    d, h, hd, kv = attention_dims(node, ins)
    weights = d * h * hd * 2 + d * kv * hd * 2
    return (weights + ((h + 2 * kv) * hd if qkv_bias(node) else 0) + (d if node.bias else 0)
            + (qk_norm_size(node, h, hd, kv) if node.qk_norm else 0))


def qk_norm_size(node: Attention, h: int, hd: int, kv: int) -> int:
    """The entries of an attention's q and k norm weights."""
    return (h + kv) * hd if node.qk_norm_span == "all" else 2 * hd


def attention_macs(node: Attention, ins, out):
    """The four projections at every token, plus the ``T^2`` scores (``q . k``) and the ``T^2`` weighted sum of
    values, per head (all ``T^2`` pairs, causal or not)."""
    d, h, hd, kv = attention_dims(node, ins)
    t = ins[0][0]
    return t * (2 * d * h * hd + 2 * d * kv * hd) + 2 * t * t * h * hd


def attention_layout(node: Attention, ins):
    """Input channels are the columns of q/k/v, output channels the rows of o; the head axes (q/k/v rows, o columns)
    are no channel axis: the head rules map them."""
    layout = {"q_proj.weight": (None, 1), "k_proj.weight": (None, 1), "v_proj.weight": (None, 1),
              "o_proj.weight": (0, None)}
    if qkv_bias(node):
        layout.update({"q_proj.bias": (None, None), "k_proj.bias": (None, None), "v_proj.bias": (None, None)})
    if node.bias:
        layout["o_proj.bias"] = (0, None)
    if node.qk_norm:
        layout.update({"q_norm.weight": (None, None), "k_norm.weight": (None, None)})
    return layout


def attention_heads(node: Attention, ins):
    """``(num_heads, head_dim, {tensor: axis})``: the tensors holding one block of ``head_dim`` entries per query
    head on ``axis``, ``o_proj.weight`` (which reads the heads' outputs) first; ``k_proj``/``v_proj`` only when
    every query head has its own kv head."""
    _, h, hd, kv = attention_dims(node, ins)
    names = ["o_proj.weight", "q_proj.weight"] + (["k_proj.weight", "v_proj.weight"] if kv == h else [])
    if qkv_bias(node):
        names += ["q_proj.bias"] + (["k_proj.bias", "v_proj.bias"] if kv == h else [])
    if node.qk_norm and node.qk_norm_span == "all":   # OLMo 2: a block of the norms' weights per head
        names += ["q_norm.weight"] + (["k_norm.weight"] if kv == h else [])
    return h, hd, {n: (1 if n == "o_proj.weight" else 0) for n in names}


def attention_pin(node: Attention, ins) -> dict:
    return {} if node.head_dim is not None else {"head_dim": attention_dims(node, ins)[2]}


def attention_module(T, node: Attention, ins):
    d, h, hd, kv = attention_dims(node, ins)
    scaling = node.rope_scaling.model_dump() if node.rope_scaling is not None else None
    return T.extra.Attention(d, h, hd, kv, causal=node.causal, bias=node.bias, dropout=node.dropout,
                             rotary=node.rotary, rope_theta=node.rope_theta, qkv_bias=node.qkv_bias,
                             rope_scaling=scaling, qk_norm_eps=node.qk_norm_eps if node.qk_norm else None,
                             qk_norm_span=node.qk_norm_span, window=node.window, softcap=node.softcap,
                             scale=node.scale, qk_norm_offset=node.qk_norm_offset)


def attention_source(m) -> str:
    return (f"Attention({m.dim}, {m.num_heads}, {m.head_dim}, {m.kv_heads}, causal={m.causal}, "
            f"bias={m.o_proj.bias is not None}, dropout={m.dropout!r}"
            + (f", rotary=True, rope_theta={m.rope_theta!r}" if m.rotary else "")
            + (f", rope_scaling={m.rope_scaling!r}" if m.rope_scaling else "")
            + (f", qk_norm_eps={m.qk_norm_eps!r}" if m.qk_norm_eps is not None else "")
            + (f", qk_norm_span={m.qk_norm_span!r}" if m.qk_norm_span != "head" else "")
            + "".join(f", {k}={getattr(m, k)!r}" for k in ("window", "softcap", "scale") if getattr(m, k) is not None)
            + (f", qk_norm_offset={m.qk_norm_offset!r}" if m.qk_norm_offset else "")
            + (f", qkv_bias={m.q_proj.bias is not None})" if (m.q_proj.bias is None) != (m.o_proj.bias is None)
               else ")"))


def window_dims(node: WindowAttention, ins) -> tuple[int, int, int]:
    """``(C, num_heads, head_dim)`` of a window attention node reading ``ins``."""
    d = channel_width(ins[0])
    return d, node.num_heads, node.head_dim or d // node.num_heads


def window_shape(node: WindowAttention, ins):
    c, h, w = need_rank(ins, 3, node.op)
    if node.head_dim is None and c % node.num_heads:
        bad("num_heads", f"num_heads={node.num_heads} does not divide the {c} channels; set head_dim")
    wh, ww = pair(node.window_size)
    if node.grid and (h % wh or w % ww):
        bad("window_size", f"grid attention needs window_size {[wh, ww]} to divide the {h}x{w} positions")
    if node.position_bias == "mlp" and min(wh, ww) < 2:
        bad("window_size", f"the continuous position bias (position_bias 'mlp') needs windows of at least 2x2, "
                           f"got {[wh, ww]}")
    return (c, h, w)


def window_tables(node: WindowAttention, ins) -> dict[str, tuple[int, ...]]:
    """The shapes of a window attention's position tensors (``relative_position_bias_table``, ``cpb_mlp``,
    ``logit_scale``), by name."""
    _, h, _ = window_dims(node, ins)
    wh, ww = pair(node.window_size)
    shapes: dict[str, tuple[int, ...]] = {}
    if node.position_bias == "table":
        shapes["relative_position_bias_table"] = ((2 * wh - 1) * (2 * ww - 1), h)
    elif node.position_bias == "mlp":
        shapes.update({"cpb_mlp.0.weight": (node.cpb_hidden, 2), "cpb_mlp.0.bias": (node.cpb_hidden,),
                       "cpb_mlp.2.weight": (h, node.cpb_hidden)})
    if node.cosine:
        shapes["logit_scale"] = (h, 1, 1)
    return shapes


def window_biases(node: WindowAttention) -> tuple[str, ...]:
    """The projections with a bias: q, k, v (``qkv_bias``, by default ``bias``; no key bias with ``cosine``, as in
    Swin v2) and o (``bias``)."""
    qkv = node.bias if node.qkv_bias is None else node.qkv_bias
    return tuple(p for p, has in (("q_proj", qkv), ("k_proj", qkv and not node.cosine), ("v_proj", qkv),
                                  ("o_proj", node.bias)) if has)


def window_params(node: WindowAttention, ins, out):
    d, h, hd = window_dims(node, ins)
    biases = sum(d if p == "o_proj" else h * hd for p in window_biases(node))
    return 4 * d * h * hd + biases + sum(math.prod(s) for s in window_tables(node, ins).values())


def window_macs(node: WindowAttention, ins, out):
    """The four projections at every position of the image padded to whole windows, plus the ``N^2`` scores and
    the ``N^2`` weighted sum of values of every window of ``N`` tokens, per head (the position bias MLP is not
    counted)."""
    d, h, hd = window_dims(node, ins)
    wh, ww = pair(node.window_size)
    _, rows, cols = ins[0]
    t = (-(-rows // wh) * wh) * (-(-cols // ww) * ww)
    return t * 4 * d * h * hd + 2 * t * wh * ww * h * hd


def window_layout(node: WindowAttention, ins):
    """As the attention op's: input channels are the columns of q/k/v, output channels the rows of o; the head axes
    and the position tensors hold no channel axis."""
    layout = {"q_proj.weight": (None, 1), "k_proj.weight": (None, 1), "v_proj.weight": (None, 1),
              "o_proj.weight": (0, None)}
    layout.update({f"{p}.bias": (0 if p == "o_proj" else None, None) for p in window_biases(node)})
    layout.update({name: (None, None) for name in window_tables(node, ins)})
    return layout


def window_pin(node: WindowAttention, ins) -> dict:
    return {} if node.head_dim is not None else {"head_dim": window_dims(node, ins)[2]}


def window_heads(node: WindowAttention, ins):
    """As :func:`attention_heads` (every query head has its own k and v); the position tables' one entry per head
    is :func:`window_head_tables`."""
    _, h, hd = window_dims(node, ins)
    names = ["o_proj.weight", "q_proj.weight", "k_proj.weight", "v_proj.weight"]
    names += [f"{p}.bias" for p in window_biases(node) if p != "o_proj"]
    return h, hd, {n: (1 if n == "o_proj.weight" else 0) for n in names}


def window_head_tables(node: WindowAttention, ins) -> dict[str, int]:
    """``{tensor: axis}``: the tensors holding one entry per head on ``axis`` (the position bias table's columns,
    the position MLP's output rows, the logit scales)."""
    axes = {"relative_position_bias_table": 1, "cpb_mlp.2.weight": 0, "logit_scale": 0}
    return {name: axes[name] for name in window_tables(node, ins) if name in axes}


def window_module(T, node: WindowAttention, ins):
    d, h, hd = window_dims(node, ins)
    return T.extra.WindowAttention(d, h, hd, pair(node.window_size), pair(node.shift_size), grid=node.grid,
                                   position_bias=node.position_bias, cpb_hidden=node.cpb_hidden, cosine=node.cosine,
                                   scale=node.scale, bias=node.bias, qkv_bias=node.qkv_bias, dropout=node.dropout)


def window_source(m) -> str:
    return (f"WindowAttention({m.dim}, {m.num_heads}, {m.head_dim}, {m.window_size}, {m.shift_size}, grid={m.grid}, "
            f"position_bias={m.position_bias!r}, cpb_hidden={m.cpb_hidden}, cosine={m.cosine}, scale={m.scale!r}, "
            f"bias={m.o_proj.bias is not None}, qkv_bias={m.q_proj.bias is not None}, dropout={m.dropout!r})")


def radix_shape(node: RadixSoftmax, ins):
    shape = need_ranks(ins, (1, 3), node.op)
    blocks = node.radix * node.cardinality
    if shape[0] % blocks:
        bad("radix", f"radix={node.radix} times cardinality={node.cardinality} does not divide the {shape[0]} "
                     f"channels")
    return tuple(shape)


def radix_permutation(channels: int, radix: int, cardinality: int) -> list[int]:
    """``perm`` with output channel ``c`` of a ``radix_softmax`` equal to (the softmax at) input channel
    ``perm[c]``: ``[cardinality, radix, i]`` in, ``[radix, cardinality, i]`` out.

    >>> radix_permutation(8, 2, 2)
    [0, 1, 4, 5, 2, 3, 6, 7]
    """
    per = channels // (radix * cardinality)
    return [g * radix * per + r * per + i for r in range(radix) for g in range(cardinality) for i in range(per)]


def radix_blocks(node: RadixSoftmax, width: int) -> tuple[int, list[int]]:
    """The channels at one place of every ``[g, r]`` block are tied: a softmax over the radix reads them together,
    and removing them from every cardinality group alike keeps the ``[cardinality, radix, i]`` layout. A sigmoid
    (radix 1) ties nothing."""
    blocks = node.radix * node.cardinality if node.radix > 1 else 1
    return blocks, radix_permutation(width, node.radix, node.cardinality)


DEFS: tuple[OpDef, ...] = (
    # an encoder layer is imported as its norms, attention, linears and residual adds around this op
    # and hand-written attention (timm's, nanoGPT's): heads of linear projections, these functions, the
    # heads merged back and an output projection
    OpDef(
        kind=Attention,
        sizes=Sizes(shape=attention_shape, params=attention_params, macs=attention_macs, in_rank=2),
        coupling=Coupling(role=fixed(MIXER), layout=attention_layout, heads=attention_heads),
        build=Build(module=attention_module),
        rewrite=RewriteFacts(pin=attention_pin),
        export=Export(colour=ATTENTION_COLOUR, python={EXTRA + ".Attention": attention_source}),
        imports=Imports(modules=("torch.nn.MultiheadAttention", "torch.nn.TransformerEncoderLayer",
                                 "torch.nn.TransformerEncoder", EXTRA + ".Attention"),
                        functions=(F_ + "scaled_dot_product_attention", "torch.matmul", "operator.matmul",
                                   "torch.softmax", F_ + "softmax", "torch.unbind"),
                        methods=("softmax", "masked_fill", "unbind", "matmul", "__matmul__")),
    ),
    OpDef(
        kind=WindowAttention,
        sizes=Sizes(shape=window_shape, params=window_params, macs=window_macs, in_rank=3),
        coupling=Coupling(role=fixed(MIXER), layout=window_layout, heads=window_heads,
                          head_tables=window_head_tables),
        build=Build(module=window_module),
        rewrite=RewriteFacts(pin=window_pin),
        export=Export(colour=ATTENTION_COLOUR, python={EXTRA + ".WindowAttention": window_source}),
        imports=Imports(via="torchvision's Swin (ShiftedWindowAttention, ShiftedWindowAttentionV2) and MaxViT "
                            "(PartitionAttentionLayer) attention modules, and archgraph's own WindowAttention: "
                            "archgraph.interop.importer.handlers.windows"),
    ),
    # softmax(0) = 1/radix, sigmoid(0) = 0.5
    OpDef(
        kind=RadixSoftmax,
        sizes=Sizes(shape=radix_shape),
        coupling=Coupling(role=fixed(SHUFFLE), shuffle=radix_blocks),
        build=Build(function=call(lambda T: T.extra.radix_softmax, radix=lambda n: n.radix,
                                  cardinality=lambda n: n.cardinality)),
        rewrite=RewriteFacts(nonneg=always, shifts_zero=True),
        export=Export(colour=ATTENTION_COLOUR),
        imports=Imports(via="timm's RadixSoftmax (a view to [N, cardinality, radix, -1], transpose(1, 2), a "
                            "softmax over dim 1, a reshape back) and a softmax over the radix axis of a [N, radix, "
                            "C, H, W] view (SelectiveKernelAttn): archgraph.interop.importer.handlers.split_attention"),
    ),
)
