"""Largest output difference (float64, random weights) of each way to grow a two-block GPT (D=16), layer norm and RMS
norm: the figures docs/rules.md quotes for ``add_filters`` (preserve, masked, clone) and ``stack_block``.

    python benchmarks/growth_exactness.py
"""
from __future__ import annotations

import torch

import archgraph
from archgraph import rules
from archgraph.fx.apply_plan import transfer


def gpt(norm: str, d: int = 16, depth: int = 2, vocab: int = 13, t: int = 6) -> archgraph.Graph:
    nodes: dict = {"wte": {"op": "embedding", "in": "tokens", "embedding_dim": d},
                   "wpe": {"op": "position_embedding", "in": "wte"}}
    x = "wpe"
    for i in range(depth):
        p = f"b{i}_"
        nodes.update({p + "ln1": {"op": norm, "in": x}, p + "attn": {"op": "attention", "in": p + "ln1",
                                                                    "num_heads": 2, "causal": True},
                      p + "res1": {"op": "add", "in": [x, p + "attn"]}, p + "ln2": {"op": norm, "in": p + "res1"},
                      p + "fc": {"op": "linear", "in": p + "ln2", "out_features": 32},
                      p + "act": {"op": "gelu", "in": p + "fc"},
                      p + "proj": {"op": "linear", "in": p + "act", "out_features": d},
                      p + "res2": {"op": "add", "in": [p + "res1", p + "proj"]}})
        x = p + "res2"
    nodes.update(ln_f={"op": norm, "in": x}, head={"op": "linear", "in": "ln_f", "out_features": vocab})
    return archgraph.Graph.model_validate({"archgraph": 1, "name": "gpt", "inputs": {"tokens": {"shape": [t],
                                           "vocab": vocab}}, "nodes": nodes, "outputs": ["head"]})


def random_module(graph, seed: int = 0) -> torch.nn.Module:
    m = archgraph.build(graph, dtype=torch.float64, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if t.is_floating_point() and not name.endswith(".mask"):
                t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype) * 0.5)
    return m


def main() -> None:
    x = torch.randint(0, 13, (3, 6), generator=torch.Generator().manual_seed(1))
    print("| norm | growth | plan exact | max abs difference | max abs output |")
    print("|---|---|---|---|---|")
    for norm in ("layernorm", "rmsnorm"):
        g = gpt(norm)
        old = random_module(g)
        with torch.no_grad():
            want = old(x)
        growths = {"add_filters wte count=4 init=preserve": rules.AddFilters(node="wte", count=4),
                   "add_filters wte count=4 init=masked": rules.AddFilters(node="wte", count=4, init="masked"),
                   "add_filters wte count=16 init=clone (2x)": rules.AddFilters(node="wte", count=16, init="clone"),
                   "stack_block b0_res2..b1_res2 init=zero": rules.StackBlock(start="b0_res2", end="b1_res2",
                                                                              init="zero"),
                   "stack_block b0_res2..b1_res2 init=copy": rules.StackBlock(start="b0_res2", end="b1_res2")}
        for name, rule in growths.items():
            try:
                rw = archgraph.apply(g, rule)
            except archgraph.RuleError as err:
                print(f"| {norm} | {name} | refused: {err.message} | | |")
                continue
            new = archgraph.build(rw.graph, dtype=torch.float64, seed=1).eval()
            transfer(rw.plan, old, new)
            with torch.no_grad():
                diff = float((new(x) - want).abs().max())
            print(f"| {norm} | {name} | {rw.exact} | {diff:.1e} | {float(want.abs().max()):.2f} |")


if __name__ == "__main__":
    main()
