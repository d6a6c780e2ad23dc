"""Deepening rules: ``insert_layer`` (Net2DeeperNet: an identity layer) and ``insert_block`` (a residual block
whose last layer starts at zero). Both keep the network's function (in eval mode).

>>> import archgraph
>>> from archgraph import rules
>>> g = archgraph.load("examples/seeds/tiny_cnn.yaml")
>>> rw = archgraph.apply(g, rules.InsertLayer(after="r1", norm="batchnorm", activation="relu"))
>>> [n for n in rw.graph.nodes][3:6], rw.exact
(['r1_conv', 'r1_bn', 'r1_relu'], True)
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Optional, Union, cast

from pydantic import PositiveFloat, PositiveInt

from ..channels import analyse
from ..graph import Graph
from ..ops.registry import MIXER, OPS, attention_dims
from ..ops.spec import KIND_BY_OP
from .base import Rewrite, Rule, fresh_id, nonnegative, rewire
from .draft import Draft, realise

Activation = Literal["relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish"]
Norm = Literal["batchnorm"]
SeqNorm = Literal["layernorm", "rmsnorm"]


class _Insert(Rule):
    """Fields and helpers shared by the deepening rules."""

    after: str
    op: Optional[Literal["conv2d", "linear"]] = None  # None: conv2d after a [C, H, W] value, linear after [F]
    kernel_size: PositiveInt = 3
    prefix: Optional[str] = None                      # new ids start with it (default: the ``after`` id)

    def layer_op(self, graph: Graph) -> tuple[str, tuple[int, ...]]:
        self.need_node(graph, self.after, field="after", inputs_ok=True)
        shape = graph.shapes()[self.after]
        op = self.op or ("conv2d" if len(shape) == 3 else "linear")
        if OPS[op].sizes.in_rank == 1 and len(shape) == 2:   # a sequence [T, D]: a linear acts on D at every position
            return op, shape
        if OPS[op].sizes.in_rank != len(shape):
            need = "[C, H, W]" if OPS[op].sizes.in_rank == 3 else "[F]"
            raise self.error(f"a {op} needs a {need} input but '{self.after}' is {list(shape)}",
                             node=self.after, field="op")
        if OPS[op].traits.conv and self.kernel_size % 2 == 0:
            raise self.error(f"kernel_size {self.kernel_size} is even: the layer must keep the "
                             f"{shape[1]}x{shape[2]} positions (padding k//2), so it needs an odd kernel",
                             node=self.after, field="kernel_size")
        return op, shape

    def layer(self, op: str, src: str, width: int, bias: bool) -> dict:
        layer = {"op": op, "in": src, OPS[op].coupling.width_field: width}
        if OPS[op].traits.conv:
            layer.update(kernel_size=self.kernel_size, padding=self.kernel_size // 2)
        return {**layer, "bias": bias}

    def splice(self, graph: Graph, new: dict[str, dict], last: str) -> tuple[dict, list[str]]:
        """The graph's nodes with ``new`` placed right after ``after`` and every old reader of ``after`` (and the
        outputs) reading ``last`` instead."""
        made = {nid: KIND_BY_OP[data["op"]].model_validate(data) for nid, data in new.items()}
        nodes: dict = {}
        if self.after in graph.inputs:
            nodes.update(made)
        for nid, node in rewire(graph.nodes, self.after, last).items():
            nodes[nid] = node
            if nid == self.after:
                nodes.update(made)
        outputs = [last if o == self.after else o for o in graph.outputs]
        return nodes, outputs


def norm_op(shape: tuple[int, ...]) -> str:
    return "batchnorm2d" if len(shape) == 3 else "batchnorm1d"


class InsertLayer(_Insert):
    """Insert a conv2d (``[C, H, W]``) or linear (``[F]``, or a sequence ``[T, D]``: the linear acts on ``D`` at every
    position) layer after ``after``, optionally followed by a batchnorm (not after a sequence) and an activation;
    every reader of ``after`` reads the new last node.

    ``init=identity`` makes the layer the identity (Dirac kernel or identity matrix, zero bias) and the batchnorm
    the identity in eval mode (weight ``sqrt(1 + eps)`` against running variance 1); an activation is only allowed
    where it is the identity too (a ReLU after a value that is never negative, e.g. after a ReLU).
    ``init=random`` initialises them as PyTorch does (not function-preserving).
    """

    name: ClassVar[str] = "insert_layer"
    norm: Optional[Norm] = None
    activation: Optional[Activation] = None
    init: Literal["identity", "random"] = "identity"
    bias: Optional[bool] = None  # default: a bias unless a norm follows

    def apply(self, graph: Graph) -> Rewrite:
        op, shape = self.layer_op(graph)
        if self.norm and len(shape) == 2:
            raise self.error(f"'{self.after}' is a sequence {list(shape)}: a {self.norm} there would normalise "
                             "over the positions, not the features; leave norm out (insert_block puts a layernorm "
                             "block after a sequence)", node=self.after, field="norm")
        if self.activation and self.init == "identity":
            nonneg = nonnegative(graph)[self.after]
            if not OPS[self.activation].rewrite.identity(None, [nonneg]):
                why = (f"'{self.after}' can be negative" if OPS[self.activation].rewrite.identity(None, [True])
                       else f"{self.activation} is not the identity")
                raise self.error(f"{self.activation} after '{self.after}' would change the function ({why}); "
                                 "insert it after a ReLU, leave the activation out or use init=random",
                                 node=self.after, field="activation")
        ids = set(graph.nodes) | set(graph.inputs)
        base = self.prefix or self.after
        bias = self.bias if self.bias is not None else self.norm is None
        new: dict[str, dict] = {}
        fills: dict[str, tuple[str, float]] = {}
        layer_id = fresh_id(ids, f"{base}_{'conv' if OPS[op].traits.conv else 'fc'}")
        ids.add(layer_id)
        new[layer_id] = self.layer(op, self.after, shape[-1] if len(shape) == 2 else shape[0], bias)
        last = layer_id
        if self.init == "identity":
            fills[f"{layer_id}.weight"] = (cast(str, OPS[op].rewrite.identity_fill), 0.0)
            fills[f"{layer_id}.bias"] = ("zero", 0.0)
        if self.norm:
            bn_id = fresh_id(ids, f"{base}_bn")
            ids.add(bn_id)
            new[bn_id] = {"op": norm_op(shape), "in": last}
            if self.init == "identity":   # against running variance 1 and the norm's default eps
                eps = OPS[norm_op(shape)].kind.model_fields["eps"].default
                fills[f"{bn_id}.weight"] = ("value", math.sqrt(1.0 + eps))
                fills[f"{bn_id}.bias"] = ("zero", 0.0)
            last = bn_id
        if self.activation:
            act_id = fresh_id(ids, f"{base}_{self.activation}")
            ids.add(act_id)
            new[act_id] = {"op": self.activation, "in": last}
            last = act_id
        nodes, outputs = self.splice(graph, new, last)
        draft = Draft(graph, analyse(graph), nodes, outputs, fills=fills)
        draft.exact = self.init == "identity"
        draft.note = "" if draft.exact else "the new layer starts random"
        graph2, plan = realise(draft, self)
        return Rewrite(graph2, graph, self, plan)


class InsertBlock(_Insert):
    """Insert a residual block after ``after``: ``after + last(act(norm(first(after))))``; every old reader of
    ``after`` reads the sum. The block's last layer starts at zero (its batchnorm's weight and bias when there is
    a norm, else its weights), so the function is unchanged and gradients still reach the first layer.

    After a sequence ``[T, D]`` it inserts a pre-norm transformer block instead:
    ``x = x + attention(norm(x)); x = x + fc2(act(fc1(norm(x))))`` with ``num_heads`` heads (``kv_heads``,
    ``head_dim`` and ``causal`` default to those of the graph's first attention on ``D`` channels, else one head,
    not causal), an MLP ``width`` wide (default ``mlp_ratio * D``), ``norm`` layernorm (default) or rmsnorm and
    ``activation`` gelu by default. Its ``o_proj`` and ``fc2`` start at zero: the function is unchanged."""

    name: ClassVar[str] = "insert_block"
    #: defaults that depend on where the block goes, shown as ``auto`` until the rule is applied (the applied
    #: rule, which the history logs, has them resolved)
    CONTEXT_DEFAULTS: ClassVar[dict[str, str]] = {"norm": "batchnorm on an image, layernorm after a sequence",
                                                  "activation": "relu on an image, gelu after a sequence"}
    width: Optional[PositiveInt] = None  # channels inside the block (default: as many as ``after`` has)
    norm: Optional[Union[Norm, SeqNorm]] = "batchnorm"
    activation: Optional[Activation] = "relu"
    num_heads: Optional[PositiveInt] = None
    kv_heads: Optional[PositiveInt] = None
    head_dim: Optional[PositiveInt] = None
    causal: Optional[bool] = None
    mlp_ratio: PositiveFloat = 4.0

    def _shown(self) -> dict:
        return {k: ("auto" if k in self.CONTEXT_DEFAULTS and k not in self.model_fields_set else v)
                for k, v in self.args().items()}

    def __str__(self) -> str:
        """``insert_block(after=r1, ..., norm=auto, ...)``: a default that depends on the graph is not named
        before the rule is applied."""
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self._shown().items())})"

    def __repr__(self) -> str:
        return f"InsertBlock({', '.join(f'{k}={v!r}' for k, v in self._shown().items())})"

    def apply(self, graph: Graph) -> Rewrite:
        self.need_node(graph, self.after, field="after", inputs_ok=True)
        if len(graph.shape(self.after)) == 2:
            return self.transformer_block(graph)
        if self.norm in OPS and not OPS[self.norm].traits.running_stats:   # layernorm, rmsnorm: a transformer block's
            raise self.error(f"norm={self.norm} is for a transformer block after a sequence [T, D]; "
                             f"'{self.after}' is {list(graph.shape(self.after))}", node=self.after, field="norm")
        op, shape = self.layer_op(graph)
        ids = set(graph.nodes) | set(graph.inputs)
        base = self.prefix or self.after
        tag = "conv" if OPS[op].traits.conv else "fc"
        bias = self.norm is None
        new: dict[str, dict] = {}
        fills: dict[str, tuple[str, float]] = {}

        def take(suffix: str) -> str:
            nid = fresh_id(ids, f"{base}_{suffix}")
            ids.add(nid)
            return nid

        first = take(f"{tag}1")
        new[first] = self.layer(op, self.after, self.width or shape[0], bias)
        last = first
        if self.norm:
            n1 = take("bn1")
            new[n1] = {"op": norm_op(shape), "in": last}
            last = n1
        if self.activation:
            a = take(self.activation)
            new[a] = {"op": self.activation, "in": last}
            last = a
        second = take(f"{tag}2")
        new[second] = self.layer(op, last, shape[0], bias)
        last = second
        if self.norm:
            n2 = take("bn2")
            new[n2] = {"op": norm_op(shape), "in": last}
            fills[f"{n2}.weight"] = ("zero", 0.0)
            fills[f"{n2}.bias"] = ("zero", 0.0)
            last = n2
        else:
            fills[f"{second}.weight"] = ("zero", 0.0)
            fills[f"{second}.bias"] = ("zero", 0.0)
        total = take("sum")
        new[total] = {"op": "add", "in": [last, self.after]}
        nodes, outputs = self.splice(graph, new, total)
        draft = Draft(graph, analyse(graph), nodes, outputs, fills=fills)
        draft.exact = True
        graph2, plan = realise(draft, self)
        return Rewrite(graph2, graph, self, plan)

    def attention_fields(self, graph: Graph, t: int, d: int) -> dict:
        """The new attention's fields: those given, else those of the graph's first attention on ``D`` channels
        (heads, kv heads, head size, causal, rotary positions), else one head, not causal."""
        like = _sequence_attention(graph, d)
        inherit = like is not None and self.num_heads is None
        attn: dict = {"num_heads": self.num_heads or (like.num_heads if like is not None else 1)}
        kv = self.kv_heads or (like.kv_heads if inherit else None)
        head_dim = self.head_dim or (attention_dims(like, [(t, d)])[2] if inherit else None)
        if kv is not None:
            attn["kv_heads"] = kv
        if head_dim is not None:
            attn["head_dim"] = head_dim
        attn["causal"] = self.causal if self.causal is not None else bool(like is not None and like.causal)
        if like is not None and like.rotary and (head_dim or d // attn["num_heads"]) % 2 == 0:
            attn.update(rotary=True, rope_theta=like.rope_theta)   # the graph's positions are rotary
        return attn

    def transformer_block(self, graph: Graph) -> Rewrite:
        t, d = graph.shape(self.after)
        set_ = self.model_fields_set
        norm = self.norm if "norm" in set_ else "layernorm"
        if norm not in OPS or OPS[norm].traits.running_stats:
            raise self.error(f"a transformer block's norm is layernorm or rmsnorm (got {norm}); '{self.after}' is a "
                             f"sequence {[t, d]}", node=self.after, field="norm")
        activation = self.activation if "activation" in set_ else "gelu"
        attn = self.attention_fields(graph, t, d)
        ids = set(graph.nodes) | set(graph.inputs)
        base = self.prefix or self.after

        def take(suffix: str) -> str:
            nid = fresh_id(ids, f"{base}_{suffix}")
            ids.add(nid)
            return nid

        ln1, att, res1, ln2, fc1 = take("ln1"), take("attn"), take("res1"), take("ln2"), take("fc1")
        act, fc2, res2 = (take(activation) if activation else None), take("fc2"), take("res2")
        hidden = self.width or max(1, round(self.mlp_ratio * d))
        new: dict[str, dict] = {
            ln1: {"op": norm, "in": self.after},
            att: {"op": "attention", "in": ln1, **attn},
            res1: {"op": "add", "in": [self.after, att]},
            ln2: {"op": norm, "in": res1},
            fc1: {"op": "linear", "in": ln2, "out_features": hidden},
        }
        last = fc1
        if act:
            new[act] = {"op": activation, "in": fc1}
            last = act
        new[fc2] = {"op": "linear", "in": last, "out_features": d}
        new[res2] = {"op": "add", "in": [res1, fc2]}
        fills = {f"{att}.o_proj.weight": ("zero", 0.0), f"{att}.o_proj.bias": ("zero", 0.0),
                 f"{fc2}.weight": ("zero", 0.0), f"{fc2}.bias": ("zero", 0.0)}
        try:
            nodes, outputs = self.splice(graph, new, res2)
        except ValueError as err:
            raise self.error(f"the block would not be valid: {err}", node=self.after) from None
        draft = Draft(graph, analyse(graph), nodes, outputs, fills=fills)
        draft.exact = True
        # the rule as applied: norm and activation resolved, so the history replays the same block whatever
        # the defaults of a later version are (a logged default 'relu' must not read as a choice)
        applied = self.model_copy(update={"norm": norm, "activation": activation})
        graph2, plan = realise(draft, applied)
        return Rewrite(graph2, graph, applied, plan)


def _sequence_attention(graph: Graph, d: int) -> Any:   # an attention spec or None
    """The graph's first attention on a sequence ``[T, D]`` of ``d`` channels (window attention reads an image), or
    ``None``."""
    for nid, n in graph.nodes.items():
        ins = graph.input_shapes(nid)
        if OPS[n.op].coupling.role(n, ins) == MIXER and "q_proj.weight" in OPS[n.op].coupling.layout(n, ins) \
                and len(ins[0]) == 2 and ins[0][-1] == d:
            return n
    return None
