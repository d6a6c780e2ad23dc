"""How far pruning under a channels-first layernorm (ConvNeXt) is from exact.

``archgraph.prune`` removes channels; without a layernorm the result computes exactly what the original computes
with the removed channels zeroed. A layernorm over the channels takes its mean and variance over all of them, so
after pruning it normalises the kept channels with statistics over fewer channels and the output moves. This script
measures that, in float64 on a torchvision model (random init, norms, biases and layer scales randomised), as
``max |y_pruned - y_zeroed| / max |y_zeroed|`` against two zeroed originals:

* *readers ignore*: every reader's input weights on the removed channels zeroed (what tests/test_import_prune.py
  compares with; exact for every op but the norms over channels);
* *zero where made*: also every weight and bias entry that makes a removed channel (convs, norms, layer scales),
  so the removed channels carry zeros into the layernorm;

and for pruning only the spaces no layernorm normalises (ConvNeXt's MLP hidden channels), which is exact.

    python benchmarks/prune_layernorm.py                        # convnext_tiny, 64 px, ratios 0.5 and 0.25
    python benchmarks/prune_layernorm.py --models regnet_x_400mf  # no layernorm: errors ~1e-16
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_import_prune import readers_ignore, run  # noqa: E402

import archgraph  # noqa: E402
from archgraph.channels import analyse  # noqa: E402
from archgraph.fx.apply_plan import transfer_state  # noqa: E402
from archgraph.interop.equivalence import randomize_normalization, torchvision_model  # noqa: E402
from archgraph.interop.importer import from_module  # noqa: E402
from archgraph.ops.registry import OPS  # noqa: E402
from archgraph.rules.prune import classes_at  # noqa: E402


def zero_where_made(graph, weights, removed: set[int]) -> dict:
    """``readers_ignore`` plus every entry that makes a removed channel (weights and biases on its out axis)."""
    ch = analyse(graph)
    shapes = graph.shapes()
    out = readers_ignore(graph, weights, removed)
    for nid, node in graph.nodes.items():
        pos = [i for i, t in enumerate(ch.slots[nid].tokens) if ch.cls(t) in removed]
        if not pos or ch.slots[nid].blocks is not None:
            continue
        for param, (out_axis, _) in OPS[node.op].layout(node, [shapes[i] for i in node.inputs]).items():
            if out_axis is not None and not param.startswith("running"):
                out[f"{nid}.{param}"].index_fill_(out_axis, torch.tensor(pos), 0.0)
    return out


def measure(name: str, size: int, ratio: float, x_seed: int = 0) -> list[tuple[str, float, float]]:
    torch.manual_seed(x_seed)
    model = randomize_normalization(torchvision_model(name)).double()
    graph, weights = from_module(model, input_shape=(3, size, size))
    weights = {k: v.double() for k, v in weights.items()}
    x = torch.randn(4, 3, size, size, dtype=torch.float64)
    ch = analyse(graph)
    rows = []
    every = archgraph.prune(graph, weights, ratio=ratio).rules
    unmixed = [r for r in every if ch.mixes(classes_at(r, ch, r.node, list(r.indices))) is None]
    for label, rules in (("all spaces", every), ("spaces no layernorm normalises", unmixed)):
        if not rules:
            continue
        removed = set()
        for r in rules:
            removed |= classes_at(r, ch, r.node, list(r.indices))
        pruned, state, exact = graph, weights, True
        for r in rules:   # in turn: the same graph and weights as one pass (tests/test_rules_property.py)
            rw = archgraph.apply(pruned, r)
            pruned, state, exact = rw.graph, transfer_state(rw.plan, state), exact and rw.exact
        y = run(pruned, state, x)
        for how, zeroed in (("readers ignore", readers_ignore(graph, weights, removed)),
                            ("zero where made", zero_where_made(graph, weights, removed))):
            ref = run(graph, zeroed, x)
            scale = ref.abs().max().item()
            rows.append((f"{name} | {size} | {ratio} | {label} | {pruned.params / 1e6:.2f}M | {how}",
                         (y - ref).abs().max().item(), scale))
            print(f"| {rows[-1][0]} | {rows[-1][1]:.3g} | {scale:.3g} | {rows[-1][1] / scale:.3g} | "
                  f"{'yes' if exact else 'no'} |", flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="convnext_tiny")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--ratios", default="0.5,0.25")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("| model | px | ratio | pruned | params after | zeroed original | max abs dy | max abs y | relative | "
          "exact claimed |")
    print("|---|---:|---:|---|---:|---|---:|---:|---:|:---:|")
    for name in args.models.split(","):
        for ratio in map(float, args.ratios.split(",")):
            measure(name, args.size, ratio)


if __name__ == "__main__":
    main()
