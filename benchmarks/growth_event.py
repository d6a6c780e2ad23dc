"""Time one growth event (rule + build + weight, buffer and optimizer transfer) on long residual chains of about
100 and 1000 nodes, and print the 1000/100 ratio (linear growth is about 10).

    python benchmarks/growth_event.py            # about half a minute on one CPU thread

Each event is ``archgraph.rewrite(graph, module, rule, optimizer=opt)`` on a module that has taken one step of the
training loop's optimizer (AdamW with the loop's parameter groups, so every parameter has state to carry), followed
by what the training loop adds (``Trainer.apply_rule``): the optimizer made afresh with the carried state, as a
resumed run makes it. Events: widening one block's inner conv (local), widening the residual stream (every block's
output conv and every add: global), inserting a residual block, and pruning the stream. Times are the fastest and
the median of several runs (the fastest is the least disturbed by other processes on a shared machine; the ratio
uses it); the phases are those of the fastest run. Not included: the format measurement of ``schedule.format: auto``
and torch.compile's recompilation (the training summary's ``speed`` reports them per version), and file writes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import archgraph  # noqa: E402
from archgraph import rules  # noqa: E402
from archgraph.fx.apply_plan import transfer, transfer_optimizer  # noqa: E402
from archgraph.fx.builder import build  # noqa: E402
from archgraph.rules.base import apply  # noqa: E402
from archgraph.train.config import Schedule  # noqa: E402
from archgraph.train.optim import load_optimizer_state, make_optimizer, optimizer_state  # noqa: E402

SCHEDULE = Schedule()   # the loop's default optimizer: AdamW, weight decay on conv/linear weights


def residual_chain(nodes: int, width: int = 16) -> archgraph.Graph:
    """A stem and residual blocks (conv, bn, relu, conv, bn, add, relu: 7 nodes each) up to about ``nodes``."""
    body = {"stem": {"op": "conv2d", "in": "x", "out_channels": width, "kernel_size": 3, "padding": 1,
                     "bias": False},
            "stem_bn": {"op": "batchnorm2d", "in": "stem"}, "stem_act": {"op": "relu", "in": "stem_bn"}}
    cur = "stem_act"
    for b in range(max(1, (nodes - 6) // 7)):
        p = f"b{b}"
        body[f"{p}_c1"] = {"op": "conv2d", "in": cur, "out_channels": width, "kernel_size": 3, "padding": 1,
                           "bias": False}
        body[f"{p}_bn1"] = {"op": "batchnorm2d", "in": f"{p}_c1"}
        body[f"{p}_act1"] = {"op": "relu", "in": f"{p}_bn1"}
        body[f"{p}_c2"] = {"op": "conv2d", "in": f"{p}_act1", "out_channels": width, "kernel_size": 3,
                           "padding": 1, "bias": False}
        body[f"{p}_bn2"] = {"op": "batchnorm2d", "in": f"{p}_c2"}
        body[f"{p}_sum"] = {"op": "add", "in": [f"{p}_bn2", cur]}
        body[f"{p}_out"] = {"op": "relu", "in": f"{p}_sum"}
        cur = f"{p}_out"
    body["pool"] = {"op": "global_avg_pool", "in": cur}
    body["fc"] = {"op": "linear", "in": "pool", "out_features": 10}
    return archgraph.Graph.model_validate({"archgraph": 1, "name": f"chain{nodes}", "inputs": {"x": [3, 8, 8]},
                                           "nodes": body, "outputs": ["fc"]})


def setup(graph):
    module = build(graph)
    opt = make_optimizer(module, SCHEDULE)
    x = torch.randn(2, 3, 8, 8)
    module(x).sum().backward()
    opt.step()
    opt.zero_grad()
    return module, opt


def events(graph):
    mid = len([n for n in graph.nodes if n.endswith("_c1")]) // 2
    return {
        "widen block conv": rules.AddFilters(node=f"b{mid}_c1", count=4),
        "widen residual stream": rules.AddFilters(node="stem", count=4),
        "insert block": rules.InsertBlock(after=f"b{mid}_out"),
        "prune residual stream": rules.PruneChannels(node="stem", indices=(0, 1)),
    }


def time_event(graph, rule, repeats: int) -> tuple[float, float, dict[str, float]]:
    runs = []
    phases: dict[str, float] = {}
    for _ in range(repeats):
        module, opt = setup(graph)
        t0 = time.perf_counter()
        rw = apply(graph, rule)
        t1 = time.perf_counter()
        new = build(rw.graph)
        t2 = time.perf_counter()
        transfer(rw.plan, module, new)
        t3 = time.perf_counter()
        transfer_optimizer(rw.plan, opt, module, new)
        t4 = time.perf_counter()
        state = optimizer_state(opt, new, copy=False)   # Trainer.apply_rule: a fresh optimizer, the state handed over
        fresh = make_optimizer(new, SCHEDULE)
        load_optimizer_state(fresh, new, state, copy=False)
        t5 = time.perf_counter()
        if not runs or t5 - t0 < min(runs):
            phases = {"rule": t1 - t0, "build": t2 - t1, "weights": t3 - t2, "optimizer": t4 - t3,
                      "loop optimizer": t5 - t4}
        runs.append(t5 - t0)
    return min(runs), statistics.median(runs), phases


PHASES = ("rule", "build", "weights", "optimizer", "loop optimizer")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    load = os.getloadavg()[0]
    graphs = {n: residual_chain(n) for n in args.sizes}
    results: dict[str, dict[int, float]] = {}
    lines = ["| event | nodes | params | fastest ms | median ms | " + " | ".join(PHASES) + " |",
             "|---|---|---|---|---|" + "---|" * len(PHASES)]
    for n, graph in graphs.items():
        for name, rule in events(graph).items():
            fastest, median, phases = time_event(graph, rule, args.repeats)
            results.setdefault(name, {})[n] = fastest
            lines.append(f"| {name} | {len(graph.nodes)} | {graph.params:,} | {fastest * 1e3:.1f} | "
                         f"{median * 1e3:.1f} | " + " | ".join(f"{phases[k] * 1e3:.1f}" for k in PHASES) + " |")
    print(f"torch {torch.__version__}, CPU, 1 thread; fastest and median of {args.repeats} runs; phases (ms) of the "
          f"fastest run; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} cores)\n")
    print("\n".join(lines))
    if len(args.sizes) == 2:
        small, large = args.sizes
        print(f"\n| event | {len(graphs[small].nodes)} nodes ms | {len(graphs[large].nodes)} nodes ms | "
              f"ratio {large}/{small} |\n|---|---|---|---|")
        for name, by_size in results.items():
            print(f"| {name} | {by_size[small] * 1e3:.1f} | {by_size[large] * 1e3:.1f} | "
                  f"{by_size[large] / by_size[small]:.1f}x |")
    return results


if __name__ == "__main__":
    main()
