"""Graph traversals shared by every layer: topological order, users, reachability and a networkx view.

Free functions over anything with ``inputs`` and ``nodes`` (a :class:`~archgraph.graph.Graph`), so that the graph,
shape inference and the rules all use these walks without importing each other.
"""
from __future__ import annotations

from .errors import GraphError


def topological_order(graph) -> list[str]:
    """Node ids so that every node comes after its inputs (the YAML order where it already is one).

    A depth-first walk in YAML order that places each node right after its not-yet-placed inputs: linear time.
    """
    placed = set(graph.inputs)
    order: list[str] = []
    for start in graph.nodes:
        if start in placed:
            continue
        stack = [(start, iter(graph.nodes[start].inputs))]
        on_stack = {start}
        while stack:
            nid, pending = stack[-1]
            nxt = next((i for i in pending if i not in placed), None)
            if nxt is None:
                stack.pop()
                on_stack.discard(nid)
                placed.add(nid)
                order.append(nid)
            elif nxt in on_stack:
                raise GraphError("cycle among " + ", ".join(n for n, _ in stack), node=nxt)
            elif nxt not in graph.nodes:
                raise GraphError(f"input '{nxt}' does not exist", node=nid, field="in")
            else:
                on_stack.add(nxt)
                stack.append((nxt, iter(graph.nodes[nxt].inputs)))
    return order


def users_of(graph) -> dict[str, list[str]]:
    """Input or node id -> ids of the nodes that read it (graph order)."""
    users: dict[str, list[str]] = {k: [] for k in (*graph.inputs, *graph.nodes)}
    for nid, node in graph.nodes.items():
        for src in dict.fromkeys(node.inputs):
            users[src].append(nid)
    return users


def to_networkx(graph):
    """A ``networkx.DiGraph``: one vertex per input and node (attributes ``op`` and ``shape``), edges from each
    input to its reader with the input's position as ``index``."""
    import networkx as nx
    g = nx.DiGraph(name=graph.name)
    shapes = graph.shapes()
    for nid, shape in graph.inputs.items():
        g.add_node(nid, op="input", shape=tuple(shape))
    for nid, node in graph.nodes.items():
        g.add_node(nid, op=node.op, shape=shapes[nid])
        for index, src in enumerate(node.inputs):
            g.add_edge(src, nid, index=index)
    return g


def reachable_from_outputs(graph) -> set[str]:
    """Ids of the inputs and nodes the outputs depend on."""
    seen: set[str] = set()
    stack = list(graph.outputs)
    while stack:
        nid = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        if nid in graph.nodes:
            stack.extend(graph.nodes[nid].inputs)
    return seen
