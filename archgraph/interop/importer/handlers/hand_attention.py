"""Hand-written attention: timm's ``Attention`` and nanoGPT's ``CausalSelfAttention``.

A linear projection of a sequence (fused qkv, or split into q, k, v) reshaped into heads,
``scaled_dot_product_attention`` (or ``softmax(q @ k^T * scale) @ v``), the heads merged back, an output
projection. Each step's value is a :class:`~..values.Projected` or an :class:`~..values.Attended`; the output
projection (:func:`attention_node`, called by the linear handlers) makes them one ``attention`` node, and the q/k/v
linears, no longer read, are dropped with the graph's dead nodes. The steps that are views (reshape, transpose,
indexing) are read by :mod:`.views`, which calls the functions here.
"""
from __future__ import annotations

import math
import operator
from dataclasses import replace
from typing import Any

import torch

from ....ops.spec import KIND_BY_OP, Linear
from .. import table
from ..values import HAND, SEQ_AXES, Attended, Param, Projected, Val, hand_words
from . import split_attention


def projection(c, x: Val, rows: tuple[int, int]) -> Projected:
    """Rows of the linear node ``x.node`` (the projection of a batch-first sequence) as attention's input."""
    data = c.nodes.get(x.node)
    if data is None or KIND_BY_OP[data["op"]] is not Linear:
        raise c.fail(f"splitting the features of '{x.node}' into heads (or pieces) is only supported for a linear "
                     f"projection of a sequence on its way into attention")
    return Projected(x.node, rows)


def hand_reshape(c, v, out: tuple[int, ...]):
    """``[N, T, F] -> [N, T, H, E]`` or ``[N, T, P, H, E]`` (F = P*H*E: the parts, then the heads, of a fused
    projection), and merging the heads back, ``[N, T, H, E] -> [N, T, H*E]``."""
    shape = c.hand_shape(v)
    if isinstance(v, Projected) and v.axes == SEQ_AXES and out[:2] == shape[:2] and len(out) in (4, 5) and \
            math.prod(out[2:]) == shape[2]:
        heads, head_dim = out[-2:]
        return replace(v, axes=("N", "T", "H", "E") if len(out) == 4 else ("N", "T", "P", "H", "E"), heads=heads,
                       head_dim=head_dim)
    if isinstance(v, Attended) and v.stage == "out" and v.axes == ("N", "T", "H", "E") and \
            out == (*shape[:2], shape[2] * shape[3]):
        return replace(v, stage="merged", axes=SEQ_AXES)
    raise c.fail(f"hand-written attention: a reshape of {hand_words(v)} (shape {list(shape)}) to {list(out)} is "
                 f"not supported (only a projection into heads [N, T, H, E] or [N, T, 3, H, E], and the heads "
                 f"[N, T, H, E] merged back)")


def relabel(c, v, order) -> Any:
    """A permutation of a step's axes."""
    if sorted(order) != list(range(len(v.axes))):
        raise c.fail(f"permute{list(order)} of {hand_words(v)} is not a permutation of its axes")
    return replace(v, axes=tuple(v.axes[i] for i in order))


def hand_part(c, p: Projected, index: int, axis: int) -> Projected:
    """Part ``index`` (q, k or v) of a fused projection along ``axis`` (its ``P`` axis)."""
    if axis >= len(p.axes) or p.axes[axis] != "P" or not 0 <= index < c.hand_shape(p)[axis]:
        raise c.fail(f"taking part {index} along axis {axis} of {hand_words(p)} is not supported (only along its "
                     f"q/k/v axis P)")
    width = p.heads * p.head_dim
    start = p.rows[0] + index * width
    return replace(p, rows=(start, start + width), axes=p.axes[:axis] + p.axes[axis + 1:])


def hand_scale(c, v, factor: float):
    """The heads or the scores times a number."""
    if isinstance(v, Projected) and v.heads:
        return replace(v, scale=v.scale * factor)
    if isinstance(v, Attended) and v.stage == "scores":
        return replace(v, scale=v.scale * factor)
    raise c.fail(f"scaling {hand_words(v)} by {factor!r} is not supported (only the heads or the scores)")


def _attention_mask(c, mask, t: int, true_attends: bool) -> bool:
    """Whether a constant mask is the causal one: ``True`` where a query may attend (on and below the diagonal)
    for ``scaled_dot_product_attention``, ``True`` where it is masked for ``masked_fill``; a float mask has
    ``-inf`` above the diagonal and 0 elsewhere. Leading axes of size 1 are broadcast."""
    if not isinstance(mask, Param):
        raise c.fail("an attention mask computed from the input is not supported (only a constant causal mask)")
    m = mask.tensor
    while m.dim() > 2 and m.shape[0] == 1:
        m = m[0]
    if tuple(m.shape) != (t, t):
        raise c.fail(f"an attention mask of shape {list(mask.tensor.shape)} is not supported (only the causal "
                     f"[T, T] one, T = {t})")
    upper = torch.ones(t, t, dtype=torch.bool, device=m.device).triu(1)
    if m.dtype == torch.bool:
        ok = torch.equal(m, ~upper if true_attends else upper)
    else:
        ok = bool((m[upper] == float("-inf")).all() and (m[~upper] == 0).all())
    if not ok:
        raise c.fail(f"the attention mask '{mask.name}' is not the causal mask; other masks are not supported")
    return True


def _heads_of(c, p, what: str, axes=("N", "H", "T", "E")) -> Projected:
    if not isinstance(p, Projected) or p.axes != axes:
        words = hand_words(p) if isinstance(p, HAND) else "a tensor that is not a projection split into heads"
        raise c.fail(f"hand-written attention: the {what} must be heads [{', '.join(axes)}] of a linear "
                     f"projection; got {words}")
    return p


@table.function("torch.nn.functional.scaled_dot_product_attention")
def sdpa(c, n, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (_heads_of(c, p, what) for p, what in ((q, "queries"), (k, "keys"), (v, "values")))
    if v.scale != 1:
        raise c.fail("scaling the values is not supported")
    if attn_mask is not None and is_causal:
        raise c.fail("attn_mask together with is_causal=True is not supported")
    causal = bool(is_causal) or (attn_mask is not None and _attention_mask(c, attn_mask, c.hand_shape(q)[2], True))
    factor = (1.0 / math.sqrt(q.head_dim) if scale is None else float(scale)) * q.scale * k.scale
    return Attended("out", q, k, v, ("N", "H", "T", "E"), factor, causal, float(dropout_p))


@table.function(torch.matmul, operator.matmul)
@table.method("matmul", "__matmul__")
def matmul(c, n, a, b, *rest, out=None):
    """``q @ k.transpose(-2, -1)`` (the scores) and ``probs @ v``."""
    if isinstance(a, Projected):
        q = _heads_of(c, a, "left side of q @ k^T")
        k = _heads_of(c, b, "right side of q @ k^T", ("N", "H", "E", "T"))
        return Attended("scores", q, replace(k, axes=("N", "H", "T", "E")), scale=q.scale * k.scale)
    if isinstance(a, Attended) and a.stage == "probs" and a.axes == ("N", "H", "T", "S"):
        return replace(a, stage="out", v=_heads_of(c, b, "values"), axes=("N", "H", "T", "E"))
    words = hand_words(a) if isinstance(a, HAND) else "a tensor"
    raise c.fail(f"a matrix product of {words} is not supported (only q @ k.transpose(-2, -1) and softmax @ v of "
                 f"hand-written attention)")


@table.function(torch.softmax, "torch.nn.functional.softmax")
@table.method("softmax")
def softmax(c, n, x, dim=None, *rest, dtype=None, _stacklevel=3):
    """The softmax over the keys of the scores; split attention's softmax across its stack is
    :func:`.split_attention.softmax`'s."""
    across = split_attention.softmax(c, x, dim, dtype)
    if across is not None:
        return across
    if not (isinstance(x, Attended) and x.stage == "scores" and dim is not None and
            dim % len(x.axes) == x.axes.index("S")) or dtype is not None or any(r is not None for r in rest[1:]):
        raise c.fail("only a softmax over the keys of hand-written attention's scores is supported")
    return replace(x, stage="probs")


@table.method("masked_fill")
def masked_fill(c, n, x, mask, value):
    if not (isinstance(x, Attended) and x.stage == "scores" and value == float("-inf")):
        raise c.fail("only masked_fill(mask, -inf) of hand-written attention's scores is supported (a causal mask)")
    if x.causal:
        raise c.fail("the scores are masked twice")
    return replace(x, causal=_attention_mask(c, mask, c.hand_shape(x)[2], False))


@table.function(torch.unbind)
@table.method("unbind")
def unbind(c, n, x, dim=0):
    if not isinstance(x, Projected):
        raise c.fail("unbind is only supported on the q/k/v axis of a fused attention projection")
    dim = dim % len(x.axes)
    if x.axes[dim] != "P":
        raise c.fail(f"unbind({dim}) of {hand_words(x)} is not supported (only along its q/k/v axis P)")
    return tuple(hand_part(c, x, i, dim) for i in range(c.hand_shape(x)[dim]))


def attention_node(c, hint: str, att: Attended, weight: torch.Tensor, bias) -> Val:
    """The output projection of merged heads: one ``attention`` node (its q/k/v rows cut from their linears)."""
    if att.stage != "merged":
        raise c.fail(f"the output projection reads {hand_words(att)}; it must read the heads merged back "
                     f"(out.transpose(1, 2).reshape(B, T, C))")
    if att.v is None:
        raise c.fail(f"the output projection reads {hand_words(att)}, which has no values")
    projs = {"q": att.q, "k": att.k, "v": att.v}
    sources = {c.nodes[p.proj]["in"][0] for p in projs.values()}
    if len(sources) != 1:
        raise c.fail("the queries, keys and values project different sequences: only self-attention is supported")
    x = sources.pop()
    t, d = c.shapes[x]
    heads, head_dim = att.q.heads, att.q.head_dim
    if any((p.heads, p.head_dim) != (heads, head_dim) for p in projs.values()):
        raise c.fail("queries, keys and values with different numbers of heads or head sizes are not supported")
    if abs(att.scale * math.sqrt(head_dim) - 1) > 1e-9:
        raise c.fail(f"the scores are scaled by {att.scale!r}, not 1/sqrt(head_dim) = {head_dim ** -0.5!r}; the "
                     f"attention op has no other scale")
    if tuple(weight.shape) != (d, heads * head_dim):
        raise c.fail(f"the output projection's weight is {list(weight.shape)}; the attention op maps back to the "
                     f"{d} input features ([{d}, {heads * head_dim}])")
    state, biases = {}, {}
    for name, p in projs.items():
        state[f"{name}_proj.weight"] = c.weights[f"{p.proj}.weight"][p.rows[0]:p.rows[1]]
        b = c.weights.get(f"{p.proj}.bias")
        biases[name] = None if b is None else b[p.rows[0]:p.rows[1]]
    state["o_proj.weight"] = weight
    if len({b is None for b in biases.values()}) != 1:
        raise c.fail(f"only {', '.join(k for k, b in biases.items() if b is not None)} of the q/k/v projections "
                     f"have biases; the attention op gives all three or none")
    with_bias = {f"{k}_proj.bias": b for k, b in biases.items() if b is not None}
    if bias is not None:
        with_bias["o_proj.bias"] = bias
    qkv = biases["q"] is not None
    return Val(c.emit(hint, "attention", [x], {**state, **with_bias}, num_heads=heads,
                      head_dim=None if heads * head_dim == d else head_dim, causal=att.causal, bias=bias is not None,
                      qkv_bias=None if qkv == (bias is not None) else qkv, dropout=att.dropout))
