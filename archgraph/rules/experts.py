"""Mixture-of-experts rules: ``add_experts`` (new experts that enter through a mask the router reads, so they are
never picked at first: exact) and ``prune_experts`` (remove experts: exact only for experts the router never picks).
``add_filters`` and ``prune_channels`` on ``ID.experts`` change the hidden units of every expert of moe node ``ID``
(the stream around it widens and narrows through its other producers, as for attention).

>>> import archgraph
>>> g = archgraph.loads('''
... archgraph: 1
... inputs: {x: [4, 8]}
... nodes: {moe: {op: moe, in: x, num_experts: 4, top_k: 2, hidden: 6}}
... outputs: [moe]
... ''')
>>> rw = archgraph.apply(g, AddExperts(node="moe", count=2, ramp=50))
>>> rw.graph.nodes["moe"].num_experts, rw.graph.nodes["moe"].expert_ramp, rw.exact
(6, 50, True)
>>> rw = archgraph.apply(g, PruneExperts(node="moe", indices=[1]))
>>> rw.graph.nodes["moe"].num_experts, rw.exact
(3, False)
>>> from archgraph.rules import AddFilters
>>> rw = archgraph.apply(g, AddFilters(node="moe.experts", count=4))
>>> rw.graph.nodes["moe"].hidden, rw.exact
(10, True)
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional, Sequence

from pydantic import Field, NonNegativeInt, PositiveInt

from ..channels import analyse
from ..graph import Graph
from ..ops.registry import OPS
from ..plan import AxisMap, TensorPlan, TransferPlan
from .base import Rewrite, Rule
from .draft import Draft, realise


def _experts_of(rule: Rule, graph: Graph, node: str) -> int:
    rule.need_node(graph, node)
    n = graph.nodes[node]
    found = OPS[n.op].experts(n)
    if found is None:
        raise rule.error(f"'{node}' is a {n.op}; {rule.name} works on a mixture of experts (moe)", node=node,
                         field="node")
    return found[0]


def _expert_plan(plan: TransferPlan, graph: Graph, node: str, index: tuple[int, ...], old: int,
                 new_fill: str = "init") -> TransferPlan:
    """The plan with every per-expert tensor of ``node`` mapped along its expert axis (the mask's new entries at
    zero: a new expert enters at 0)."""
    n = graph.nodes[node]
    _, axes = OPS[n.op].experts(n)
    tensors = dict(plan.tensors)
    for param, axis in axes.items():
        key = f"{node}.{param}"
        fill = "zero" if param in OPS[n.op].buffers else new_fill
        tp = tensors[key]
        tensors[key] = dataclasses.replace(tp, axes=((axis, AxisMap(index, old, fill=fill)),))
    return dataclasses.replace(plan, tensors=tensors)


#: ``add_filters``/``prune_channels`` on ``ID.experts`` change the hidden units of every expert of moe node ``ID``
EXPERTS = ".experts"


def experts_target(rule: Rule, graph: Graph, node: str) -> Optional[str]:
    """The moe node whose experts ``node`` names (``"ID.experts"``), or None for any other node id."""
    if not node.endswith(EXPERTS):
        return None
    nid = node[:-len(EXPERTS)]
    _experts_of(rule, graph, nid)
    return nid


def _unit_plan(rule: Rule, graph: Graph, nid: str, width: int, fills: tuple[str, str],
               kept: Optional[Sequence[int]] = None, count: int = 0) -> Rewrite:
    """A rewrite giving every expert of ``nid`` the units ``kept`` (old positions; default all) plus ``count`` new
    ones whose making rows start as ``fills[0]`` and reading columns as ``fills[1]``."""
    n = graph.nodes[nid]
    units, makers, readers, field = OPS[n.op].expert_units(n)
    kept = tuple(range(units)) if kept is None else tuple(kept)
    index = kept + (-1,) * count
    nodes = dict(graph.nodes)
    nodes[nid] = n.replace(**{field: len(index)})
    draft = Draft(graph, analyse(graph), nodes, list(graph.outputs))
    graph2, plan = realise(draft, rule)
    tensors = dict(plan.tensors)
    for axes, fill in ((makers, fills[0]), (readers, fills[1])):
        for param, axis in axes.items():
            key = f"{nid}.{param}"
            tensors[key] = TensorPlan(key, ((axis, AxisMap(index, units, fill=fill)),))
    return Rewrite(graph2, graph, rule, dataclasses.replace(plan, tensors=tensors))


def widen_experts(rule: Rule, graph: Graph, nid: str, count: int, init: str) -> Rewrite:
    """``add_filters node=ID.experts``: ``count`` new hidden units in every expert (``preserve``: new gate/up rows
    random, down columns zero; ``zero``: both zero; ``random``: both random)."""
    fills = {"preserve": ("init", "zero"), "zero": ("zero", "zero"), "random": ("init", "init")}.get(init)
    if fills is None:
        raise rule.error(f"init={init} is not for experts' units: preserve, zero or random", node=nid, field="init")
    n = graph.nodes[nid]
    rw = _unit_plan(rule, graph, nid, OPS[n.op].expert_units(n)[0], fills, count=count)
    exact = init != "random"
    note = "" if exact else "new units start random and are read with random weights"
    return dataclasses.replace(rw, plan=dataclasses.replace(rw.plan, exact=exact, note=note))


def prune_expert_units(rule: Rule, graph: Graph, nid: str, indices: Sequence[int]) -> Rewrite:
    """``prune_channels node=ID.experts indices=...``: remove those hidden units from every expert."""
    n = graph.nodes[nid]
    units = OPS[n.op].expert_units(n)[0]
    bad = [i for i in indices if i >= units]
    if bad:
        raise rule.error(f"unit {bad[0]} does not exist: the experts of '{nid}' have {units}", node=nid,
                         field="indices")
    kept = [i for i in range(units) if i not in set(indices)]
    if not kept:
        raise rule.error("this would remove every one of the experts' units", node=nid, field="indices")
    rw = _unit_plan(rule, graph, nid, units, ("init", "init"), kept=kept)
    note = "exact only when the removed units' down_proj columns are zero in every expert"
    return dataclasses.replace(rw, plan=dataclasses.replace(rw.plan, exact=False, note=note))


class AddExperts(Rule):
    """Add ``count`` experts to a ``moe`` node. Their weights start as built (random) and they enter through the
    node's expert mask at 0 (``expert_ramp`` set to ``ramp``): the router never picks them and the softmax gives
    them no share, so the function is unchanged; each training forward pass opens the mask ``1/ramp`` further."""

    name: ClassVar[str] = "add_experts"
    node: str
    count: PositiveInt = 1
    ramp: PositiveInt = 100

    def apply(self, graph: Graph) -> Rewrite:
        experts = _experts_of(self, graph, self.node)
        nodes = dict(graph.nodes)
        nodes[self.node] = nodes[self.node].replace(num_experts=experts + self.count, expert_ramp=self.ramp)
        draft = Draft(graph, analyse(graph), nodes, list(graph.outputs))
        draft.exact = True
        draft.note = f"exact while the new experts' mask is 0 (it ramps to 1 over {self.ramp} training steps)"
        graph2, plan = realise(draft, self)
        index = tuple(range(experts)) + (-1,) * self.count
        # the old tensors exist; the mask is new where the node had none (it then starts at 1 but for new experts)
        plan = _expert_plan(plan, graph2, self.node, index, experts)
        return Rewrite(graph2, graph, self, plan)


class PruneExperts(Rule):
    """Remove the experts ``indices`` of a ``moe`` node (their router rows and weights). Exact only when the router
    never picks them: the rule cannot see that from the graph, so its plan says ``exact: false`` with the
    condition (with ``normalize: false``, OLMoE's routing, their share of the softmax goes too)."""

    name: ClassVar[str] = "prune_experts"
    node: str
    indices: tuple[NonNegativeInt, ...] = Field(min_length=1)

    def apply(self, graph: Graph) -> Rewrite:
        experts = _experts_of(self, graph, self.node)
        n: Any = graph.nodes[self.node]   # a moe node (_experts_of checked it)
        bad = [i for i in self.indices if i >= experts]
        if bad:
            raise self.error(f"expert {bad[0]} does not exist: '{self.node}' has {experts}", node=self.node,
                             field="indices")
        kept = tuple(i for i in range(experts) if i not in set(self.indices))
        if len(kept) < n.top_k:
            raise self.error(f"{len(kept)} experts would remain, fewer than top_k={n.top_k}", node=self.node,
                             field="indices")
        nodes = dict(graph.nodes)
        nodes[self.node] = n.replace(num_experts=len(kept))
        draft = Draft(graph, analyse(graph), nodes, list(graph.outputs))
        draft.exact = False
        draft.note = ("exact only if the router never picks the removed experts (never in the top k, e.g. a mask "
                      "at 0)" + ("" if n.normalize else "; with normalize: false their share of the softmax over "
                                                         "every expert goes too, so only experts whose mask is 0"))
        graph2, plan = realise(draft, self)
        plan = _expert_plan(plan, graph2, self.node, kept, experts)
        return Rewrite(graph2, graph, self, plan)
