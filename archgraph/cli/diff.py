"""archgraph diff A.yaml B.yaml -o OUT.svg"""
from __future__ import annotations

import json

import archgraph

from .args import command, json_argument, output_argument
from .outputs import output_file


def register(sub) -> None:
    p = command(sub, "diff", run, help="draw what changed between two graph versions",
                description="Draw the later graph B with the changes from A marked: added nodes (green), widened "
                            "nodes (blue, +k), pruned channels (orange, -k), changed settings or inputs (yellow) and "
                            "removed nodes as dashed red ghosts. Prints the changes.")
    p.add_argument("old", metavar="A.yaml", help="the earlier graph")
    p.add_argument("new", metavar="B.yaml", help="the later graph")
    output_argument(p, "OUT", "picture to write: .svg, .png, .pdf or .dot")
    json_argument(p, "print the changes as JSON")


def run(args) -> int:
    from archgraph.history.diff import graph_diff, render_diff
    if args.output:
        output_file(args.output)
    old, new = archgraph.load(args.old), archgraph.load(args.new)
    d = graph_diff(old, new)
    if args.json:
        print(json.dumps(d.to_dict(), indent=2))
    else:
        for line in d.lines() or ["no changes"]:
            print(line)
    if args.output:
        out = render_diff(old, new, args.output, title=f"{args.old} -> {args.new}")
        if not args.json:
            print(f"wrote {out}")
    return 0
