"""Training-step speed: archgraph's fx-built module vs the same architecture hand-written in eager PyTorch.

Both run in this one process, interleaved in rounds so machine noise hits both alike; the figure is the ratio of
median step times (built / hand-written; <= 1.05 is parity). Also times the format the engine picks
(archgraph.speed.choose_format: channels_last and optionally torch.compile) against plain eager.

    python benchmarks/step_speed.py [--batch 64] [--rounds 7] [--compile]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import archgraph  # noqa: E402
from archgraph import speed  # noqa: E402
from handwritten import REFERENCES  # noqa: E402


def step_fn(model, x, y, channels_last=False):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def timed(step, n):
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="let the chooser consider torch.compile")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}\n")
    print("| graph | hand-written ms/step | archgraph ms/step | ratio | chosen format | chosen ms/step | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name, (cls, shape) in REFERENCES.items():
        g = archgraph.load(ROOT / f"examples/seeds/{name}.yaml")
        built = archgraph.build(g)
        ref = cls()
        ref.load_state_dict(built.state_dict())
        x = torch.randn(args.batch, *shape)
        y = torch.randint(0, 10, (args.batch,))
        fmt = speed.choose_format(g, built, x, y, allow_compile=args.compile)
        runs = {"ref": step_fn(ref, x, y), "built": step_fn(built, x, y)}
        chosen_model = archgraph.build(g)
        runner = speed.apply_format(chosen_model, fmt)
        opt = torch.optim.SGD(chosen_model.parameters(), lr=1e-3, momentum=0.9)
        xc = speed.prepare_input(x, fmt)

        def chosen_step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(runner(xc), y).backward()
            opt.step()
        runs["chosen"] = chosen_step
        for step in runs.values():
            timed(step, 3)  # warm-up
        times = {k: [] for k in runs}
        for _ in range(args.rounds):
            for k, step in runs.items():
                times[k].append(timed(step, args.steps))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"| {name} | {med['ref']:.2f} | {med['built']:.2f} | {med['built'] / med['ref']:.3f} | "
              f"{fmt.describe()} | {med['chosen']:.2f} | {med['built'] / med['chosen']:.2f}x |")


if __name__ == "__main__":
    main()
