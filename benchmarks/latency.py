"""Pruned but faster? MAC ratio against measured latency ratio, archgraph and Torch-Pruning side by side.

For each model (torchvision resnet50, vit_b_16, mobilenet_v3_large with random weights, and a 12-layer GPT built
from an archgraph graph), both tools prune 50% of every channel group by L2 magnitude (the classifier kept; heads
too for the transformers: archgraph ``heads=True``, Torch-Pruning its ViT example's ``channel_groups`` / its LLM
example's ``prune_num_heads``), once plain and once with ``round_to=8``. Each pruned model's forward pass is timed on
this machine against its own original (eval mode, inference mode, warm-up passes, then the two timed in alternation,
one pass each per round, the median of the rounds) at every batch size. Reported per row: the MAC ratio
(original / pruned; archgraph's counter for archgraph, Torch-Pruning's
``count_ops_and_params`` for Torch-Pruning) and the latency ratio (original / pruned: above 1 is faster).

    python benchmarks/latency.py                                    # the whole table (hours on 2 cores)
    python benchmarks/latency.py --models gpt --gpt-dim 256 --size 64 --batch-sizes 1,8 --rounds 5   # reduced

Results: benchmarks/results/latency.json and latency.md (the exact configuration is written with them).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import archgraph  # noqa: E402
from archgraph.fx.builder import build  # noqa: E402
from archgraph.fx.latency import time_forward  # noqa: E402
from archgraph.fx.weights import load_into  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
IMAGE_MODELS = ("resnet50", "vit_b_16", "mobilenet_v3_large")


def gpt_graph(layers: int = 12, dim: int = 768, heads: int = 12, seq: int = 128, vocab: int = 1024,
              name: str = "gpt") -> archgraph.Graph:
    """A nanoGPT-shaped causal GPT: embedding + learned positions, ``layers`` pre-norm blocks of causal attention and
    a 4x GELU MLP, a final layernorm and an untied linear head."""
    lines = ["archgraph: 1", f"name: {name}", "inputs:", f"  tokens: {{shape: [{seq}], vocab: {vocab}}}", "nodes:",
             f"  wte: {{op: embedding, in: tokens, embedding_dim: {dim}}}", "  wpe: {op: position_embedding, in: wte}"]
    x = "wpe"
    for i in range(layers):
        b = f"b{i}"
        lines += [f"  {b}_ln1: {{op: layernorm, in: {x}}}",
                  f"  {b}_attn: {{op: attention, in: {b}_ln1, num_heads: {heads}, causal: true}}",
                  f"  {b}_res1: {{op: add, in: [{x}, {b}_attn]}}",
                  f"  {b}_ln2: {{op: layernorm, in: {b}_res1}}",
                  f"  {b}_fc: {{op: linear, in: {b}_ln2, out_features: {4 * dim}}}",
                  f"  {b}_gelu: {{op: gelu, in: {b}_fc}}",
                  f"  {b}_proj: {{op: linear, in: {b}_gelu, out_features: {dim}}}",
                  f"  {b}_res2: {{op: add, in: [{b}_res1, {b}_proj]}}"]
        x = f"{b}_res2"
    lines += [f"  ln_f: {{op: layernorm, in: {x}}}", f"  lm_head: {{op: linear, in: ln_f, out_features: {vocab}, "
              "bias: false}", "outputs: [lm_head]"]
    return archgraph.loads("\n".join(lines) + "\n")


def paired_ms(original: nn.Module, pruned: nn.Module, x: torch.Tensor, warmup: int, rounds: int
              ) -> tuple[float, float]:
    """Median ms of the original and the pruned module, timed in alternation (one pass of each per round), so that
    the load of a shared machine falls on both alike."""
    times: tuple[list, list] = ([], [])
    for m in (original, pruned):
        time_forward(m, (x,), warmup, 0)
    for _ in range(rounds):
        for i, m in enumerate((original, pruned)):
            times[i].append(time_forward(m, (x,), 0, 1)[0])
    return 1000 * statistics.median(times[0]), 1000 * statistics.median(times[1])


def ratios(original: nn.Module, pruned: nn.Module, kind: str, args) -> tuple[dict, dict]:
    """``({batch: original / pruned latency}, {batch: [original ms, pruned ms]})``."""
    ratio, ms = {}, {}
    for b in args.batch_sizes:
        a, p = paired_ms(original, pruned, inputs_of(kind, b, args.size, args.gpt_seq, args.gpt_vocab), args.warmup,
                         args.rounds)
        ratio[str(b)], ms[str(b)] = a / p, [a, p]
    return ratio, ms


def inputs_of(kind: str, batch: int, size: int, seq: int, vocab: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    if kind == "gpt":
        return torch.randint(0, vocab, (batch, seq), generator=gen)
    return torch.randn(batch, 3, size, size, generator=gen)


def archgraph_pruned(graph, weights, round_to: int, heads: bool):
    t = time.perf_counter()
    g2, w2 = archgraph.prune(graph, weights, 0.5, criterion="l2", heads=heads, round_to=round_to)
    seconds = time.perf_counter() - t
    m = build(g2)
    load_into(m, w2)
    return m.eval(), g2, seconds


def tp_pruned(model: nn.Module, kind: str, x: torch.Tensor, round_to: int):
    """Torch-Pruning's MetaPruner, L2 magnitude, 50%, the classifier ignored; returns (module, macs, seconds)."""
    import torch_pruning as tp
    model = copy.deepcopy(model).eval()
    kwargs = {}
    if kind == "gpt":
        attns = [m for m in model.modules() if hasattr(m, "q_proj") and hasattr(m, "o_proj")]
        kwargs = dict(num_heads={lin: m.num_heads for m in attns for lin in (m.q_proj, m.k_proj, m.v_proj)},
                      prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=0.5)
        ignored = [model.get_submodule("lm_head")]
    else:
        ignored = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 1000]
        groups = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
        if groups:
            kwargs = dict(channel_groups=groups)
    t = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
                                  ignored_layers=ignored, round_to=round_to if round_to > 1 else None, **kwargs)
    pruner.step()
    seconds = time.perf_counter() - t
    if kind == "gpt":
        for m in attns:
            m.num_heads = m.kv_heads = pruner.num_heads[m.q_proj]
    if hasattr(model, "hidden_dim") and hasattr(model, "conv_proj"):   # torchvision ViT, as TP's example does
        model.hidden_dim = model.conv_proj.out_channels
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):
            m.head_dim = m.embed_dim // m.num_heads
    macs, _ = tp.utils.count_ops_and_params(model, x)
    return model, macs, seconds


def bench(name: str, args) -> list[dict]:
    kind = "gpt" if name == "gpt" else "image"
    if kind == "gpt":
        graph = gpt_graph(args.gpt_layers, args.gpt_dim, args.gpt_heads, args.gpt_seq, args.gpt_vocab)
        original = build(graph).eval()
        weights = original.state_dict()
        ref = original
    else:
        from archgraph.interop.equivalence import randomize_normalization, torchvision_model
        from archgraph.interop.importer import from_module
        ref = randomize_normalization(torchvision_model(name)).eval()
        graph, weights = from_module(ref, input_shape=(3, args.size, args.size))
        original = build(graph)
        load_into(original, weights)
        original.eval()
    x1 = inputs_of(kind, 1, args.size, args.gpt_seq, args.gpt_vocab)
    rows = []
    try:
        import torch_pruning as tp
        tp_base_macs, tp_error = tp.utils.count_ops_and_params(ref, x1)[0], None
    except Exception as err:   # noqa: BLE001 - reported in the table
        tp_base_macs, tp_error = None, f"{type(err).__name__}: {str(err)[:120]}"
    for round_to in (1, 8):
        row = {"model": name, "round_to": round_to}
        try:
            m, g2, s = archgraph_pruned(graph, weights, round_to, heads=True)
            lat, ms = ratios(original, m, kind, args)
            row["archgraph"] = {"mac_ratio": graph.macs / g2.macs, "params": g2.params, "prune_s": s,
                                "latency_ratio": lat, "ms": ms}
        except Exception as err:   # noqa: BLE001
            row["archgraph"] = {"error": f"{type(err).__name__}: {str(err)[:160]}"}
        try:
            if tp_base_macs is None:
                raise RuntimeError(tp_error)
            m, macs, s = tp_pruned(ref, kind, x1, round_to)
            lat, ms = ratios(ref, m, kind, args)
            row["torch_pruning"] = {"mac_ratio": tp_base_macs / macs, "prune_s": s,
                                    "params": sum(p.numel() for p in m.parameters()), "latency_ratio": lat, "ms": ms}
        except Exception as err:   # noqa: BLE001
            row["torch_pruning"] = {"error": f"{type(err).__name__}: {str(err)[:160]}"}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict], batch_sizes) -> str:
    head = ["model", "round_to", "archgraph MAC ratio"] + [f"archgraph latency ratio b{b}" for b in batch_sizes] + \
        ["TP MAC ratio"] + [f"TP latency ratio b{b}" for b in batch_sizes]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], str(r["round_to"])]
        for tool in ("archgraph", "torch_pruning"):
            t = r[tool]
            if "error" in t:
                cells += [f"fails: {t['error'][:60]}"] + ["-"] * len(batch_sizes)
            else:
                cells += [f"{t['mac_ratio']:.2f}x"] + [f"{t['latency_ratio'][str(b)]:.2f}x" for b in batch_sizes]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet50,vit_b_16,mobilenet_v3_large,gpt")
    p.add_argument("--size", type=int, default=224, help="image size (default 224)")
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's)")
    p.add_argument("--gpt-layers", type=int, default=12)
    p.add_argument("--gpt-dim", type=int, default=768)
    p.add_argument("--gpt-heads", type=int, default=12)
    p.add_argument("--gpt-seq", type=int, default=128)
    p.add_argument("--gpt-vocab", type=int, default=1024)
    p.add_argument("--out", default=str(RESULTS / "latency"))
    args = p.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        rows += bench(name, args)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    config["threads_used"] = torch.get_num_threads()
    config["device"] = "cpu"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({"config": config, "rows": rows}, indent=1))
    md = table(rows, args.batch_sizes)
    Path(args.out + ".md").write_text(f"Configuration: {json.dumps(config)}\n\n{md}\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
