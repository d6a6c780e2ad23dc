"""Graph traversals shared by every layer: topological order, users, reachability and a networkx view.

Free functions over a mapping of node id -> node (anything with ``inputs``), so that the graph, shape inference, the
rules and the importer all use these walks without importing each other. Each walk is linear in the graph's size.

>>> from types import SimpleNamespace as N
>>> nodes = {"b": N(inputs=["a"]), "a": N(inputs=["x"]), "c": N(inputs=["a", "b"])}
>>> order(nodes, ["x"])
['a', 'b', 'c']
>>> sorted(reachable(nodes, ["b"]))
['a', 'b', 'x']
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from .errors import GraphError

if TYPE_CHECKING:   # the graph imports this module; networkx is imported where it is used
    import networkx as nx

    from .graph import Graph


def _inputs(node: Any) -> list[str]:   # a node, or any record with ``inputs`` (see order's ``inputs``)
    return node.inputs


def order(nodes: Mapping[str, object], sources: Iterable[str] = (), *,
          inputs: Callable[[object], list[str]] = _inputs) -> list[str]:
    """Node ids so that every node comes after its inputs (the mapping's own order where it already is one).

    A depth-first walk in the mapping's order that places each node right after its not-yet-placed inputs. Raises
    :class:`GraphError` naming the node for a cycle (``cycle: a <- b <- a``) or a reference to nothing.
    """
    placed = set(sources)
    result: list[str] = []
    for start in nodes:
        if start in placed:
            continue
        stack = [(start, iter(inputs(nodes[start])))]
        on_stack = {start}
        while stack:
            nid, pending = stack[-1]
            nxt = next((i for i in pending if i not in placed), None)
            if nxt is None:
                stack.pop()
                on_stack.discard(nid)
                placed.add(nid)
                result.append(nid)
            elif nxt in on_stack:
                path = [n for n, _ in stack]
                cycle = path[path.index(nxt):] + [nxt]
                raise GraphError("cycle: " + " <- ".join(cycle), node=nxt, field="in")
            elif nxt not in nodes:
                raise GraphError(f"input '{nxt}' does not exist", node=nid, field="in")
            else:
                on_stack.add(nxt)
                stack.append((nxt, iter(inputs(nodes[nxt]))))
    return result


def topological_order(graph: Graph) -> list[str]:
    """:func:`order` of a graph's nodes, its inputs being the sources."""
    return order(graph.nodes, graph.inputs)


def reachable(nodes: Mapping[str, object], outputs: Iterable[str], *,
              inputs: Callable[[object], list[str]] = _inputs) -> set[str]:
    """Ids of the nodes (and the sources they read) that ``outputs`` depend on."""
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        nid = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        if nid in nodes:
            stack.extend(inputs(nodes[nid]))
    return seen


def users_of(graph: Graph) -> dict[str, list[str]]:
    """Input or node id -> ids of the nodes that read it (graph order)."""
    users: dict[str, list[str]] = {k: [] for k in (*graph.inputs, *graph.nodes)}
    for nid, node in graph.nodes.items():
        for src in dict.fromkeys(node.inputs):
            users[src].append(nid)
    return users


def to_networkx(graph: Graph) -> nx.DiGraph:
    """A ``networkx.DiGraph``: one vertex per input and node (attributes ``op`` and ``shape``), edges from each
    input to its reader with the input's position as ``index``. For the algorithms networkx has and these walks do
    not (dominators, subgraph matching, drawing)."""
    import networkx as nx  # a third-party import kept local: validating a YAML file never needs it
    g = nx.DiGraph(name=graph.name)
    shapes = graph.shapes()
    for nid, shape in graph.inputs.items():
        g.add_node(nid, op="input", shape=tuple(shape))
    for nid, node in graph.nodes.items():
        g.add_node(nid, op=node.op, shape=shapes[nid])
        for index, src in enumerate(node.inputs):
            g.add_edge(src, nid, index=index)
    return g
