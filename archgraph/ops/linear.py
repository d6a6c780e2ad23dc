"""Linear layers and the sequence ops around them: ``linear``, ``embedding``, ``position_embedding``,
``to_tokens``, ``class_token``, ``token_pool``."""
from __future__ import annotations

import math
from typing import Literal, Optional

from .common import (
    A_,
    ACT,
    EMBED_COLOUR,
    EXTRA,
    F_,
    LINEAR_COLOUR,
    TOKEN_COLOUR,
    bad,
    call,
    channel_width,
    every,
    fixed,
    need_rank,
    tokens_of,
)
from .node import Bool, NodeSpec, NonNegativeInt, PositiveFloat, PositiveInt, Str
from .opdef import SOURCE, Build, Coupling, Export, Imports, OpDef, RewriteFacts, Shape, Sizes, Traits

# ---- node kinds ------------------------------------------------------------------------------------------------


class Linear(NodeSpec):
    """Fully connected layer (``torch.nn.Linear``) on a flat ``[F]`` input, or on the last axis of a sequence
    ``[T, D]`` (``[T, D] -> [T, out_features]``, as ``nn.Linear`` does).

    ``tied_to``: the id of an ``embedding`` node whose table is this layer's weight (a language model's LM head tied
    to its input embedding, ``tie_word_embeddings``): ``out_features`` is the embedding's vocabulary and the input
    width its ``embedding_dim``; the built module holds one tensor for both, the weights file stores it once, and
    the parameter counts count it once."""
    op: Literal["linear"] = "linear"
    out_features: PositiveInt
    bias: Bool = True
    tied_to: Optional[Str] = None


class Embedding(NodeSpec):
    """A learned vector per token id (``torch.nn.Embedding``): token ids ``[T] -> [T, embedding_dim]``; the number
    of rows is the ``vocab`` of the token input it reads. ``scale``: the rows multiplied by it (Gemma's
    ``sqrt(hidden_size)``, rounded to the table's dtype first as Gemma's is); a tied head reads the table itself."""
    op: Literal["embedding"] = "embedding"
    embedding_dim: PositiveInt
    scale: Optional[PositiveFloat] = None


class PositionEmbedding(NodeSpec):
    """A learned ``[T, D]`` table added to its ``[T, D]`` input (``<id>.weight``)."""
    op: Literal["position_embedding"] = "position_embedding"


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


# ---- facts ----------------------------------------------------------------------------------------------------


def linear_shape(node: Linear, ins):
    if len(ins[0]) == 2:
        return (ins[0][0], node.out_features)
    need_rank(ins, 1, "linear; flatten or pool first")
    return (node.out_features,)


def linear_params(node: Linear, ins, out):
    weight = 0 if node.tied_to is not None else channel_width(ins[0]) * node.out_features   # counted once
    return weight + (node.out_features if node.bias else 0)


def linear_macs(node: Linear, ins, out):
    return channel_width(ins[0]) * node.out_features * tokens_of(ins[0])


def linear_layout(node: Linear, ins):
    layout: dict[str, tuple[Optional[int], Optional[int]]] = {"weight": (0, 1)}
    if node.bias:
        layout["bias"] = (0, None)
    return layout


def linear_resize(node: Linear, width: int) -> dict:
    return {"out_features": width}


def linear_module(T, node: Linear, ins):
    return T.nn.Linear(channel_width(ins[0]), node.out_features, bias=node.bias)


def linear_nonzero_macs(node, out: Shape, nonzero: int) -> int:
    return nonzero * tokens_of(out)


def linear_source(m) -> str:
    return f"nn.Linear({m.in_features}, {m.out_features}, bias={m.bias is not None})"


def embedding_shape(node: Embedding, ins):
    shape = ins[0]
    if getattr(shape, "vocab", None) is None:
        bad("in", f"reads token ids: its input must be a token input ({{shape: [T], vocab: V}}), got a float "
                  f"input of shape {list(shape)}")
    return (shape[0], node.embedding_dim)


def embedding_params(node: Embedding, ins, out):
    return ins[0].vocab * node.embedding_dim


def embedding_layout(node: Embedding, ins):
    return {"weight": (1, None)}   # [vocab, D]: the channels are the columns


def embedding_resize(node: Embedding, width: int) -> dict:
    return {"embedding_dim": width}


def embedding_module(T, node: Embedding, ins):
    if node.scale is not None:
        return T.extra.ScaledEmbedding(ins[0].vocab, node.embedding_dim, node.scale)
    return T.nn.Embedding(ins[0].vocab, node.embedding_dim)


def embedding_source(m) -> str:
    return f"nn.Embedding({m.num_embeddings}, {m.embedding_dim})"


def scaled_embedding_source(m) -> str:
    return f"ScaledEmbedding({m.num_embeddings}, {m.embedding_dim}, {m.scale!r})"


def position_shape(node, ins):
    return tuple(need_rank(ins, 2, node.op))


def to_tokens_shape(node, ins):
    c, h, w = need_rank(ins, 3, node.op)
    return (h * w, c)


def class_token_shape(node: ClassToken, ins):
    t, d = need_rank(ins, 2, node.op)
    return (t + node.tokens, d)


def token_pool_shape(node: TokenPool, ins):
    t, d = need_rank(ins, 2, node.op)
    if node.skip >= t:
        bad("skip", f"skip={node.skip} leaves none of the {t} tokens")
    return (d,)


def table_params(node, ins, out):
    return math.prod(ins[0])


def token_params(node: ClassToken, ins, out):
    return channel_width(ins[0]) * node.tokens


def column_layout(node, ins):
    return {"weight": (1, None)}


DEFS: tuple[OpDef, ...] = (
    OpDef(
        kind=Linear,
        sizes=Sizes(shape=linear_shape, params=linear_params, macs=linear_macs, nonzero_macs=linear_nonzero_macs,
                    in_rank=1),
        coupling=Coupling(role=fixed(SOURCE), layout=linear_layout, width_field="out_features"),
        traits=Traits(weighted=True),
        build=Build(module=linear_module),
        rewrite=RewriteFacts(identity_fill="eye", resize=linear_resize),
        export=Export(colour=LINEAR_COLOUR, python={"torch.nn.Linear": linear_source}),
        imports=Imports(modules=("torch.nn.Linear",), functions=(F_ + "linear", A_ + "linear.default")),
    ),
    OpDef(
        kind=Embedding,
        sizes=Sizes(shape=embedding_shape, params=embedding_params),
        coupling=Coupling(role=fixed(SOURCE), layout=embedding_layout, width_field="embedding_dim"),
        build=Build(module=embedding_module),
        rewrite=RewriteFacts(resize=embedding_resize),
        export=Export(colour=EMBED_COLOUR, python={"torch.nn.Embedding": embedding_source,
                                                   EXTRA + ".ScaledEmbedding": scaled_embedding_source}),
        imports=Imports(modules=("torch.nn.Embedding",)),
    ),
    # a [T, D] / [1, T, D] parameter (or constant) added to a sequence
    OpDef(
        kind=PositionEmbedding,
        sizes=Sizes(shape=position_shape, params=table_params, in_rank=2),
        coupling=Coupling(role=ACT, layout=column_layout),
        build=Build(module=lambda T, n, ins: T.extra.PositionEmbedding(*ins[0])),
        rewrite=RewriteFacts(offset=True),
        export=Export(colour=EMBED_COLOUR,
                      python={EXTRA + ".PositionEmbedding":
                                  lambda m: f"PositionEmbedding({m.weight.shape[0]}, {m.weight.shape[1]})"}),
        imports=Imports(modules=(EXTRA + ".PositionEmbedding",),
                        via="a [T, D] or [1, T, D] parameter added to a sequence"),
    ),
    OpDef(
        kind=ToTokens,
        sizes=Sizes(shape=to_tokens_shape, in_rank=3),
        coupling=Coupling(role=ACT),
        build=Build(function=call(lambda T: T.extra.to_tokens)),
        rewrite=RewriteFacts(nonneg=every),
        export=Export(colour=TOKEN_COLOUR),
        imports=Imports(functions=(EXTRA + ".to_tokens",)),
    ),
    OpDef(
        kind=ClassToken,
        sizes=Sizes(shape=class_token_shape, params=token_params, in_rank=2),
        coupling=Coupling(role=ACT, layout=column_layout),
        build=Build(module=lambda T, n, ins: T.extra.ClassToken(ins[0][1], n.tokens)),
        rewrite=RewriteFacts(offset=True),
        export=Export(colour=TOKEN_COLOUR,
                      python={EXTRA + ".ClassToken":
                                  lambda m: f"ClassToken({m.weight.shape[1]}, {m.weight.shape[0]})"}),
        imports=Imports(modules=(EXTRA + ".ClassToken",)),
    ),
    OpDef(
        kind=TokenPool,
        sizes=Sizes(shape=token_pool_shape, in_rank=2),
        coupling=Coupling(role=ACT),
        build=Build(function=call(lambda T: T.extra.token_pool, mode=lambda n: n.mode, skip=lambda n: n.skip)),
        rewrite=RewriteFacts(nonneg=every),
        export=Export(colour=TOKEN_COLOUR),
        imports=Imports(functions=(EXTRA + ".token_pool",), via="x.mean(dim=1) and x[:, 0] of a sequence"),
    ),
)
