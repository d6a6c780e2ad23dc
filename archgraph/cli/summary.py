"""archgraph summary FILE [--json] [--latency [--weights W.safetensors] [--rounds N] [--threads N]]"""
from __future__ import annotations

import json

import archgraph
from archgraph.errors import shown
from archgraph.graph import summary

from .args import command, json_argument, weights_argument


def register(sub) -> None:
    p = command(sub, "summary", run, help="layers, output shapes, params and MACs of a graph (and its latency)",
                description="Print a table of the graph's layers with output shapes, parameters and MACs "
                            "(multiply-accumulates of conv and linear layers, per sample). With --latency, also time "
                            "the built module's forward pass on this machine (eval mode, batch sizes 1 and 32, "
                            "warm-up passes first, the median of timed rounds, the CPU threads stated).")
    p.add_argument("file", metavar="FILE", help="a graph file")
    json_argument(p, "print JSON (params, macs, shapes, layers; latency with --latency) instead")
    p.add_argument("--latency", action="store_true", help="measure the forward latency at batch 1 and 32")
    weights_argument(p, "weights to time with (default: the graph's initialisation; the time rarely depends on "
                        "them)")
    p.add_argument("--rounds", type=int, default=10, metavar="N", help="timed forward passes per batch size "
                                                                       "(default 10; 3 warm-up passes first)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads while timing (default: torch's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to time it (default cpu)")


def input_text(spec) -> str:
    """An input as people read it: ``[1, 28, 28]``, or ``[32] token ids < 65`` for a token input."""
    if isinstance(spec, dict):
        shape = list(spec.get("shape", []))
        return f"{shape} token ids < {spec['vocab']}" if spec.get("vocab") is not None else str(shape)
    return str(list(spec))


def run(args) -> int:
    from archgraph.errors import ConfigError
    graph = archgraph.load(args.file)
    info = summary(graph)
    if args.latency:
        if args.rounds < 1:
            raise ConfigError(f"--rounds must be at least 1, not {args.rounds}", field="--rounds")
        info["latency"] = _latency(graph, args)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = [("node", "op", "output", "params", "MACs")]
    rows += [(layer["id"], layer["op"], "x".join(map(str, layer["shape"])), f"{layer['params']:,}",
              f"{layer['macs']:,}") for layer in info["layers"]]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    print(shown(f"{info['name']}: inputs " + ", ".join(f"{k} {input_text(v)}" for k, v in info["inputs"].items())))
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) if j < 3 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"total: {info['params']:,} params, {info['macs']:,} MACs per sample")
    if args.latency:
        from archgraph.fx.latency import describe
        print(f"latency: {describe(info['latency'])}")
    return 0


def _latency(graph, args) -> dict:
    import torch

    from archgraph.errors import ConfigError
    from archgraph.fx.builder import build
    from archgraph.fx.latency import measure
    from archgraph.fx.weights import load_into, load_weights
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device here", field="--device")
    module = build(graph)
    if args.weights:
        load_into(module, load_weights(args.weights), args.weights)
    return measure(module, graph, rounds=args.rounds, device=args.device, threads=args.threads)
