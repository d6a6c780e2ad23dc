"""Training-step speed of the sequence and dense seeds: ``archgraph.build`` of a graph vs its hand-written PyTorch
twin (same weights), an AdamW step (forward, cross-entropy, backward, ``optimizer.step``).

* ``gpt_tiny``: the twin is nanoGPT's block written out (``F.scaled_dot_product_attention``, Llama's projection
  names, pre-norm residuals), as a user would write it today;
* ``lstm_lm``: ``nn.Embedding -> nn.LSTM -> nn.Dropout -> nn.Linear`` (tests/reference_models.py);
* ``unet_tiny``: the U-Net of tests/reference_models.py, a per-pixel cross-entropy over its 4 classes.

Both variants run interleaved in rounds in a shuffled order (benchmarks/timing.py), each timing at least
``--min-time`` seconds; the ratio is the median over rounds of that round's archgraph / hand-written time (<= 1.05 is
parity). The load average is printed before and after.

    python benchmarks/gpt_step.py [--batch 32] [--rounds 9] [--min-time 0.3] [--threads 1] [--seeds gpt_tiny ...]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from reference_models import LSTMLM, Table, UNetTiny  # noqa: E402
from timing import interleaved, timed  # noqa: E402

import archgraph  # noqa: E402


class CausalSelfAttention(nn.Module):
    """nanoGPT's attention with Llama's names: heads a view of one projection, scaled_dot_product_attention."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, d))


class NanoGPT(nn.Module):
    """gpt_tiny written by hand: attribute names are the node ids, so the built module's state dict loads."""

    def __init__(self, vocab=65, t=32, d=32, heads=2, hidden=128, depth=2):
        super().__init__()
        self.depth = depth
        self.wte, self.wpe = nn.Embedding(vocab, d), Table(t, d)
        for i in range(depth):
            setattr(self, f"b{i}_ln1", nn.LayerNorm(d))
            setattr(self, f"b{i}_attn", CausalSelfAttention(d, heads))
            setattr(self, f"b{i}_ln2", nn.LayerNorm(d))
            setattr(self, f"b{i}_fc", nn.Linear(d, hidden))
            setattr(self, f"b{i}_proj", nn.Linear(hidden, d))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe.weight
        for i in range(self.depth):
            x = x + getattr(self, f"b{i}_attn")(getattr(self, f"b{i}_ln1")(x))
            x = x + getattr(self, f"b{i}_proj")(F.gelu(getattr(self, f"b{i}_fc")(getattr(self, f"b{i}_ln2")(x))))
        return self.lm_head(self.ln_f(x))


def tokens(batch, t=32, vocab=65):
    return torch.randint(0, vocab, (batch, t)), torch.randint(0, vocab, (batch, t))


def pixels(batch):
    return torch.randn(batch, 3, 32, 32), torch.randint(0, 4, (batch, 32, 32))


#: seed -> (hand-written class, (input, target) maker)
TWINS = {"gpt_tiny": (NanoGPT, tokens), "lstm_lm": (LSTMLM, tokens), "unet_tiny": (UNetTiny, pixels)}


def loss_of(out, y):
    if out.dim() == 3:   # [B, T, vocab] scores: one next-token loss per position
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return F.cross_entropy(out, y)   # [B, classes, H, W] against [B, H, W]


def adamw_step(model, x, y):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_of(model(x), y).backward()
        opt.step()
    return step


def measure(name: str, args) -> dict:
    cls, data = TWINS[name]
    g = archgraph.load(ROOT / f"examples/seeds/{name}.yaml")
    built = archgraph.build(g)
    ref = cls()
    ref.load_state_dict(built.state_dict())   # strict: the same names and shapes
    x, y = data(args.batch)
    with torch.no_grad():   # the twin computes the same function
        assert torch.allclose(built.eval()(x), ref.eval()(x), atol=1e-5), f"{name}: hand-written twin differs"
    built.train()
    ref.train()
    steps = {"ref": adamw_step(ref, x, y), "built": adamw_step(built, x, y)}
    for step in steps.values():
        timed(step, 3)   # warm-up
    n = max(args.steps, math.ceil(args.min_time / timed(steps["ref"], 3)))
    times = interleaved(steps, args.rounds, n)
    ratios = [b / r for b, r in zip(times["built"], times["ref"])]
    return {"name": name, "params": g.params, "steps": n, "ref_ms": statistics.median(times["ref"]) * 1e3,
            "built_ms": statistics.median(times["built"]) * 1e3, "ratio": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios)}


def table(rows: list[dict]) -> str:
    out = ["| graph | params | steps per timing | hand-written ms/step | archgraph ms/step | ratio (median) | "
           "ratio range over rounds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['name']} | {r['params']:,} | {r['steps']} | {r['ref_ms']:.2f} | {r['built_ms']:.2f} | "
                   f"{r['ratio']:.3f} | {r['ratio_min']:.3f}-{r['ratio_max']:.3f} |")
    return "\n".join(out)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=5, help="least steps per timing")
    p.add_argument("--min-time", type=float, default=0.3, help="least seconds per timing")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seeds", nargs="+", default=list(TWINS), choices=list(TWINS))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = os.getloadavg()
    rows = [measure(name, args) for name in args.seeds]
    print(f"torch {torch.__version__}, CPU, {args.threads} thread(s), batch {args.batch}, AdamW, median of "
          f"{args.rounds} interleaved rounds, each timing at least {args.steps} steps and {args.min_time} s; load "
          f"average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} cores)\n")
    print(table(rows))
    worst = max(r["ratio"] for r in rows)
    print(f"\nworst archgraph/hand-written ratio: {worst:.3f} ({'parity' if worst <= 1.05 else 'ABOVE 1.05'})")
    return rows


if __name__ == "__main__":
    main()
