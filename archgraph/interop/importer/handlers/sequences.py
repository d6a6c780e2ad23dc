"""Sequence layers: ``nn.LSTM`` / ``nn.GRU``, ``nn.MultiheadAttention`` (self-attention), ``nn.TransformerEncoderLayer``
and ``nn.TransformerEncoder`` (written node by node around one ``attention``), archgraph's own ``Attention``, and
archgraph's ``to_tokens`` / ``token_pool`` functions."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ....fx.torchnames import resolve, try_resolve
from ....ops.registry import OPS
from ....ops.spec import KIND_BY_OP
from .. import table
from ..arguments import module_state
from ..values import Param, Unconverted, Val
from .linears import linear_node
from .norms import layernorm_node


def _rnn(op: str):
    """``nn.LSTM`` / ``nn.GRU`` from a zero state: the output is ``(sequence, Unconverted final state)``."""
    def handler(c, n, m, x, hx=None):
        if hx is not None:
            raise c.fail("an initial state is not supported (the op starts from zeros)")
        if m.bidirectional:
            raise c.fail(f"bidirectional=True is not supported: the {op} op runs forward in time only")
        if getattr(m, "proj_size", 0):
            raise c.fail(f"proj_size={m.proj_size} is not supported")
        x = c.seq(x, m.batch_first, type(m).__name__)
        out = c.emit(None, op, [x.node], module_state(m), hidden_size=m.hidden_size, num_layers=m.num_layers,
                     bias=bool(m.bias), dropout=float(m.dropout))
        return Val(out, x.layout), Unconverted(f"the final state of '{n.target}'")
    return handler


lstm = table.modules_of("lstm")(_rnn("lstm"))
gru = table.modules_of("gru")(_rnn("gru"))


def _causal(c, mask, is_causal, t: int) -> bool:
    """Whether an attention mask is exactly the causal one (``True`` above the diagonal, or ``-inf`` there and 0
    elsewhere, as ``nn.Transformer.generate_square_subsequent_mask``); any other mask is refused."""
    if mask is None:
        if is_causal:
            raise c.fail("is_causal=True without its causal attn_mask is not supported")
        return False
    if not isinstance(mask, Param):
        raise c.fail("an attention mask computed from the input is not supported (only a constant causal mask)")
    m = mask.tensor
    upper = torch.ones(t, t, dtype=torch.bool, device=m.device).triu(1)
    if tuple(m.shape) != (t, t):
        raise c.fail(f"an attention mask of shape {list(m.shape)} is not supported (only the causal [T, T] mask, "
                     f"T = {t})")
    if m.dtype == torch.bool:
        ok = torch.equal(m, upper)
    else:
        ok = bool((m[upper] == float("-inf")).all() and (m[~upper] == 0).all())
    if not ok:
        raise c.fail(f"the attention mask '{mask.name}' is not the causal mask (True or -inf above the diagonal, "
                     f"False or 0 elsewhere); other masks are not supported")
    return True


def _mha(c, hint: Optional[str], m: nn.MultiheadAttention, x: Val, causal: bool) -> Val:
    """One ``attention`` node from a self-attention ``nn.MultiheadAttention``: ``in_proj_weight`` split into the
    q/k/v projections, ``out_proj`` the o projection."""
    if not m._qkv_same_embed_dim:
        raise c.fail("kdim/vdim different from embed_dim are not supported (self-attention only)")
    if m.bias_k is not None or m.add_zero_attn:
        raise c.fail("add_bias_kv and add_zero_attn are not supported")
    q, k, v = m.in_proj_weight.chunk(3)
    weights = {"q_proj.weight": q, "k_proj.weight": k, "v_proj.weight": v, "o_proj.weight": m.out_proj.weight}
    bias = m.in_proj_bias is not None
    if bias != (m.out_proj.bias is not None):
        raise c.fail("in_proj and out_proj must both have a bias or both have none")
    if bias:
        qb, kb, vb = m.in_proj_bias.chunk(3)
        weights.update({"q_proj.bias": qb, "k_proj.bias": kb, "v_proj.bias": vb, "o_proj.bias": m.out_proj.bias})
    return Val(c.emit(hint, "attention", [x.node], weights, num_heads=m.num_heads, causal=causal, bias=bias,
                      dropout=float(m.dropout)), x.layout)


@table.module(nn.MultiheadAttention)
def multihead_attention(c, n, m: nn.MultiheadAttention, query, key, value, key_padding_mask=None,
                        need_weights=True, attn_mask=None, average_attn_weights=True, is_causal=False):
    if not (isinstance(query, Val) and query == key == value):
        raise c.fail("only self-attention is supported (query, key and value the same tensor)")
    if key_padding_mask is not None:
        raise c.fail("key_padding_mask is not supported")
    x = c.seq(query, m.batch_first, "nn.MultiheadAttention")
    out = _mha(c, None, m, x, _causal(c, attn_mask, is_causal, c.shape(x)[0]))
    weights = c.values[n.name][1]
    return out, (None if weights is None else Unconverted(f"the attention weights of '{n.target}'"))


def activation_node(c, hint: str, act, x: Val) -> Val:
    """The activation node of ``act``, a module or function the registry imports as an activation."""
    for op, d in OPS.items():
        if not d.is_activation:
            continue
        if isinstance(act, nn.Module) and any(resolve(cls) is type(act) for cls in d.imports.modules):
            names = [k for k in KIND_BY_OP[op].model_fields if k not in ("op", "inputs")]
            return Val(c.emit(hint, op, [x.node], **{k: getattr(act, k) for k in names}), x.layout)
        if not isinstance(act, nn.Module) and any(try_resolve(f) is act for f in d.imports.functions):
            return Val(c.emit(hint, op, [x.node]), x.layout)
    raise c.fail(f"the activation {act!r} is not supported")


def _encoder_layer(c, path: str, m: nn.TransformerEncoderLayer, x, mask, padding_mask, is_causal) -> Val:
    """``nn.TransformerEncoderLayer`` node by node: attention and feed-forward blocks with residual adds, the
    norms before them (``norm_first``) or after each add."""
    if padding_mask is not None:
        raise c.fail("src_key_padding_mask is not supported")
    x = c.seq(x, m.self_attn.batch_first, "nn.TransformerEncoderLayer")
    causal = _causal(c, mask, is_causal, c.shape(x)[0])
    if getattr(m, "activation_relu_or_gelu", 0) == 2 and getattr(m.activation, "approximate", "none") != "none":
        raise c.fail(f"activation {m.activation!r} is not supported: torch's eval fast path computes the exact GELU "
                     f"here and the other path the approximate one, so the layer has no one function to import")

    def norm(name, v):
        ln = getattr(m, name)
        return layernorm_node(c, f"{path}.{name}", v, ln.normalized_shape, ln.eps, ln.weight, ln.bias)

    def drop(name, v):
        p = float(getattr(m, name).p)
        return v if p == 0 else Val(c.emit(f"{path}.{name}", "dropout", [v.node], p=p), v.layout)

    def attention(v):
        return drop("dropout1", _mha(c, f"{path}.self_attn", m.self_attn, v, causal))

    def feed_forward(v):
        h = activation_node(c, f"{path}.activation", m.activation, linear_node(c, f"{path}.linear1", m.linear1, v))
        return drop("dropout2", linear_node(c, f"{path}.linear2", m.linear2, drop("dropout", h)))

    def add(name, a, b):
        return Val(c.emit(f"{path}.{name}", "add", [a.node, b.node]), a.layout)

    if m.norm_first:
        x = add("add1", x, attention(norm("norm1", x)))
        return add("add2", x, feed_forward(norm("norm2", x)))
    x = norm("norm1", add("add1", x, attention(x)))
    return norm("norm2", add("add2", x, feed_forward(x)))


@table.module(nn.TransformerEncoderLayer)
def encoder_layer(c, n, m: nn.TransformerEncoderLayer, src, src_mask=None, src_key_padding_mask=None,
                  is_causal=False):
    return _encoder_layer(c, n.target, m, src, src_mask, src_key_padding_mask, is_causal)


@table.module(nn.TransformerEncoder)
def encoder(c, n, m: nn.TransformerEncoder, src, mask=None, src_key_padding_mask=None, is_causal=None):
    """``nn.TransformerEncoder``: its layers one after another, then its final norm (when it has one)."""
    x = src
    for i, layer in enumerate(m.layers):
        if type(layer) is not nn.TransformerEncoderLayer:
            raise c.fail(f"layer {i} is a {type(layer).__name__}, not an nn.TransformerEncoderLayer")
        x = _encoder_layer(c, f"{n.target}.layers.{i}", layer, x, mask, src_key_padding_mask, bool(is_causal))
    if m.norm is not None:
        if type(m.norm) is not nn.LayerNorm:
            raise c.fail(f"the final norm {type(m.norm).__name__} is not supported (only nn.LayerNorm)")
        x = layernorm_node(c, f"{n.target}.norm", x, m.norm.normalized_shape, m.norm.eps, m.norm.weight,
                           m.norm.bias)
    return x


@table.modules_of("attention")
def attention_module(c, n, m, x):
    """archgraph's own ``Attention`` (a built graph imported back); torch's attention modules are registered by
    class above."""
    x = c.seq(x, True, "Attention")
    qkv_bias = m.q_proj.bias is not None
    return Val(c.emit(None, "attention", [x.node], module_state(m), num_heads=m.num_heads,
                      head_dim=None if m.head_dim * m.num_heads == m.dim else m.head_dim,
                      kv_heads=None if m.kv_heads == m.num_heads else m.kv_heads, causal=bool(m.causal),
                      bias=m.o_proj.bias is not None,
                      qkv_bias=None if qkv_bias == (m.o_proj.bias is not None) else qkv_bias,
                      dropout=float(m.dropout), rotary=bool(m.rotary),
                      rope_theta=float(m.rope_theta)))


@table.functions_of("token_pool")
def f_token_pool(c, n, x, mode="mean", skip=0):
    return Val(c.emit(None, "token_pool", [c.seq(x, True, "token_pool").node], mode=mode, skip=int(skip)))


@table.functions_of("to_tokens")
def f_to_tokens(c, n, x):
    return Val(c.emit(None, "to_tokens", [c.cf(x, 3).node]))
