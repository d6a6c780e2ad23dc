"""Training-step speed on the CPU (or GPU): channels-last and torch.compile against the plain forward.

Times GNAP training epochs (masks on) of the MNIST tiny-CNN seed widened four times, on generated 28x28 data, after
one warm-up epoch (which pays for compilation), and prints one markdown row per variant:

    python benchmarks/train_speed.py                  # CPU, 1 thread
    python benchmarks/train_speed.py --threads 2 --device cuda
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main(argv=None) -> int:
    import torch
    from train_helpers import write_mnist

    import archgraph
    from archgraph import rules
    from archgraph.train.config import config_from_data
    from archgraph.train.loop import Trainer
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    p.add_argument("--examples", type=int, default=4096)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seed = archgraph.load(ROOT / "examples" / "seeds" / "tiny_cnn.yaml")
    for node, count in (("c1", 12), ("c2", 24), ("c3", 24)):
        seed = archgraph.apply(seed, rules.AddFilters(node=node, count=count)).graph
    print(f"| variant | ms per step | steps/s | ({seed.params:,} params, batch 128, {args.threads} thread(s), "
          f"{args.device}) |\n| --- | ---: | ---: | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        write_mnist(tmp, n_train=args.examples, n_test=256)
        for fmt in ("eager", "channels_last", "compile", "channels_last+compile"):
            cfg = config_from_data({
                "seed": seed.to_dict(), "data": {"name": "mnist", "root": tmp, "val_fraction": 0.05,
                                                 "batch_size": 128, "augment": {"translate": 2}},
                "method": {"name": "gnap", "patience": 1000},
                "schedule": {"epochs": 100, "device": args.device, "format": fmt, "threads": args.threads}})
            trainer = Trainer(cfg, Path(tmp) / f"run-{fmt}", seed_graph=seed, quiet=True)
            trainer.t0 = time.perf_counter()
            trainer.start()
            trainer.train_epoch()
            steps = trainer.step
            start = time.perf_counter()
            for _ in range(args.epochs):
                trainer.train_epoch()
            if args.device == "cuda":
                torch.cuda.synchronize()
            per_step = (time.perf_counter() - start) / (trainer.step - steps)
            print(f"| format: {fmt} | {1000 * per_step:.1f} | {1 / per_step:.1f} | |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
