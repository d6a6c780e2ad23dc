"""archgraph prune GRAPH --weights W.safetensors --ratio R [--criterion l2] [--heads] [--uniform] [--calib RUN.yaml]
[--round-to N] [--depth K] [--report-latency] -o OUT"""
from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Mapping

import archgraph

from .args import (
    command,
    folder_output_argument,
    force_argument,
    graph_argument,
    quiet_argument,
    seed_argument,
    weights_argument,
)
from .outputs import output_folder

if TYPE_CHECKING:
    import torch

    from archgraph.graph import Graph
    from archgraph.rules import Rule

CRITERIA = ["l2", "l1", "random", "taylor", "activation"]


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "prune", run, help="structured pruning: remove a ratio of every coupled channel group, or "
                                        "whole residual blocks",
                description="Remove RATIO of the channels of every coupled channel group of GRAPH, the least "
                            "important by CRITERION (the summed |w|^2 or |w| of every weight holding the channel, "
                            "random, taylor: the summed |w * dL/dw| on calibration batches, or activation: the "
                            "channel's mean |output| where layers read it on calibration batches), and/or (--depth K) "
                            "the K residual blocks that change their input least (block influence 1 - cos(input, "
                            "output) on calibration batches), and write OUT/graph.yaml and OUT/weights.safetensors. "
                            "The graph's outputs are never pruned; grouped convs lose the same number of channels "
                            "from every group, each group its least important. Prints the equivalent "
                            "prune_channels / prune_heads / collapse_layer rules (for 'archgraph apply').")
    graph_argument(p, "the graph file to prune")
    weights_argument(p, "weights of GRAPH", required=True)
    p.add_argument("--ratio", type=float, default=0.0,
                   help="fraction of each group's channels to remove, [0, 1) (default 0: with --depth only)")
    p.add_argument("--criterion", default="l2", choices=CRITERIA, help="importance (default l2; taylor and "
                                                                       "activation need --calib)")
    p.add_argument("--heads", action="store_true", help="also remove RATIO of every attention's heads (the same "
                                                         "number from each kv group, or whole groups)")
    p.add_argument("--calib", metavar="RUN.yaml", help="a run file whose data: section gives the calibration "
                                                       "batches (taylor, activation, --depth)")
    p.add_argument("--calib-batches", type=int, default=8, metavar="N",
                   help="calibration batches of the run's data.batch_size (default 8)")
    p.add_argument("--data-root", metavar="PATH", help="dataset root of --calib (overrides its data.root)")
    p.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="keep every pruned width (channels, neurons, heads x head_dim, the residual stream) a "
                        "multiple of N (default 1)")
    p.add_argument("--depth", type=int, default=0, metavar="K",
                   help="first remove the K residual blocks of least block influence (needs --calib)")
    p.add_argument("--report-latency", action="store_true",
                   help="time the network before and after on this machine (batch 1 and 32, median of rounds)")
    p.add_argument("--uniform", action="store_true",
                   help="alike channel groups (the same op, the same size: every layer's MLP) lose the same number "
                        "of channels, so layers that start equal stay equal (a Hugging Face export then loads in "
                        "the family's own class)")
    seed_argument(p, "seed of the random criterion (default 0)")
    folder_output_argument(p, "OUT")
    quiet_argument(p, "do not list the pruned channels")
    force_argument(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from archgraph.fx.builder import build
    from archgraph.fx.weights import carried_metadata, check_weights, load_weights, tie_state
    from archgraph.rules import encode

    from .apply import write
    output_folder(args.output, args.force)
    _check_arguments(args)
    graph = archgraph.load(args.graph)
    state = load_weights(args.weights)
    with torch.device("meta"):     # only shapes are checked: no memory, no initialisation
        check_weights(build(graph), state, args.weights)
    start, start_state = graph, (state if args.report_latency else None)
    graph, state, rules = _pruned(args, graph, state, keep_input=start_state is not None)
    with torch.device("meta"):
        check_weights(build(graph), state, args.weights)
    state = tie_state(graph, state)   # the weights keep their dtype (float16 stays float16)
    gpath, wpath = write(args.output, graph, state, {"prune": json.dumps([encode(r) for r in rules]),
                                                     "ratio": args.ratio, "criterion": args.criterion,
                                                     "depth": args.depth, "round_to": args.round_to,
                                                     **carried_metadata(args.weights)})
    _print_summary(args, rules, start, graph)
    if start_state is not None:   # --report-latency
        from archgraph.fx.latency import compare, describe, measure_pair
        before, after = measure_pair(_float_module(start, start_state), start, _float_module(graph, state), graph)
        print(f"latency {compare(before, after)}; MACs {start.macs / max(graph.macs, 1):.2f}x fewer "
              f"({describe(after).split('(', 1)[1][:-1]}, the two timed in alternation)")
    print(f"wrote {gpath} and {wpath}")
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    from archgraph.errors import ConfigError
    if not 0.0 <= args.ratio < 1.0:
        raise ConfigError(f"--ratio {args.ratio} must be at least 0 and below 1", field="--ratio")
    if args.round_to < 1:
        raise ConfigError(f"--round-to {args.round_to} must be at least 1", field="--round-to")
    needs_calib = args.criterion in ("taylor", "activation") and args.ratio > 0 or args.depth > 0
    if needs_calib and not args.calib:
        what = "--depth" if args.depth > 0 else f"--criterion {args.criterion}"
        raise ConfigError(f"{what} needs calibration data: --calib RUN.yaml (its data: section)", field="--calib")


def _pruned(args: argparse.Namespace, graph: Graph, state: dict[str, torch.Tensor],
            keep_input: bool) -> tuple[Graph, dict[str, torch.Tensor], list[Rule]]:
    """The blocks (``--depth``), then the channels and heads (``--ratio``) pruned, and the rules that did it;
    ``state`` is given up (its tensors dropped as their pruned versions are made) unless ``keep_input``."""
    from archgraph.fx.depth import prune_depth
    calib = None
    if args.calib:
        from archgraph.train.calibration import calibration_batches
        calib = calibration_batches(args.calib, graph, args.calib_batches, args.data_root, seed=None)
    rules: list[Rule] = []
    if args.depth > 0:
        graph, state, blocks = prune_depth(graph, state, args.depth, calib or [])
        rules += blocks
    if args.ratio > 0:
        edit = archgraph.prune(graph, state, args.ratio, args.criterion, args.seed, args.heads, calib=calib,
                               round_to=args.round_to, uniform=args.uniform, strict=True,
                               consume=not keep_input and not rules)
        graph, state = edit
        rules += edit.rules
    return graph, state, rules


def _print_summary(args: argparse.Namespace, rules: list[Rule], start: Graph, graph: Graph) -> None:
    if rules and not args.quiet:
        what = "channels and blocks" if args.depth > 0 else "channels"
        print(f"the pruned {what}, as rules for 'archgraph apply':")
        for r in rules:
            print("  " + _rule_text(r))
    what = "rule(s)" if args.depth else ("channel group(s) and attention node(s)" if args.heads else
                                        "channel group(s)")
    by = args.criterion if args.ratio > 0 else "block influence"
    print(f"pruned {len(rules)} {what} by {by}: {start.params:,} -> {graph.params:,} "
          f"params, {start.macs:,} -> {graph.macs:,} MACs")


def _rule_text(r: Rule) -> str:
    from archgraph.rules import PruneChannels
    args = r.args()
    if isinstance(r, PruneChannels):
        also = r.also_text()
        return (f"{r.name} node={r.node} indices={','.join(map(str, r.indices))}" + (f" also={also}" if also else ""))
    parts = [f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in args.items()]
    return " ".join([r.name, *parts])


def _float_module(graph: Graph, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    from archgraph.fx.builder import build
    module = build(graph)
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return module
