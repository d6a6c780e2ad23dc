"""Run the cheap benchmarks and print their markdown tables (``make bench``): training-step speed of built modules
vs hand-written ones (step_speed.py), the cost of a growth event on 100 and 1,000-node graphs (growth_event.py) and
the cost of a new version inside a training run per format (event_cost.py).

    python benchmarks/run_all.py            # a few minutes on one CPU thread
    python benchmarks/run_all.py --quick    # fewer rounds and repeats (noisier)

Other benchmarks take longer or need more (run them on their own): gpu_throughput.py (a GPU), gnap_table.py
(training runs), train_speed.py and event_cost.py --compile (torch.compile), malformed_timing.py.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import event_cost  # noqa: E402
import growth_event  # noqa: E402
import step_speed  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    start = time.perf_counter()
    print(f"# archgraph benchmarks ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f})\n")
    print("## Training step: archgraph vs hand-written eager PyTorch\n")
    print("`python benchmarks/step_speed.py" + (" --rounds 5 --min-time 0.1`\n" if args.quick else "`\n"))
    step_speed.main(["--rounds", "5", "--min-time", "0.1"] if args.quick else [])
    print("\n## Growth event: rewrite + build + weight and optimizer transfer\n")
    print("`python benchmarks/growth_event.py" + (" --repeats 2`\n" if args.quick else "`\n"))
    growth_event.main(["--repeats", "2"] if args.quick else [])
    print("\n## A new version inside a training run, per schedule.format\n")
    print("`python benchmarks/event_cost.py`\n")
    event_cost.main([])
    print(f"\n(all benchmarks: {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
