"""Time one growth event on GPT graphs of 12 and 48 pre-norm blocks (D=64, 4 heads of 16, a 4x GELU MLP, 32
tokens, 65 symbols), and print the 48/12 ratio (linear growth in the depth is 4).

    python benchmarks/transformer_growth_event.py [--depths 12 48] [--repeats 5]

Each event is ``archgraph.rewrite(graph, module, rule, optimizer=opt)`` (rule, build, weight and buffer transfer,
the optimizer's parameters and state remapped) on a module that has taken one AdamW step (the training loop's
optimizer and parameter groups, so every parameter has state to carry). Events: one more head in the middle block's
attention (local), a new transformer block after the middle block, and widening the residual stream by 8 channels
(``add_filters`` on the token embedding: every block's norms, q/k/v columns, o_proj rows, MLP and the head change:
global). Times are the fastest and the median of ``--repeats`` runs, each on a freshly built and stepped module;
the ratio uses the fastest (the least disturbed by other processes on a shared machine).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]

import torch  # noqa: E402
from transformer_helpers import gpt_graph  # noqa: E402

import archgraph  # noqa: E402
from archgraph import rules  # noqa: E402
from archgraph.train.config import Schedule  # noqa: E402
from archgraph.train.optim import make_optimizer  # noqa: E402

SCHEDULE = Schedule()   # the loop's default optimizer: AdamW, weight decay on linear weights
T, VOCAB = 32, 65


def gpt(depth: int, d: int = 64) -> archgraph.Graph:
    return gpt_graph(depth=depth, d=d, heads=4, mlp=4 * d, vocab=VOCAB, t=T)


def setup(graph):
    module = archgraph.build(graph)
    opt = make_optimizer(module, SCHEDULE)
    x = torch.randint(0, VOCAB, (2, T))
    module(x).square().mean().backward()
    opt.step()
    opt.zero_grad()
    return module, opt


def events(depth: int) -> dict[str, rules.Rule]:
    mid = depth // 2
    return {"add_heads (1 head, middle block)": rules.AddHeads(node=f"b{mid}_attn", count=1),
            "insert_block (after the middle block)": rules.InsertBlock(after=f"b{mid}_res2", norm="layernorm",
                                                                       activation="gelu"),
            "widen residual stream (add_filters wte +8)": rules.AddFilters(node="wte", count=8)}


def time_event(graph, rule, repeats: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeats):
        module, opt = setup(graph)
        t0 = time.perf_counter()
        archgraph.rewrite(graph, module, rule, optimizer=opt)
        runs.append(time.perf_counter() - t0)
    return min(runs), statistics.median(runs)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[12, 48])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    load = os.getloadavg()[0]
    results: dict[str, dict[int, float]] = {}
    lines = ["| event | blocks | nodes | params | fastest ms | median ms |", "|---|---|---|---|---|---|"]
    for depth in args.depths:
        graph = gpt(depth)
        for name, rule in events(depth).items():
            fastest, median = time_event(graph, rule, args.repeats)
            results.setdefault(name, {})[depth] = fastest
            lines.append(f"| {name} | {depth} | {len(graph.nodes)} | {graph.params:,} | {fastest * 1e3:.1f} | "
                         f"{median * 1e3:.1f} |")
    print(f"torch {torch.__version__}, CPU, 1 thread; archgraph.rewrite with AdamW state; fastest and median of "
          f"{args.repeats} runs; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after "
          f"({os.cpu_count()} cores)\n")
    print("\n".join(lines))
    if len(args.depths) == 2:
        small, large = args.depths
        print(f"\n| event | {small} blocks ms | {large} blocks ms | ratio {large}/{small} |\n|---|---|---|---|")
        for name, by in results.items():
            print(f"| {name} | {by[small] * 1e3:.1f} | {by[large] * 1e3:.1f} | {by[large] / by[small]:.1f}x |")
    return results


if __name__ == "__main__":
    main()
