"""Training-step speed: archgraph's fx-built module vs the same architecture hand-written in eager PyTorch.

For each seed in examples/seeds that has a hand-written twin (benchmarks/handwritten.py, same weights) this times an
SGD training step (forward, cross-entropy, backward, optimizer step) of

* ``hand-written``: the eager module a user would write;
* ``archgraph``: the fx GraphModule ``archgraph.build`` makes;
* ``loop path``: the same module called the way the training loop calls it (``Trainer.forward`` with its ``_Forward``
  wrapper, the gradient scaler, disabled on the CPU);
* ``chosen``: the module in the format ``archgraph.fx.speed.choose_format`` picks for it (channels_last and, with
  ``--compile``, torch.compile), which the loop uses with ``schedule.format: auto``.

The variants run interleaved in rounds, in a fresh random order each round, so load from other processes hits all
of them alike; each timing lasts at least ``--min-time`` seconds (timings of a few milliseconds are at the mercy of
the scheduler's time slices on a shared machine); each ratio is the median over rounds of that round's ratio (<= 1.05
is parity). The load average is printed before and after.

    python benchmarks/step_speed.py [--batch 64] [--rounds 9] [--min-time 0.2] [--threads 1] [--compile] [--seeds ...]
    python benchmarks/step_speed.py --device cuda --compile     # on a GPU (scripts/gpu_check.sh)
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from handwritten import REFERENCES  # noqa: E402
from timing import interleaved, timed  # noqa: E402

import archgraph  # noqa: E402
from archgraph.fx import speed  # noqa: E402
from archgraph.train.loop import Trainer, _Forward, _functional_forward  # noqa: E402


def plain_step(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def loop_step(model, x, y):
    """What Trainer.train_step does around the module (without data loading and a strategy): Trainer.forward itself
    on a stand-in trainer, then the loss, the gradient scaler (disabled on the CPU) and the step."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    runner = _Forward(model, _functional_forward)
    trainer = SimpleNamespace(format=speed.Format(), runner=runner, module=model, amp=False, device=x.device,
                              amp_dtype=torch.float16)
    scaler = torch.amp.GradScaler("cuda", enabled=False)

    def step():
        out = Trainer.forward(trainer, x, {}, runner)
        loss = torch.nn.functional.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return step


def chosen_step(model, fmt, x, y):
    # a compiled runner's parameters() are the module's own, so the same step serves every format
    return plain_step(speed.apply_format(model, fmt), speed.prepare_input(x, fmt), y)


def measure(name: str, args) -> dict:
    cls, shape = REFERENCES[name]
    g = archgraph.load(ROOT / f"examples/seeds/{name}.yaml")
    device = torch.device(args.device)
    built = archgraph.build(g, device=device)
    ref = cls().to(device)
    ref.load_state_dict(built.state_dict())
    x = torch.randn(args.batch, *shape).to(device)
    y = torch.randint(0, 10, (args.batch,)).to(device)
    with torch.no_grad():   # the twin computes the same function
        assert torch.allclose(built.eval()(x), ref.eval()(x), atol=1e-5), f"{name}: hand-written twin differs"
    built.train()
    ref.train()
    fmt = speed.choose_format(g, built, x, y, allow_compile=args.compile, steps=args.choose_steps)
    steps = {"ref": plain_step(ref, x, y), "built": plain_step(built, x, y),
             "loop": loop_step(copy.deepcopy(built), x, y),
             "chosen": chosen_step(copy.deepcopy(built), fmt, x, y)}
    for step in steps.values():
        timed(step, 3, device)   # warm-up (and compilation)
    # each timing lasts at least --min-time, well above the scheduler's time slice on a shared machine
    n = max(args.steps, math.ceil(args.min_time / timed(steps["ref"], 3, device)))
    times = interleaved(steps, args.rounds, n, device)

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(times[a], times[b]))
    return {"name": name, "params": g.params, "format": fmt.describe(), "steps": n,
            **{f"{k}_ms": statistics.median(v) * 1e3 for k, v in times.items()},
            "built_ratio": ratio("built", "ref"), "loop_ratio": ratio("loop", "ref"),
            "chosen_speedup": ratio("built", "chosen")}


def table(rows: list[dict]) -> str:
    out = ["| graph | params | steps per timing | hand-written ms/step | archgraph ms/step | ratio | loop path ratio | "
           "chosen format | chosen ms/step | speed-up over eager |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['name']} | {r['params']:,} | {r['steps']} | {r['ref_ms']:.2f} | {r['built_ms']:.2f} | "
                   f"{r['built_ratio']:.3f} | {r['loop_ratio']:.3f} | {r['format']} | {r['chosen_ms']:.2f} | "
                   f"{r['chosen_speedup']:.2f}x |")
    return "\n".join(out)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=10, help="least steps per timing")
    p.add_argument("--min-time", type=float, default=0.2, help="least seconds per timing")
    p.add_argument("--choose-steps", type=int, default=5, help="steps per candidate when choosing a format")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="let the chooser consider torch.compile")
    p.add_argument("--seeds", nargs="+", default=list(REFERENCES), choices=list(REFERENCES))
    p.add_argument("--device", default="cpu", help="cpu or cuda (TF32 as torch's defaults leave it)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = os.getloadavg()
    rows = [measure(name, args) for name in args.seeds]
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, {where}, {args.threads} thread(s), batch {args.batch}, median of {args.rounds} "
          f"interleaved rounds, each timing at least {args.steps} steps and {args.min_time} s; "
          f"load average {load[0]:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after ({os.cpu_count()} cores)\n")
    print(table(rows))
    worst = max(r["built_ratio"] for r in rows)
    print(f"\nworst archgraph/hand-written ratio: {worst:.3f} ({'parity' if worst <= 1.05 else 'ABOVE 1.05'})")
    return rows


if __name__ == "__main__":
    main()
