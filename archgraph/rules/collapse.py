"""Removal rules: ``delete_node`` (a shape-preserving node; its readers read its input) and ``collapse_layer``
(a branch into an add or concat whose output is no longer needed, or an identity-like node, removed together with
the part of the graph that only fed it).

>>> import archgraph
>>> from archgraph import rules
>>> g = archgraph.load("examples/seeds/resnet_cifar.yaml")
>>> rw = archgraph.apply(g, rules.CollapseLayer(node="b1_bn2"))      # drop the first residual branch
>>> [n for n in ("b1_c1", "b1_bn1", "b1_act1", "b1_c2", "b1_bn2", "b1_sum") if n in rw.graph.nodes]
[]
>>> rw.graph.nodes["b1_out"].inputs
('stem_act',)
"""
from __future__ import annotations

from typing import ClassVar

from ..channels import analyse
from ..graph import Graph
from ..ops.registry import OPS
from ..topology import reachable, users_of
from .base import Rewrite, Rule, nonnegative, rewire
from .draft import Draft, realise
from .prune import exactness_note


def _bypass(rule: Rule, graph: Graph, node: str) -> tuple[dict, list[str], bool]:
    """Nodes and outputs with ``node`` removed and its readers reading its input (same shape required)."""
    n = graph.nodes[node]
    src = n.inputs[0]
    nodes = rewire({nid: other for nid, other in graph.nodes.items() if nid != node}, node, src)
    outputs = [src if o == node else o for o in graph.outputs]
    if len(set(outputs)) != len(outputs):
        raise rule.error(f"'{node}' is a graph output and so is its input '{src}'", node=node, field="node")
    exact = bool(OPS[n.op].rewrite.identity(n, [nonnegative(graph)[src]]))
    return nodes, outputs, exact


def _shape_preserving(graph: Graph, node: str) -> bool:
    n = graph.nodes[node]
    return len(n.inputs) == 1 and graph.shapes()[n.inputs[0]] == graph.shapes()[node]


class DeleteNode(Rule):
    """Delete a node with one input and the same shape in and out (identity, dropout, an activation, a norm, a
    ``C -> C`` conv ...); its readers and the outputs read its input instead. Exact for identities, for dropout in
    eval mode and for a ReLU whose input is never negative."""

    name: ClassVar[str] = "delete_node"
    kind: ClassVar[str] = "prune"
    node: str

    def apply(self, graph: Graph) -> Rewrite:
        self.need_node(graph, self.node)
        n = graph.nodes[self.node]
        if len(n.inputs) != 1:
            raise self.error(f"it has {len(n.inputs)} inputs; only a node with one input can be deleted "
                             "(collapse_layer removes one branch of an add or concat)", node=self.node, field="node")
        shapes = graph.shapes()
        if shapes[n.inputs[0]] != shapes[self.node]:
            raise self.error(f"it changes the shape {list(shapes[n.inputs[0]])} -> {list(shapes[self.node])}; only "
                             "a shape-preserving node can be deleted", node=self.node, field="node")
        if len(graph.nodes) == 1:
            raise self.error("it is the only node", node=self.node, field="node")
        nodes, outputs, exact = _bypass(self, graph, self.node)
        draft = Draft(graph, analyse(graph), nodes, outputs, exact=exact,
                      note="" if exact else f"'{self.node}' ({n.op}) is not an identity")
        graph2, plan = realise(draft, self)
        return Rewrite(graph2, graph, self, plan)


class CollapseLayer(Rule):
    """Remove ``node`` and the part of the graph that only fed it.

    When every reader of ``node`` is an add or a concat with other inputs, ``node`` is taken out of them (a branch
    whose output is all pruned or zero: exact when it outputs zeros; a concat loses its channels and its readers
    their columns). Otherwise ``node`` must have one input and keep its shape (an identity-like node): its readers
    read its input. An add or concat left with one input is replaced by it.
    """

    name: ClassVar[str] = "collapse_layer"
    kind: ClassVar[str] = "prune"
    node: str

    def apply(self, graph: Graph) -> Rewrite:
        self.need_node(graph, self.node)
        if self.node in graph.outputs:
            raise self.error("it is a graph output", node=self.node, field="node")
        readers = users_of(graph)[self.node]
        n = graph.nodes[self.node]
        branch = bool(readers) and all(OPS[graph.nodes[u].op].branch_end for u in readers)
        if branch:
            nodes, outputs = self._cut(graph, readers)
            exact = False
            note = _branch_note(graph, self.node, readers)
        elif _shape_preserving(graph, self.node):
            nodes, outputs, exact = _bypass(self, graph, self.node)
            note = "" if exact else f"'{self.node}' ({n.op}) is not an identity"
        else:
            kinds = ", ".join(f"'{u}' ({graph.nodes[u].op})" for u in readers) or "nothing"
            raise self.error(f"it feeds {kinds}: collapse_layer removes a branch that ends in an add or concat, or "
                             "a node that keeps its input's shape", node=self.node, field="node")
        before = reachable(graph.nodes, graph.outputs)
        after = reachable(nodes, outputs)
        nodes = {k: v for k, v in nodes.items() if k in after or k not in before}
        draft = Draft(graph, analyse(graph), nodes, outputs, exact=exact, note=note)
        graph2, plan = realise(draft, self)
        return Rewrite(graph2, graph, self, plan)

    def _cut(self, graph: Graph, readers: list[str]) -> tuple[dict, list[str]]:
        nodes = dict(graph.nodes)
        replaced: dict[str, str] = {}
        for u in readers:
            rest = [i for i in nodes[u].inputs if i != self.node]
            if not rest:
                raise self.error(f"'{u}' reads only '{self.node}'", node=self.node, field="node")
            # an add's inputs all have its shape; a concat of one input is that input when the shapes agree
            if len(rest) == 1 and graph.shapes()[rest[0]] == graph.shapes()[u]:
                replaced[u] = rest[0]
            nodes[u] = nodes[u].replace(inputs=rest)

        def resolve(nid: str) -> str:
            while nid in replaced:
                nid = replaced[nid]
            return nid

        out = {}
        for nid, node in nodes.items():
            if nid in replaced:
                continue
            if any(i in replaced for i in node.inputs):
                node = node.replace(inputs=[resolve(i) for i in node.inputs])
            out[nid] = node
        outputs = [resolve(o) for o in graph.outputs]
        if len(set(outputs)) != len(outputs):
            raise self.error("two graph outputs would become the same node", node=self.node, field="node")
        return out, outputs


def _branch_note(graph: Graph, node: str, readers: list[str]) -> str:
    """When cutting a branch out of its adds and concats keeps the function (see :func:`prune.exactness_note`)."""
    if all(OPS[graph.nodes[u].op].residual for u in readers):
        return f"exact when '{node}' outputs zeros"
    ch = analyse(graph)
    return exactness_note(graph, ch, set(ch.classes(node)), f"'{node}''s channels")
