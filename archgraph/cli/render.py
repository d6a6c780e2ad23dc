"""archgraph render FILE|DIR -o OUT.svg|.png|.pdf|.dot [--rankdir LR] [--dpi N]"""
from __future__ import annotations

from pathlib import Path

import archgraph

from .args import command, output_argument
from .outputs import output_file


def register(sub) -> None:
    p = command(sub, "render", run, help="draw a graph (or a run's history) with graphviz",
                description="Draw a graph file: each node with its op, key sizes and output shape. Given a run "
                            "directory, draw its history: the versions as a timeline, each edge labelled with the "
                            "rule that made it.")
    p.add_argument("source", metavar="FILE|DIR", help="a graph file, or a run directory for its history")
    output_argument(p, "OUT", "picture to write: .svg, .png, .pdf or .dot", required=True)
    p.add_argument("--rankdir", choices=["TB", "LR"], default="TB",
                   help="layout of a graph: TB top to bottom (default), LR left to right (wide and short, for deep "
                        "networks)")
    p.add_argument("--dpi", type=int, metavar="N", help="resolution (graphviz's default: 96 for .png)")


def run(args) -> int:
    from archgraph.history.render import render_graph
    output_file(args.output)
    source = Path(args.source)
    if source.is_dir():
        from archgraph.history.timeline import render_history
        out = render_history(source, args.output, dpi=args.dpi)
    else:
        out = render_graph(archgraph.load(source), args.output, rankdir=args.rankdir, dpi=args.dpi)
    print(f"wrote {out}")
    return 0
