"""Graphviz pictures of one graph: each node shows its id, op, key sizes and output shape."""
from __future__ import annotations

import html
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from ..errors import ArchgraphError
from ..format.yaml_io import atomic_write_bytes
from ..graph import Graph
from ..ops.registry import OPS

KEY_FIELDS = ("out_channels", "out_features", "kernel_size", "stride", "groups", "p", "output_size")


def plain(text: Any) -> str:
    """``text`` as a plain-string graphviz label that nothing in it can change: never taken for an HTML-like label
    (``<...>``), backslashes doubled (so ``\\N``, ``\\G`` or a final backslash mean nothing), control characters
    other than the newline shown as ``?``; the quotes are escaped by graphviz's own quoting.

    >>> plain("<net>")
    '<net>'
    >>> type(plain("<net>")).__name__
    'NoHtml'
    """
    import graphviz
    shown = "".join(ch if ch == "\n" or ch.isprintable() else "?" for ch in str(text))
    return graphviz.nohtml(shown.replace("\\", "\\\\"))


def node_label(graph: Graph, nid: str, extra: str = "") -> str:
    node = graph.nodes[nid]
    fields = node.fields()
    bits = []
    for key in KEY_FIELDS:
        if key in fields and fields[key] is not None:
            if key == "stride" and fields[key] in (1, (1, 1)):
                continue
            if key == "groups" and fields[key] == 1:
                continue
            value = fields[key]
            value = "x".join(map(str, value)) if isinstance(value, tuple) else value
            short = {"out_channels": "out", "out_features": "out", "kernel_size": "k", "output_size": "size"}
            bits.append(f"{short.get(key, key)}={value}")
    shape = "x".join(map(str, graph.shape(nid)))
    lines = [f"{nid}", f"{node.op}" + (f" ({', '.join(bits)})" if bits else ""), f"[{shape}]"]
    if extra:
        lines.append(extra)
    return "\n".join(lines)


def to_dot(graph: Graph, *, highlight: Optional[Mapping[str, tuple[str, str]]] = None, title: Optional[str] = None,
           removed: Optional[Mapping[str, str]] = None,
           ghost_edges: Sequence[tuple[str, Optional[str]]] = (),
           legend: Sequence[tuple[str, str]] = (), rankdir: str = "TB") -> str:
    """DOT source of ``graph``. ``highlight`` maps node ids to (fill colour, extra label line); ``removed`` adds
    ghost nodes (id -> label) drawn dashed; ``ghost_edges`` are (src, dst) edges drawn dashed (dst ``None``: to the
    output); ``legend`` is a list of (colour, text) shown in a small key; ``rankdir`` is graphviz's layout
    direction (``TB`` top to bottom, ``LR`` left to right)."""
    import graphviz
    dot = graphviz.Digraph("graph")  # a fixed name: every text from the graph goes through plain() as a label
    dot.attr(rankdir=rankdir, fontname="Helvetica", label=plain(title or graph.name), labelloc="t")
    dot.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10")
    highlight = highlight or {}
    for name, shape in graph.inputs.items():
        dot.node(name, plain(f"{name}\ninput\n[{'x'.join(map(str, shape))}]"), shape="ellipse", fillcolor="#e9ecef")
    for nid, node in graph.nodes.items():
        colour, extra = highlight.get(nid, (OPS[node.op].export.colour, ""))
        dot.node(nid, plain(node_label(graph, nid, extra)), fillcolor=colour)
        for src in node.inputs:
            dot.edge(src, nid)
    for nid, label in (removed or {}).items():
        dot.node(nid, plain(label), style="dashed", fillcolor="#ffffff", color="#dc3545", fontcolor="#dc3545")
    for out in graph.outputs:
        dot.node(f"__out_{out}", "output", shape="ellipse", fillcolor="#e9ecef")
        dot.edge(out, f"__out_{out}")
    for src, dst in ghost_edges:
        target = dst if dst is not None else f"__out_{graph.outputs[0]}"
        dot.edge(src, target, style="dashed", color="#dc3545")
    if legend:
        rows = "".join(f'<TR><TD BGCOLOR="{html.escape(c)}" WIDTH="14"></TD><TD ALIGN="LEFT">{html.escape(t)}</TD></TR>'
                       for c, t in legend)
        dot.node("__legend", f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="3">{rows}</TABLE>>',
                 shape="plaintext", style="", fontsize="9")
    return dot.source


def dot_binary() -> str:
    found = shutil.which("dot")
    if not found:
        raise ArchgraphError("graphviz's 'dot' program is not installed; install it with "
                             "'apt-get install graphviz' (Debian/Ubuntu) or 'brew install graphviz' (macOS)")
    return found


def write_dot(source: str, out: Union[str, os.PathLike], dpi: Optional[int] = None) -> Path:
    """Write DOT source as ``.dot``, ``.svg``, ``.png`` or ``.pdf`` according to the file's suffix; ``dpi`` sets
    the resolution of the picture (graphviz's default is 96 for .png, 72 for .svg and .pdf)."""
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower()
    if fmt == "dot" or fmt == "gv":
        atomic_write_bytes(out, source.encode())
        return out
    if not fmt:
        raise ArchgraphError("has no suffix to say the picture format; end the name in .svg, .png, .pdf or .dot",
                             file=str(out))
    if fmt not in ("svg", "png", "pdf"):
        raise ArchgraphError(f"unknown picture format '.{fmt}'; use .svg, .png, .pdf or .dot", file=str(out))
    if dpi is not None and not 1 <= dpi <= 2400:
        raise ArchgraphError(f"--dpi must be between 1 and 2400, got {dpi}", field="dpi")
    extra = [f"-Gdpi={dpi}"] if dpi else []
    result = subprocess.run([dot_binary(), f"-T{fmt}", *extra], input=source.encode(), capture_output=True, timeout=120)
    if result.returncode != 0:
        raise ArchgraphError(f"graphviz failed: {result.stderr.decode(errors='replace').strip()}", file=str(out))
    atomic_write_bytes(out, result.stdout)
    return out


def svg(source: str) -> str:
    """Render DOT source to SVG text."""
    result = subprocess.run([dot_binary(), "-Tsvg"], input=source.encode(), capture_output=True, timeout=120)
    if result.returncode != 0:
        raise ArchgraphError(f"graphviz failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode()


def render_graph(graph: Graph, out: Union[str, os.PathLike], *, rankdir: str = "TB", dpi: Optional[int] = None) -> Path:
    """Draw ``graph`` to ``out`` (.svg, .png, .pdf or .dot); ``rankdir="LR"`` lays it out left to right."""
    return write_dot(to_dot(graph, rankdir=rankdir), out, dpi)
