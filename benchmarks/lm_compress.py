"""Compressing a small GPT to half its parameters, five ways, each recovered by the same distillation.

Corpus: the prose of CPython's ``pydoc_data.topics`` (the ``text`` data source's default; character level, its
contiguous 90/5/5 train/val/test split). A causal GPT (``--layers``, ``--dim``, ``--heads``, ``--seq``) is trained
from scratch for ``--train-steps`` AdamW steps; then five recipes bring it to about half its parameters, each followed
by ``--distill-steps`` steps of distillation from the trained model (KL on logits softened at ``--temperature``,
the same batches, optimizer and learning rate for all):

1. magnitude: ``archgraph.prune(criterion="l2", heads=True)`` at the ratio that halves the parameters;
2. activation: the same with ``criterion="activation"`` (Minitron), calibrated on training batches;
3. taylor: the same with ``criterion="taylor"`` (LLM-Pruner first order);
4. depth: ``prune_depth`` of as many residual sub-blocks as halve the parameters (block influence, ShortGPT);
5. Torch-Pruning: ``MetaPruner(MagnitudeImportance(p=2))`` with its LLM example's head settings on the built module,
   at its own ratio that halves the parameters (bisection, as for archgraph), then the same distillation.

A sixth recipe, ``none``, is the control: the unpruned model through the same distillation steps (what the extra
steps alone give). Reported: held-out (test split) perplexity per character before and after recovery, parameters,
and the measured CPU forward latency at batch 1 and 8 (median, threads stated).

    python benchmarks/lm_compress.py                                    # the issue's size (~10M params; hours)
    python benchmarks/lm_compress.py --layers 2 --dim 64 --train-steps 200 --distill-steps 50   # a smoke run

Results: benchmarks/results/lm_compress.json and .md with the configuration.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import gpt_graph  # noqa: E402

import archgraph  # noqa: E402
from archgraph.data import data_config  # noqa: E402
from archgraph.data.feed import load_data  # noqa: E402
from archgraph.fx.builder import build  # noqa: E402
from archgraph.fx.calibration import task_loss  # noqa: E402
from archgraph.fx.depth import prune_depth, residual_blocks  # noqa: E402
from archgraph.fx.latency import time_forward  # noqa: E402
from archgraph.graph import TokenShape  # noqa: E402
from archgraph.train.teacher import Teacher, distill_loss  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def batches(ds, split, size: int, count: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(count):
        yield ds.batch(split, torch.randint(0, len(split), (size,), generator=gen))


def perplexity(module, ds, split, size: int = 64, limit: int = 2048) -> float:
    module.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, min(len(split), limit), size):
            x, y = ds.batch(split, torch.arange(i, min(i + size, len(split), limit)))
            out = module(x)
            total += float(torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1),
                                                             reduction="sum"))
            n += y.numel()
    module.train()
    return math.exp(total / max(1, n))


def train(module, ds, args) -> float:
    opt = torch.optim.AdamW(module.parameters(), lr=args.lr, weight_decay=0.01)
    module.train()
    for x, y in batches(ds, ds.train, args.batch, args.train_steps, 0):
        loss = task_loss(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss)


def distill(module, teacher: Teacher, ds, args) -> None:
    opt = torch.optim.AdamW(module.parameters(), lr=args.distill_lr, weight_decay=0.01)
    module.train()
    for x, _ in batches(ds, ds.train, args.batch, args.distill_steps, 1):
        loss = distill_loss(module(x), teacher(x), temperature=args.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()


def latency(module, seq: int, vocab: int, args) -> dict:
    out = {}
    for b in (1, 8):
        x = torch.randint(0, vocab, (b, seq))
        out[str(b)] = 1000 * statistics.median(time_forward(module, (x,), 2, args.rounds))
    return out


def ratio_for_half(graph, weights, kind: str = "l2") -> float:
    """The pruning ratio (channels and heads) whose pruned graph has at most half the parameters (bisection)."""
    lo, hi = 0.0, 0.95
    for _ in range(10):
        mid = (lo + hi) / 2
        g2, _ = archgraph.prune(graph, weights, mid, criterion="l2", heads=True)
        if g2.params > graph.params / 2:
            lo = mid
        else:
            hi = mid
    return hi


def blocks_for_half(graph, weights, calib) -> int:
    n = len(residual_blocks(graph))
    for k in range(1, n + 1):
        g2, _, _ = prune_depth(graph, weights, k, calib)
        if g2.params <= graph.params / 2:
            return k
    return n


def tp_prune(module, ratio: float, example, lm_head: str = "lm_head"):
    import torch_pruning as tp
    model = copy.deepcopy(module)
    attns = [m for m in model.modules() if hasattr(m, "q_proj") and hasattr(m, "o_proj")]
    pruner = tp.pruner.MetaPruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
        ignored_layers=[model.get_submodule(lm_head)],
        num_heads={lin: m.num_heads for m in attns for lin in (m.q_proj, m.k_proj, m.v_proj)},
        prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=ratio)
    pruner.step()
    for m in attns:
        m.num_heads = m.kv_heads = pruner.num_heads[m.q_proj]
    return model


def tp_ratio_for_half(module, example, params: int) -> float:
    """Torch-Pruning's ratio whose pruned module has at most half of ``params`` (bisection: its ratio counts
    differently from archgraph's, so each tool gets its own)."""
    lo, hi = 0.0, 0.95
    for _ in range(8):
        mid = (lo + hi) / 2
        n = sum(p.numel() for p in tp_prune(module, mid, example).parameters())
        if n > params / 2:
            lo = mid
        else:
            hi = mid
    return hi


def run_config(args, ratio: float, vocab: int) -> dict:
    """The settings a result was made with: the command line (less its folders), the pruning ratio, the corpus."""
    config = {k: v for k, v in vars(args).items() if k not in ("out", "work")}
    config.update(ratio=ratio, vocab=vocab, threads_used=torch.get_num_threads(),
                  corpus="pydoc_data.topics (the text source's default), characters")
    return config


def write(args, ratio: float, vocab: int, base: dict, rows: dict) -> None:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(
        {"config": run_config(args, ratio, vocab), "unpruned": base, "rows": rows}, indent=1))


def trained_path(args) -> Path | None:
    """Where the trained model of these settings is kept under ``--work`` (None without it)."""
    if not args.work:
        return None
    key = "-".join(str(getattr(args, k)) for k in ("layers", "dim", "heads", "seq", "batch", "lr", "train_steps"))
    return Path(args.work) / f"lm-{key}.pt"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--distill-lr", type=float, default=5e-4)
    p.add_argument("--train-steps", type=int, default=3000)
    p.add_argument("--distill-steps", type=int, default=500)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--rounds", type=int, default=10, help="timed forward passes per latency figure")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--recipes", default="magnitude,activation,taylor,depth,torch_pruning")
    p.add_argument("--out", default=str(RESULTS / "lm_compress"))
    p.add_argument("--work", default=None, help="folder for the trained model's weights: a rerun with the same "
                   "settings loads them instead of training again")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ds = load_data(data_config(name="text"), input_shape=TokenShape((args.seq,), 256))
    graph = gpt_graph(args.layers, args.dim, args.heads, args.seq, ds.vocab_size, name="lm")
    model = build(graph)
    t = time.perf_counter()
    saved = trained_path(args)
    if saved is not None and saved.exists():
        state = torch.load(saved, weights_only=True)
        final_train_loss = state.pop("final_train_loss").item()
        model.load_state_dict(state)
    else:
        final_train_loss = train(model, ds, args)
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            torch.save({**model.state_dict(), "final_train_loss": torch.tensor(final_train_loss)}, saved)
    base = {"params": graph.params, "test_ppl": perplexity(model, ds, ds.test), "train_s": time.perf_counter() - t,
            "final_train_loss": final_train_loss, "val_ppl": perplexity(model, ds, ds.val),
            "latency_ms": latency(model, args.seq, ds.vocab_size, args)}
    print(json.dumps({"unpruned": base}), file=sys.stderr, flush=True)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    teacher = Teacher(graph, weights)
    calib = list(batches(ds, ds.train, args.batch, args.calib_batches, 2))
    ratio = ratio_for_half(graph, weights)
    rows = {}
    for recipe in args.recipes.split(","):
        t = time.perf_counter()
        try:
            if recipe in ("magnitude", "activation", "taylor"):
                criterion = {"magnitude": "l2"}.get(recipe, recipe)
                g2, w2 = archgraph.prune(graph, weights, ratio, criterion=criterion, heads=True, calib=calib)
                student = build(g2)
                student.load_state_dict(w2)
                params = g2.params
            elif recipe == "none":   # the control: no pruning, the same distillation steps
                student = build(graph)
                student.load_state_dict(weights)
                params = graph.params
            elif recipe == "depth":
                k = blocks_for_half(graph, weights, calib)
                g2, w2, _ = prune_depth(graph, weights, k, calib)
                student = build(g2)
                student.load_state_dict(w2)
                params = g2.params
            else:
                student = tp_prune(model, tp_ratio_for_half(model, calib[0][0][:1], graph.params), calib[0][0][:1])
                params = sum(p.numel() for p in student.parameters())
            before = perplexity(student, ds, ds.test)
            distill(student, teacher, ds, args)
            rows[recipe] = {"params": params, "test_ppl_pruned": before, "test_ppl_recovered": perplexity(
                student, ds, ds.test), "latency_ms": latency(student, args.seq, ds.vocab_size, args),
                "wall_s": time.perf_counter() - t}
        except Exception as err:   # noqa: BLE001 - reported
            rows[recipe] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
        print(json.dumps({recipe: rows[recipe]}), file=sys.stderr, flush=True)
        write(args, ratio, ds.vocab_size, base, rows)   # a run stopped midway keeps the recipes it finished
    lines = [f"Configuration: {json.dumps(run_config(args, ratio, ds.vocab_size))}", "",
             "| recipe | params | test ppl after pruning | test ppl after distillation | latency ms b1 | b8 |",
             "|---|---:|---:|---:|---:|---:|",
             f"| unpruned | {base['params']:,} | {base['test_ppl']:.3f} | - | {base['latency_ms']['1']:.2f} | "
             f"{base['latency_ms']['8']:.2f} |"]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | fails: {r['error'][:80]} | | | | |")
        else:
            lines.append(f"| {name} | {r['params']:,} | {r['test_ppl_pruned']:.3f} | {r['test_ppl_recovered']:.3f} | "
                         f"{r['latency_ms']['1']:.2f} | {r['latency_ms']['8']:.2f} |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
