"""Head rules: ``add_heads`` (new attention heads whose output-projection columns start at zero: same function) and
``prune_heads`` (remove heads). A head is a group of ``head_dim`` rows of ``q_proj`` and the same columns of
``o_proj``, reading one kv head (rows of ``k_proj`` and ``v_proj``), as :func:`archgraph.channels.heads` lists; a
``window_attention``'s head also owns one entry of each position table (the op's ``head_tables``), sliced with it.

With grouped-query attention (``kv_heads < num_heads``, ``per = num_heads // kv_heads`` query heads per kv head)
heads come and go so that every group keeps the same size and every old query head keeps its kv head: whole kv
groups (``count`` a multiple of ``per``; new kv heads are appended), or the same number of query heads in every
group (``count`` a multiple of ``kv_heads``), as Torch-Pruning prunes GQA.

>>> import archgraph
>>> from archgraph import rules
>>> g = archgraph.load("examples/seeds/gpt_tiny.yaml")
>>> rw = archgraph.apply(g, rules.AddHeads(node="b0_attn", count=2))
>>> rw.graph.nodes["b0_attn"].num_heads, rw.graph.nodes["b0_attn"].head_dim, rw.exact
(4, 16, True)
>>> rw.plan.tensors["b0_attn.o_proj.weight"].axes[0][1].fill
'zero'
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from ..graph import Graph
from ..ops.registry import MIXER, OPS, attention_dims, channel_width
from ..plan import AxisMap, TensorPlan, TransferPlan
from .base import Rewrite, Rule


def _attention(rule: Rule, graph: Graph, node: str) -> tuple[Any, tuple[int, int, int, int]]:
    rule.need_node(graph, node)
    n = graph.nodes[node]
    if OPS[n.op].coupling.role(n, graph.input_shapes(node)) != MIXER or "q_proj.weight" not in \
            OPS[n.op].coupling.layout(n, graph.input_shapes(node)):
        raise rule.error(f"'{node}' is a {n.op}; {rule.name} changes the heads of an attention node", node=node,
                         field="node")
    return n, _dims(n, graph.input_shapes(node))


def _dims(n: Any, ins: list[Any]) -> tuple[int, int, int, int]:
    """``(D, num_heads, head_dim, kv_heads)``: window attention has no kv groups (every head its own k and v)."""
    if "kv_heads" in type(n).model_fields:
        return attention_dims(n, ins)
    found = OPS[n.op].coupling.heads(n, ins)
    assert found is not None, f"{n.op} has no heads"
    h, hd, _ = found
    return channel_width(ins[0]), h, hd, h


def _kv_field(n: Any, kv: int, h: int) -> dict:
    """``kv_heads`` when the node has it written or it differs from the heads (window attention has none)."""
    if "kv_heads" not in type(n).model_fields or (n.kv_heads is None and kv == h):
        return {}
    return {"kv_heads": kv}


def _rows(heads: list[int], hd: int) -> list[int]:
    """Old row indices (``-1`` for a new head) of the rows of a projection whose heads are ``heads``."""
    return [h * hd + i if h >= 0 else -1 for h in heads for i in range(hd)]


def _head_plan(rule: Rule, graph: Graph, node: str, new_node: Any, q_heads: list[int], kv_heads: list[int], hd: int,
               fill_in: str, fill_out: str, exact: bool, note: str) -> Rewrite:
    """The rewrite giving ``node`` the query heads ``q_heads`` and kv heads ``kv_heads`` (old index or -1 each)."""
    n = graph.nodes[node]
    _, h, _, kv = _dims(n, graph.input_shapes(node))
    nodes = dict(graph.nodes)
    nodes[node] = new_node
    try:
        graph2 = graph.replace(nodes=nodes)
    except ValueError as err:
        raise rule.error(f"the result would not be a valid graph: {err}", node=node) from None
    q = AxisMap(tuple(_rows(q_heads, hd)), h * hd, fill_in)
    k = AxisMap(tuple(_rows(kv_heads, hd)), kv * hd, fill_in)
    o = AxisMap(tuple(_rows(q_heads, hd)), h * hd, fill_out)
    changed = {"q_proj.weight": ((0, q),), "q_proj.bias": ((0, q),), "k_proj.weight": ((0, k),),
               "k_proj.bias": ((0, k),), "v_proj.weight": ((0, k),), "v_proj.bias": ((0, k),),
               "o_proj.weight": ((1, o),)}
    if getattr(n, "qk_norm", False) and getattr(n, "qk_norm_span", "head") == "all":   # OLMo 2: a block per head
        changed.update({"q_norm.weight": ((0, AxisMap(q.index, q.old_size, "init")),),
                        "k_norm.weight": ((0, AxisMap(k.index, k.old_size, "init")),)})
    per_head = AxisMap(tuple(q_heads), h, fill_in)   # one entry per head (window attention's position tables)
    changed.update({name: ((axis, per_head),) for name, axis in
                    OPS[n.op].coupling.head_tables(n, graph.input_shapes(node)).items()})
    shapes = graph2.shapes()
    tensors: dict[str, TensorPlan] = {}
    for nid, other in graph2.nodes.items():
        for param in OPS[other.op].coupling.layout(other, [shapes[i] for i in other.inputs]):
            key = f"{nid}.{param}"
            axes: tuple[tuple[int, AxisMap], ...] = changed.get(param, ()) if nid == node else ()
            axes = tuple((a, m) for a, m in axes if m.index != tuple(range(m.old_size)))
            tensors[key] = TensorPlan(key, axes)
    return Rewrite(graph2, graph, rule, TransferPlan(tensors, (), exact, note, {k: k for k in graph2.nodes}))


class AddHeads(Rule):
    """Add ``count`` query heads to an attention node (``head_dim`` stays). ``init=preserve``: the new heads' q/k/v
    rows start random and their ``o_proj`` columns at zero, so the function is unchanged; ``random``: both random.

    Grouped-query attention: ``count`` a multiple of the heads per kv group adds whole groups (new kv heads);
    otherwise a multiple of ``kv_heads`` spreads the new heads evenly over the groups (``mode`` picks one)."""

    name: ClassVar[str] = "add_heads"
    node: str
    count: PositiveInt = 1
    init: Literal["preserve", "random"] = "preserve"
    mode: Literal["auto", "groups", "spread"] = "auto"

    def apply(self, graph: Graph) -> Rewrite:
        n, (d, h, hd, kv) = _attention(self, graph, self.node)
        per = h // kv
        mode = self.mode
        if mode == "auto":
            mode = "groups" if self.count % per == 0 else "spread"
        if mode == "groups" and self.count % per:
            raise self.error(f"count={self.count} is not a whole number of kv groups ({per} query heads each)",
                             node=self.node, field="count")
        if mode == "spread" and self.count % kv:
            raise self.error(f"count={self.count} cannot be spread evenly over the {kv} kv groups, nor is it a "
                             f"multiple of the {per} query heads of a group", node=self.node, field="count")
        if mode == "groups":
            q_heads = list(range(h)) + [-1] * self.count
            kv_heads = list(range(kv)) + [-1] * (self.count // per)
            new_kv = kv + self.count // per
        else:
            extra = self.count // kv
            q_heads = [g * per + j if j < per else -1 for g in range(kv) for j in range(per + extra)]
            kv_heads = list(range(kv))
            new_kv = kv
        new_h = h + self.count
        fields = {"num_heads": new_h, "head_dim": hd, **_kv_field(n, new_kv, new_h)}
        whole_norm = getattr(n, "qk_norm", False) and getattr(n, "qk_norm_span", "head") == "all"
        exact = self.init == "preserve" and not whole_norm
        note = "" if exact else "q and k are normalised over all heads: new heads change the others' scale" \
            if whole_norm else "new heads start random and are read with random weights"
        return _head_plan(self, graph, self.node, n.replace(**fields), q_heads, kv_heads, hd, "init",
                          "zero" if self.init == "preserve" else "init", exact, note)


class PruneHeads(Rule):
    """Remove query heads ``indices`` of an attention node with their q rows and ``o_proj`` columns (and their kv
    heads when no other head reads them). With grouped-query attention, remove whole kv groups or the same number
    of query heads from every group. Exact when the removed heads' ``o_proj`` columns are zero."""

    name: ClassVar[str] = "prune_heads"
    kind: ClassVar[str] = "prune"
    node: str
    indices: tuple[NonNegativeInt, ...] = Field(min_length=1)

    def apply(self, graph: Graph) -> Rewrite:
        n, (d, h, hd, kv) = _attention(self, graph, self.node)
        per = h // kv
        gone = set(self.indices)
        if len(gone) != len(self.indices):
            raise self.error("an index is listed twice", node=self.node, field="indices")
        if max(gone) >= h:
            raise self.error(f"head {max(gone)} does not exist: '{self.node}' has {h}", node=self.node,
                             field="indices")
        if len(gone) == h:
            raise self.error("this would remove every head", node=self.node, field="indices")
        per_group = [sum(1 for j in range(per) if g * per + j in gone) for g in range(kv)]
        if all(c in (0, per) for c in per_group):
            kv_heads = [g for g in range(kv) if per_group[g] == 0]
            new_kv, new_per = len(kv_heads), per
        elif len(set(per_group)) == 1:
            kv_heads, new_kv, new_per = list(range(kv)), kv, per - per_group[0]
        else:
            raise self.error(f"with {kv} kv groups of {per} heads, remove whole groups or the same number of heads "
                             f"from every group (this removes {per_group} per group)", node=self.node,
                             field="indices")
        q_heads = [i for i in range(h) if i not in gone]
        new_h = len(q_heads)
        fields = {"num_heads": new_h, "head_dim": hd, **_kv_field(n, new_kv, new_h)}
        assert new_h == new_kv * new_per
        return _head_plan(self, graph, self.node, n.replace(**fields), q_heads, kv_heads, hd, "init", "init",
                          False, "exact only when the removed heads' o_proj columns are zero")
