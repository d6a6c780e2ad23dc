"""Linear maps and tables: ``nn.Linear`` / ``F.linear`` (a 1x1 convolution over a channels-last image; the output
projection of hand-written attention), ``nn.Embedding``, and archgraph's own ``PositionEmbedding``, ``ClassToken``
and ``MoE`` (a built graph imported back)."""
from __future__ import annotations

from typing import Optional

from torch import nn

from .. import table
from ..arguments import module_state, owner, param
from ..values import CL, TND, TOKENS, Attended, Val
from . import hand_attention


@table.modules_of("linear")
def linear(c, n, m: nn.Linear, x):
    if isinstance(x, Attended):
        return hand_attention.attention_node(c, n.target.rpartition(".")[0] or "attention", x, m.weight, m.bias)
    x = c.tensor(x)
    if x.layout == CL:  # a Linear over channels-last positions is a 1x1 convolution
        weights = module_state(m)
        weights["weight"] = weights["weight"].reshape(m.out_features, m.in_features, 1, 1)
        return Val(c.emit(None, "conv2d", [x.node], weights, out_channels=m.out_features, kernel_size=1,
                          bias=m.bias is not None), CL)
    return linear_node(c, None, m, x)


def linear_node(c, hint: Optional[str], m: nn.Linear, x: Val) -> Val:
    """A ``linear`` node: on ``[N, F]``, or on the last axis of a sequence (either layout, which it keeps)."""
    x = x if x.layout == TND else c.cf(x)
    if len(c.shape(x)) not in (1, 2):
        x = c.cf(x, 1)
    return Val(c.emit(hint, "linear", [x.node], module_state(m), out_features=m.out_features,
                      bias=m.bias is not None), x.layout)


@table.functions_of("linear")
def f_linear(c, n, x, weight, bias=None):
    w, b = param(c, weight, "weight"), param(c, bias, "bias")
    if isinstance(x, Attended) and w is not None:
        return hand_attention.attention_node(c, (owner(weight) or "").rpartition(".")[0] or "attention", x, w, b)
    x = c.tensor(x)
    if w is None or w.dim() != 2:
        raise c.fail("F.linear needs a 2-D weight parameter")
    out = int(w.shape[0])
    if x.layout == CL:  # over channels-last positions: a 1x1 convolution
        weights = {"weight": w.reshape(out, -1, 1, 1)}
        weights.update({} if b is None else {"bias": b})
        return Val(c.emit(owner(weight), "conv2d", [x.node], weights, out_channels=out, kernel_size=1,
                          bias=b is not None), CL)
    x = x if x.layout == TND else c.cf(x)
    if len(c.shape(x)) not in (1, 2):
        x = c.cf(x, 1)
    weights = {"weight": w} if b is None else {"weight": w, "bias": b}
    return Val(c.emit(owner(weight), "linear", [x.node], weights, out_features=out, bias=b is not None), x.layout)


@table.modules_of("embedding")
def embedding(c, n, m: nn.Embedding, x):
    x = c.tensor(x, tokens=True)
    if x.layout != TOKENS:
        raise c.fail("nn.Embedding must read the token input (from_module(..., input_shape=(T,), vocab=V))")
    for attr in ("padding_idx", "max_norm"):
        if getattr(m, attr) is not None:
            raise c.fail(f"{attr}={getattr(m, attr)} is not supported (the embedding op is a plain table)")
    vocab = c.shape(x).vocab
    if m.num_embeddings != vocab:
        raise c.fail(f"the table has {m.num_embeddings} rows but the input's vocab is {vocab}; import with "
                     f"vocab={m.num_embeddings}")
    return Val(c.emit(None, "embedding", [x.node], module_state(m), embedding_dim=m.embedding_dim))


@table.modules_of("position_embedding")
def position_embedding(c, n, m, x):
    """archgraph's own ``PositionEmbedding``: a ``weight`` table next to a sequence."""
    x = c.seq(x, True, type(m).__name__)
    return Val(c.emit(None, "position_embedding", [x.node], module_state(m)))


@table.modules_of("class_token")
def class_token(c, n, m, x):
    """archgraph's own ``ClassToken``."""
    return Val(c.emit(None, "class_token", [c.seq(x, True, "ClassToken").node], module_state(m),
                      tokens=int(m.weight.shape[0])))


@table.modules_of("moe")
def moe(c, n, m, x):
    """archgraph's own ``MoE`` (a routed mixture of SwiGLU experts): its sizes are the module's attributes."""
    x = c.seq(x, True, type(m).__name__)
    return Val(c.emit(None, "moe", [x.node], module_state(m), num_experts=m.num_experts, top_k=m.top_k,
                      hidden=m.hidden, normalize=bool(m.normalize), activation=m.activation, expert_ramp=m.ramp))
