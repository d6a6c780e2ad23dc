"""Graph algorithms on a networkx view of a :class:`~archgraph.graph.Graph` (free functions, no mutation)."""
from __future__ import annotations


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
