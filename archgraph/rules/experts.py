"""Mixture-of-experts rules: ``add_experts`` (new experts that enter through a mask the router reads, so they are
never picked at first: exact) and ``prune_experts`` (remove experts: exact only for experts the router never picks).

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
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from pydantic import Field, NonNegativeInt, PositiveInt

from ..channels import analyse
from ..ops.registry import OPS
from ..plan import AxisMap, TensorPlan
from .base import Rewrite, Rule
from .draft import Draft, realise


def _experts_of(rule: Rule, graph, node: str) -> int:
    rule.need_node(graph, node)
    n = graph.nodes[node]
    found = OPS[n.op].experts(n)
    if found is None:
        raise rule.error(f"'{node}' is a {n.op}; {rule.name} works on a mixture of experts (moe)", node=node,
                         field="node")
    return found[0]


def _expert_plan(plan, graph, node: str, index: tuple[int, ...], old: int, new_fill: str = "init"):
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


class AddExperts(Rule):
    """Add ``count`` experts to a ``moe`` node. Their weights start as built (random) and they enter through the
    node's expert mask at 0 (``expert_ramp`` set to ``ramp``): the router never picks them and the softmax gives
    them no share, so the function is unchanged; each training forward pass opens the mask ``1/ramp`` further."""

    name: ClassVar[str] = "add_experts"
    node: str
    count: PositiveInt = 1
    ramp: PositiveInt = 100

    def apply(self, graph) -> Rewrite:
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

    def apply(self, graph) -> Rewrite:
        experts = _experts_of(self, graph, self.node)
        n = graph.nodes[self.node]
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
