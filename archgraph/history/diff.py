"""What changed between two graph versions, as data and as one graphviz picture of the later graph.

Added nodes are green, widened nodes blue with ``+k``, pruned nodes orange with ``-k``, nodes whose settings or
inputs changed yellow, and removed nodes come back as dashed red ghosts wired where they used to be.

>>> import archgraph
>>> a = archgraph.load("examples/seeds/tiny_cnn.yaml")
>>> b = a.replace(nodes={**a.nodes, "c1": a.nodes["c1"].replace(out_channels=8)})
>>> graph_diff(a, b).widened
{'c1': 4}
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from ..graph import Graph
from ..ops.registry import WIDTH_FIELDS, width_of
from ..ops.spec import NodeSpec
from .render import node_label, to_dot, write_dot

ADDED = "#a3e4b5"
WIDENED = "#9ec5fe"
PRUNED = "#ffb38a"
CHANGED = "#ffe69c"
REMOVED = "#dc3545"
UNCHANGED = "#ffffff"
LEGEND = ((ADDED, "added"), (WIDENED, "widened (+k)"), (PRUNED, "pruned (-k)"), (CHANGED, "changed"),
          (REMOVED, "removed (ghost)"))


@dataclass(frozen=True)
class GraphDiff:
    """Node-level differences from ``old`` to ``new``. ``widened``/``pruned`` map a node id to the number of output
    channels (or features) gained or lost; ``changed`` maps a node id to what else changed about it."""
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    widened: dict[str, int] = field(default_factory=dict)
    pruned: dict[str, int] = field(default_factory=dict)
    changed: dict[str, str] = field(default_factory=dict)
    #: nodes without a width of their own (batchnorms, activations, pools, adds) whose channel count changed with
    #: a widened or pruned producer: node id -> channels gained (> 0) or lost (< 0)
    follows: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.widened or self.pruned or self.changed)

    def lines(self) -> list[str]:
        """One human-readable line per kind of change (none when the graphs are the same)."""
        out = []
        if self.added:
            out.append("added: " + ", ".join(self.added))
        if self.widened:
            out.append("widened: " + ", ".join(f"{k} +{v}" for k, v in self.widened.items()))
        if self.pruned:
            out.append("pruned: " + ", ".join(f"{k} -{v}" for k, v in self.pruned.items()))
        if self.changed:
            out.append("changed: " + "; ".join(f"{k} ({v})" for k, v in self.changed.items()))
        if self.removed:
            out.append("removed: " + ", ".join(self.removed))
        return out

    def to_dict(self) -> dict:
        return {"added": list(self.added), "removed": list(self.removed), "widened": dict(self.widened),
                "pruned": dict(self.pruned), "changed": dict(self.changed), "follows": dict(self.follows)}


def _width(node: NodeSpec) -> Optional[int]:
    return width_of(node)


def graph_diff(old: Graph, new: Graph) -> GraphDiff:
    """Compare two graphs node by node (by id)."""
    added = tuple(n for n in new.nodes if n not in old.nodes)
    removed = tuple(n for n in old.nodes if n not in new.nodes)
    widened: dict[str, int] = {}
    pruned: dict[str, int] = {}
    changed: dict[str, str] = {}
    follows: dict[str, int] = {}
    for nid, node in new.nodes.items():
        if nid not in old.nodes:
            continue
        before = old.nodes[nid]
        if before.op != node.op:
            changed[nid] = f"op {before.op} -> {node.op}"
            continue
        w0, w1 = _width(before), _width(node)
        if w0 is not None and w1 is not None and w1 != w0:
            (widened if w1 > w0 else pruned)[nid] = abs(w1 - w0)
        elif w0 is None and old.shape(nid)[0] != new.shape(nid)[0]:  # channels (or features) of [C, ...] / [F]
            follows[nid] = new.shape(nid)[0] - old.shape(nid)[0]
        notes = []
        if tuple(before.inputs) != tuple(node.inputs):
            notes.append(f"in {', '.join(before.inputs)} -> {', '.join(node.inputs)}")
        f0, f1 = before.fields(), node.fields()
        for key in f1:
            if key not in WIDTH_FIELDS and f0.get(key) != f1[key]:
                notes.append(f"{key} {_short(f0.get(key))} -> {_short(f1[key])}")
        if notes:
            changed[nid] = "; ".join(notes)
    return GraphDiff(added, removed, widened, pruned, changed, follows)


def _short(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return "x".join(map(str, value))
    return str(value)


def diff_dot(old: Graph, new: Graph, *, title: Optional[str] = None) -> str:
    """DOT source of ``new`` with the changes from ``old`` marked by colour and label."""
    d = graph_diff(old, new)
    highlight = _highlights(d, new)
    removed = {nid: node_label(old, nid, "removed") for nid in d.removed}
    used = {colour for colour, _ in highlight.values()} | ({REMOVED} if removed else set())
    used.discard(UNCHANGED)
    legend = [(c, t) for c, t in LEGEND if c in used] or [("#ffffff", "no changes")]
    return to_dot(new, highlight=highlight, removed=removed, ghost_edges=_ghost_edges(d, old, new, removed),
                  legend=legend, title=title or f"{old.name} -> {new.name}")


def _highlights(d: GraphDiff, new: Graph) -> dict[str, tuple[str, str]]:
    """Node id -> (fill colour, label note) of every node of ``new``."""
    # unchanged nodes in plain white so that the colours of the changes stand out
    highlight = {nid: (UNCHANGED, "") for nid in new.nodes}
    for nid in d.added:
        highlight[nid] = (ADDED, "added")
    for nid, k in d.widened.items():
        highlight[nid] = (WIDENED, f"widened +{k}")
    for nid, k in d.pruned.items():
        highlight[nid] = (PRUNED, f"pruned -{k}")
    for nid, k in d.follows.items():  # a batchnorm that lost the same channels is pruned too, not unchanged
        highlight[nid] = (WIDENED, f"+{k} channels") if k > 0 else (PRUNED, f"{k} channels")
    for nid, note in d.changed.items():
        colour, extra = highlight[nid] if nid in d.widened or nid in d.pruned else (CHANGED, "")
        highlight[nid] = (colour, "\n".join(x for x in (extra, "changed: " + _wrap(note)) if x))
    return highlight


def _ghost_edges(d: GraphDiff, old: Graph, new: Graph, removed: dict) -> list[tuple[str, Optional[str]]]:
    """The old edges of the removed nodes that still have an end to draw (``None``: a graph output)."""
    edges: list[tuple[str, Optional[str]]] = []
    for nid in d.removed:
        edges += [(src, nid) for src in old.nodes[nid].inputs
                  if src in new.nodes or src in new.inputs or src in removed]
        edges += [(nid, user) for user in old.users(nid) if user in new.nodes]
        if nid in old.outputs:
            edges.append((nid, None))
    return edges


def _wrap(text: str, width: int = 36) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(text, width, break_long_words=True)) or text


def render_diff(old: Graph, new: Graph, out: Union[str, os.PathLike], *, title: Optional[str] = None) -> Path:
    """Draw the diff picture to ``out`` (.svg, .png, .pdf or .dot).

    >>> render_diff(archgraph.load("a.yaml"), archgraph.load("b.yaml"), "diff.svg")  # doctest: +SKIP
    """
    return write_dot(diff_dot(old, new, title=title), out)
