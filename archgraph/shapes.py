"""Shape inference and size counts: per-sample shapes, parameters and MACs.

MACs count the multiply-accumulates of the conv and linear layers only, per sample (the papers' convention).
Non-zero counts take a weights mapping ``{"<node_id>.<param>": tensor}``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from .errors import GraphError
from .ops.registry import OPS
from .topology import topological_order

if TYPE_CHECKING:   # for the type checker only: this layer never imports torch at run time (tests/test_layers.py)
    from torch import Tensor

    from .graph import Graph


def infer_shapes(graph: Graph) -> dict[str, tuple[int, ...]]:
    # a token input keeps its TokenShape, so an embedding reading it sees the vocabulary
    shapes: dict[str, tuple[int, ...]] = {k: v if isinstance(v, tuple) else tuple(v) for k, v in graph.inputs.items()}
    for nid in topological_order(graph):
        node = graph.nodes[nid]
        ins = [shapes[i] for i in node.inputs]
        try:
            out = OPS[node.op].sizes.shape(node, ins)
        except GraphError as err:
            err.node = err.node or nid
            err.args = (err.render(),)
            raise
        if any(s <= 0 for s in out):
            raise GraphError(f"output shape {list(out)} has an empty axis", node=nid)
        shapes[nid] = tuple(int(s) for s in out)
    return shapes


def node_params(graph: Graph, nid: str) -> int:
    node = graph.nodes[nid]
    return OPS[node.op].sizes.params(node, graph.input_shapes(nid), graph.shape(nid))


def node_macs(graph: Graph, nid: str) -> int:
    node = graph.nodes[nid]
    return OPS[node.op].sizes.macs(node, graph.input_shapes(nid), graph.shape(nid))


def count_params(graph: Graph) -> int:
    """Dense parameter count; equals ``sum(p.numel() for p in build(graph).parameters())``."""
    return sum(node_params(graph, nid) for nid in graph.nodes)


def count_macs(graph: Graph) -> int:
    """Multiply-accumulates of conv and linear layers for one sample."""
    return sum(node_macs(graph, nid) for nid in graph.nodes)


def count_nonzero_params(graph: Graph, weights: Mapping[str, Tensor]) -> int:
    """Parameters that are not exactly zero. ``weights`` maps ``<node_id>.<param>`` to tensors; buffers are skipped."""
    total = 0
    for nid, node in graph.nodes.items():
        layout = OPS[node.op].coupling.layout(node, graph.input_shapes(nid))
        for name in layout:
            if name in OPS[node.op].coupling.buffers:
                continue
            tensor = weights.get(f"{nid}.{name}")
            if tensor is not None:
                total += int((tensor != 0).sum())
    return total


def count_nonzero_macs(graph: Graph, weights: Mapping[str, Tensor]) -> int:
    """Multiply-accumulates that involve a non-zero conv/linear weight, per sample."""
    shapes = graph.shapes()
    total = 0
    for nid, node in graph.nodes.items():
        w = weights.get(f"{nid}.weight")
        if w is None:
            continue
        total += OPS[node.op].sizes.nonzero_macs(node, shapes[nid], int((w != 0).sum()))
    return total
