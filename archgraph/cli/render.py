"""archgraph render FILE -o OUT.svg|.png|.pdf|.dot"""
from __future__ import annotations

from pathlib import Path

import archgraph


def register(sub) -> None:
    p = sub.add_parser("render", help="draw a graph (or a run's history) with graphviz",
                       description="Draw a graph file: each node with its op, key sizes and output shape. "
                                   "Given a run directory, draw its history: the versions as a timeline, each "
                                   "edge labelled with the rule that made it.")
    p.add_argument("source", metavar="FILE|DIR")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="picture to write: .svg, .png, .pdf or .dot")
    p.set_defaults(func=run)


def run(args) -> int:
    from archgraph.history.render import render_graph
    source = Path(args.source)
    if source.is_dir():
        from archgraph.history.timeline import render_history
        out = render_history(source, args.output)
    else:
        out = render_graph(archgraph.load(source), args.output)
    print(f"wrote {out}")
    return 0
