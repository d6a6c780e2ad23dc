"""Size limits, checked when a graph is validated and before a rule allocates anything.

A typo such as ``out_features: 1000000000000`` would otherwise validate and then exhaust memory when the network is
built. The limits are far above any network this library is meant for; raise them with environment variables:

==========================  ===========================  ==========================================================
limit                       default                      environment variable
==========================  ===========================  ==========================================================
any size in a graph         1,048,576 (2**20)            ``ARCHGRAPH_MAX_WIDTH`` (channels, features, kernel, ...)
parameters of a graph       1,000,000,000                ``ARCHGRAPH_MAX_PARAMS``
MACs per sample             1,000,000,000,000            ``ARCHGRAPH_MAX_MACS``
values per sample per node  1,000,000,000                ``ARCHGRAPH_MAX_ACTIVATION`` (one node's output)
==========================  ===========================  ==========================================================

>>> limit("width")
1048576
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .errors import GraphError
from .ops.registry import OPS

if TYPE_CHECKING:   # the graph imports this module
    from .graph import Graph

DEFAULTS = {"width": 2 ** 20, "params": 10 ** 9, "macs": 10 ** 12, "activation": 10 ** 9}


def env_name(kind: str) -> str:
    return f"ARCHGRAPH_MAX_{kind.upper()}"


def limit(kind: str) -> int:
    """The limit of one kind (``width``, ``params``, ``macs``, ``activation``), from its environment variable or the
    default."""
    text = os.environ.get(env_name(kind), "").strip().replace("_", "").replace(",", "")
    if not text:
        return DEFAULTS[kind]
    if not text.isdigit() or len(text) > 30 or int(text) <= 0:
        raise GraphError(f"{env_name(kind)}={os.environ[env_name(kind)]!r} must be a positive integer",
                         field=env_name(kind))
    return int(text)


def too_big(kind: str, value: int, what: str, **where: str | None) -> GraphError:
    """The error for ``value`` over the ``kind`` limit, saying how to raise it."""
    shown = f"{value:,}" if value < 10 ** 30 else f"a {len(str(value))}-digit number"
    return GraphError(f"{what} is {shown}, over the limit of {limit(kind):,} (a typo? to allow it, set "
                      f"{env_name(kind)})", **where)


def check_width(value: int, **where: str | None) -> None:
    """Refuse one size (a width, a count of new channels) over the width limit."""
    if value > limit("width"):
        raise too_big("width", value, "this size", **where)


def check_graph(graph: Graph) -> None:
    """Refuse a graph over any limit, naming the node and field. Only integer arithmetic: nothing is allocated."""
    width = limit("width")
    for nid, shape in graph.inputs.items():
        for size in shape:
            if size > width:
                raise too_big("width", size, f"input '{nid}' has a size that", field="inputs")
    for nid, node in graph.nodes.items():
        for field, value in node.fields().items():
            for v in value if isinstance(value, tuple) else (value,):
                if type(v) is int and v > width:
                    raise too_big("width", v, field, node=nid, field=field)
    shapes = graph._shape_table()
    activation, max_params, max_macs = limit("activation"), limit("params"), limit("macs")
    params = macs = 0
    for nid, node in graph.nodes.items():
        numel = 1
        for s in shapes[nid]:
            numel *= s
        if numel > activation:
            raise too_big("activation", numel, f"the number of values of its output {list(shapes[nid])} per "
                          "sample", node=nid)
        op = OPS[node.op]
        ins = [shapes[i] for i in node.inputs]
        params += op.params(node, ins, shapes[nid])
        macs += op.macs(node, ins, shapes[nid])
        if params > max_params:
            raise too_big("params", params, "the parameter count (up to this node)", node=nid)
        if macs > max_macs:
            raise too_big("macs", macs, "the MACs per sample (up to this node)", node=nid)
