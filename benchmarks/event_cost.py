"""What a new graph version costs inside a training run, per format: the rewrite (rule, build, weight and optimizer
transfer, optimizer rebuilt), the format measurement (``schedule.format: auto``), and the first step's excess over a
usual step (torch.compile's recompilation, allocator and cache warm-up), read from the run summary's ``speed``.

    python benchmarks/event_cost.py                   # eager, channels_last, auto: about half a minute
    python benchmarks/event_cost.py --compile         # also compile and auto+compile (minutes on a CPU)

The run is GNAP on the tiny MNIST seed (tests/train_helpers.py) with 1,000 generated 28x28 images, set up so that it
grows twice and prunes (the same settings as the tests), one CPU thread.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from train_helpers import tiny_config, write_mnist  # noqa: E402

import archgraph  # noqa: E402


def ms(value) -> str:
    return "" if value is None else f"{value * 1e3:.1f}"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compile", action="store_true", help="also the compiled formats")
    p.add_argument("--epochs", type=int, default=5)
    args = p.parse_args(argv)
    formats = ["eager", "channels_last", "auto"] + (["compile", "auto+compile"] if args.compile else [])
    load = os.getloadavg()[0]
    rows, means = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_mnist(Path(tmp) / "data", n_train=1000, n_test=200)
        for fmt in formats:
            cfg = tiny_config(data, epochs=args.epochs)
            cfg["data"]["batch_size"] = 64
            cfg["schedule"]["format"] = fmt
            summary = archgraph.grow(cfg, Path(tmp) / fmt.replace("+", "_"), quiet=True)
            records = summary["speed"]["versions"]
            means[fmt] = summary["speed"]["event_s_mean"]
            for r in records:
                first, usual = r.get("first_step_s"), r.get("step_s")
                excess = None if first is None or usual is None else max(0.0, first - usual)
                rows.append(f"| {fmt} | {r['version']} ({r['kind']}) | {r['format']} | {ms(r['rewrite_s'])} | "
                            f"{ms(r['measure_s'])} | {ms(first)} | {ms(usual)} | {ms(excess)} |")
    print(f"CPU, 1 thread, load average {load:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} cores); "
          "times in ms (the seed's 'rewrite' is its build and setup)\n")
    print("| schedule.format | version | runs as | rewrite | format measurement | first step | usual step | "
          "first-step excess |\n|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n| schedule.format | mean cost of a rewrite event (rewrite + measurement + first-step excess) |\n|---|---|")
    for fmt, mean in means.items():
        print(f"| {fmt} | {ms(mean)} ms |")
    return means


if __name__ == "__main__":
    import torch
    torch.set_num_threads(1)
    main()
