"""archgraph init FILE --seed N -o W.safetensors"""
from __future__ import annotations

import archgraph
from archgraph.errors import ArchgraphError

from .args import command, output_argument, seed_argument
from .outputs import output_file


def register(sub) -> None:
    p = command(sub, "init", run, help="write deterministic initial weights (safetensors)",
                description="Build the graph and write its initial weights, keyed <node_id>.<param>. The same graph "
                            "and seed always give the same weights.")
    p.add_argument("file", metavar="FILE", help="a graph file")
    seed_argument(p, "initialisation seed (default 0)")
    output_argument(p, "W.safetensors", "weights file to write (in an existing folder)", required=True)


def run(args) -> int:
    if not args.output.endswith(".safetensors"):
        raise ArchgraphError("the output must end in .safetensors", file=args.output)
    output_file(args.output)
    graph = archgraph.load(args.file)
    from archgraph.fx.builder import build
    from archgraph.fx.weights import save_weights
    from archgraph.graph import content_hash
    module = build(graph, seed=args.seed)
    save_weights(module.state_dict(), args.output, {"graph_sha256": content_hash(graph), "seed": str(args.seed)})
    print(f"wrote {args.output} ({graph.params:,} params, seed {args.seed})")
    return 0
