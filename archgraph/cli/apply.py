"""archgraph apply GRAPH RULE KEY=VALUE... [--weights W.safetensors] [--seed N] -o OUT"""
from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

import archgraph
from archgraph.errors import ConfigError

from .args import command, folder_output_argument, force_argument, graph_argument, seed_argument, weights_argument
from .outputs import output_folder, write_graph_folder


def rule_help() -> str:
    from archgraph.rules import RULES
    lines = ["rules and their arguments (KEY=VALUE; lists as 1,2,3; 'none' for None):"]
    for name, cls in RULES.items():
        args = []
        auto = getattr(cls, "CONTEXT_DEFAULTS", {})
        for field, info in cls.model_fields.items():
            default = "auto" if field in auto else _show(info.default)
            args.append(field if info.is_required() else f"{field}={default}")
        lines.extend(textwrap.wrap(" ".join(args), width=110, initial_indent=f"  {name} ",
                                   subsequent_indent=" " * (len(name) + 5), break_on_hyphens=False))
    lines.append("")
    lines.append("'none' is a default chosen from the graph: op=none takes conv2d after a [C, H, W] value and linear "
                 "after [F];")
    lines.append("bias=none gives the new layer a bias unless a norm follows; prefix=none names the new nodes")
    lines.append("after AFTER; width=none keeps AFTER's width;")
    lines.append("norm=none and activation=none add no norm or activation; insert_block's norm=auto and")
    lines.append("activation=auto are batchnorm and relu on an image, and layernorm and gelu (a pre-norm transformer")
    lines.append("block) after a sequence [T, D].")
    lines.append("prune_channels also=b:0,1;c:2 removes those channels of other nodes in the same rewrite (quote it "
                 "in a shell).")
    lines.append("")
    lines.append("example: archgraph apply examples/seeds/tiny_cnn.yaml add_filters node=c1 count=4 -o runs/wide")
    return "\n".join(lines)


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if value == ():
        return "none"
    return str(value)


def register(sub) -> None:
    p = command(sub, "apply", run, help="apply one rewrite rule (grow or prune) to a graph and its weights",
                description="Apply a rewrite rule to GRAPH and write OUT/graph.yaml and\n"
                            "OUT/weights.safetensors. The weights come from --weights (carried through\n"
                            "the rule) or, without it, from a deterministic initialisation with --seed.",
                epilog=rule_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    graph_argument(p, "the graph file to rewrite")
    p.add_argument("rule", metavar="RULE", help="rule name, e.g. add_filters")
    p.add_argument("values", nargs="*", metavar="KEY=VALUE", help="the rule's arguments")
    weights_argument(p, "weights of GRAPH (keys <node_id>.<param>)")
    seed_argument(p, "initialisation seed for GRAPH without --weights and for new entries that start random "
                     "(default 0)")
    p.add_argument("--plan", action="store_true", help="also print how every changed tensor is made")
    folder_output_argument(p, "OUT")
    force_argument(p)


def parse_values(rule: str, values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"argument '{item}' of rule {rule} must look like KEY=VALUE", rule=rule)
        if key in out:
            raise ConfigError(f"argument '{key}' is given twice", rule=rule, field=key)
        out[key] = value
    return out


def load_module(graph, weights: str | None, seed: int):
    from archgraph.fx.builder import build
    from archgraph.fx.weights import load_into, load_weights
    module = build(graph, seed=seed)
    if weights:
        load_into(module, load_weights(weights), weights)
    return module


def write(out: str, graph, module, meta: dict) -> tuple[Path, Path]:
    """``OUT/graph.yaml`` and ``OUT/weights.safetensors``, written as one unit: ``module``'s state dict, or
    ``module`` itself when it is a state dict already (a tied weight's keys are one tensor, stored once)."""
    return write_graph_folder(out, graph, module.state_dict() if hasattr(module, "state_dict") else module, meta)


def run(args) -> int:
    from archgraph.fx.materialise import materialise
    from archgraph.rules import parse
    from archgraph.rules.base import apply
    output_folder(args.output, args.force)
    graph = archgraph.load(args.graph)
    rule = parse(args.rule, parse_values(args.rule, args.values))
    rw = apply(graph, rule)
    module = load_module(graph, args.weights, args.seed)
    new = materialise(rw, module, seed=args.seed)
    from archgraph.fx.weights import carried_metadata
    gpath, wpath = write(args.output, rw.graph, new, {"rule": json.dumps(rw.log()), "seed": args.seed,
                                                      **carried_metadata(args.weights)})
    exact = "function unchanged" if rw.exact else f"function changes{': ' + rw.plan.note if rw.plan.note else ''}"
    print(f"{rule}: {graph.params:,} -> {rw.graph.params:,} params, {graph.macs:,} -> {rw.graph.macs:,} MACs "
          f"({exact})")
    if args.plan:
        print(rw.plan.describe())
    print(f"wrote {gpath} and {wpath}")
    return 0
