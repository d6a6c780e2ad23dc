"""archgraph prune GRAPH --weights W.safetensors --ratio R [--criterion l2] [--heads] [--uniform] -o OUT"""
from __future__ import annotations

import json

import archgraph

from .args import (command, folder_output_argument, force_argument, graph_argument, quiet_argument, seed_argument,
                   weights_argument)
from .outputs import output_folder


def register(sub) -> None:
    p = command(sub, "prune", run, help="structured pruning: remove a ratio of every coupled channel group",
                description="Remove RATIO of the channels of every coupled channel group of GRAPH, the least "
                            "important by CRITERION (the summed |w|^2 or |w| of every weight holding the channel, or "
                            "random), and write OUT/graph.yaml and OUT/weights.safetensors. The graph's outputs are "
                            "never pruned; grouped convs lose the same number of channels from every group, "
                            "each group its least important. Prints the "
                            "equivalent prune_channels rules (for 'archgraph apply').")
    graph_argument(p, "the graph file to prune")
    weights_argument(p, "weights of GRAPH", required=True)
    p.add_argument("--ratio", type=float, required=True, help="fraction of each group's channels to remove, [0, 1)")
    p.add_argument("--criterion", default="l2", choices=["l2", "l1", "random"], help="importance (default l2)")
    p.add_argument("--heads", action="store_true", help="also remove RATIO of every attention's heads (the same "
                                                         "number from each kv group, or whole groups)")
    p.add_argument("--uniform", action="store_true",
                   help="alike channel groups (the same op, the same size: every layer's MLP) lose the same number "
                        "of channels, so layers that start equal stay equal (a Hugging Face export then loads in "
                        "the family's own class)")
    seed_argument(p, "seed of the random criterion (default 0)")
    folder_output_argument(p, "OUT")
    quiet_argument(p, "do not list the pruned channels")
    force_argument(p)


def run(args) -> int:
    from archgraph.fx.builder import build
    from archgraph.fx.magnitude import prune_with_rules
    from archgraph.fx.weights import carried_metadata, check_weights, load_weights, tie_state
    from archgraph.rules import PruneChannels, encode
    from .apply import write
    import torch
    output_folder(args.output, args.force)
    graph = archgraph.load(args.graph)
    state = load_weights(args.weights)
    with torch.device("meta"):     # only shapes are checked: no memory, no initialisation
        check_weights(build(graph), state, args.weights)
    new_graph, new_state, rules = prune_with_rules(graph, state, args.ratio, args.criterion, args.seed, args.heads,
                                                   strict=True, uniform=args.uniform, consume=True)
    del state
    with torch.device("meta"):
        check_weights(build(new_graph), new_state, args.weights)
    new_state = tie_state(new_graph, new_state)   # the weights keep their dtype (float16 stays float16)
    log = [encode(r) for r in rules]
    gpath, wpath = write(args.output, new_graph, new_state, {"prune": json.dumps(log), "ratio": args.ratio,
                                                          "criterion": args.criterion,
                                                          **carried_metadata(args.weights)})
    if rules and not args.quiet:
        print("the pruned channels, as rules for 'archgraph apply':")
        for r in rules:
            also = r.also_text() if isinstance(r, PruneChannels) else ""
            print(f"  {r.name} node={r.node} indices={','.join(map(str, r.indices))}"
                  + (f" also={also}" if also else ""))
    what = "channel group(s) and attention node(s)" if args.heads else "channel group(s)"
    print(f"pruned {len(rules)} {what} by {args.criterion}: {graph.params:,} -> {new_graph.params:,} "
          f"params, {graph.macs:,} -> {new_graph.macs:,} MACs")
    print(f"wrote {gpath} and {wpath}")
    return 0
