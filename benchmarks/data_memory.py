"""Memory and speed of the data paths (issue 32): a streamed ``folder`` run's memory follows the batch, not the
dataset; and what the DataLoader path costs against the in-memory path on MNIST.

1. **Peak RSS of a folder run on 1x, 10x and 100x images.** ``--base`` PNGs per class (3 classes, ``--size`` pixels
   square, RGB) are generated under a temporary folder, then each size is trained for ``--epochs`` epoch(s) with the
   tiny RGB CNN seed in a fresh child process (``archgraph grow``, dense, CPU, ``data.workers`` = ``--workers``,
   training and evaluation batches of ``--batch``: memory follows the batch, so the batch stays the same). The
   child reports its own peak RSS (``ru_maxrss``) and that of its DataLoader workers (the largest child); the growth
   against 1x is the figure (goal: under 20%).
2. **images/s, DataLoader path vs in-memory path on MNIST** (``--data-root``, default ../shared/data): the same MNIST
   training images and the same augmentation (``translate: 1``), one pass of ``--batches`` batches of ``--batch``
   through (a) the in-memory path (``archgraph.data.feed.Dataset``: uint8 tensors, index, augment the batch) and
   (b) the streamed path (``archgraph.data.feed.Streamed`` over an item set of the same arrays: DataLoader,
   ``--workers`` workers, per-example augmentation), each timed for data alone and for data plus a training step
   of the tiny MNIST CNN (``examples/seeds/tiny_cnn.yaml``, AdamW). Variants alternate over ``--rounds`` rounds; the
   ratios are medians of per-round ratios.

    python benchmarks/data_memory.py [--base 40] [--size 32] [--epochs 1] [--workers 1] [--batches 100] [--rounds 3]
        [--data-root ../shared/data] [--json benchmarks/results/data_memory.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

SEED = {"archgraph": 1, "name": "rgb-cnn", "inputs": {"image": [3, 32, 32]}, "nodes": {
    "c1": {"op": "conv2d", "in": "image", "out_channels": 8, "kernel_size": 3, "padding": 1, "bias": False},
    "bn1": {"op": "batchnorm2d", "in": "c1"},
    "r1": {"op": "relu", "in": "bn1"},
    "p1": {"op": "maxpool2d", "in": "r1", "kernel_size": 2},
    "c2": {"op": "conv2d", "in": "p1", "out_channels": 16, "kernel_size": 3, "padding": 1, "bias": False},
    "bn2": {"op": "batchnorm2d", "in": "c2"},
    "r2": {"op": "relu", "in": "bn2"},
    "gap": {"op": "global_avg_pool", "in": "r2"},
    "fc": {"op": "linear", "in": "gap", "out_features": 3}}, "outputs": ["fc"]}

CHILD = r"""
import json, resource, sys, time
import archgraph
cfg = json.loads(sys.argv[1])
t0 = time.perf_counter()
summary = archgraph.grow(cfg, sys.argv[2], quiet=True)
wall = time.perf_counter() - t0
print(json.dumps({"self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "workers_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "wall_s": wall, "steps": summary["steps"], "test_acc": summary["test_acc"]}))
"""


def make_folder(root: Path, per_class: int, size: int) -> None:
    import numpy as np
    from PIL import Image
    rng = np.random.RandomState(0)
    for split, n in (("train", per_class), ("test", max(3, per_class // 10))):
        for c in range(3):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                px = np.clip(rng.normal(60 + 60 * c, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(d / f"{i:05d}.png")


def folder_rss(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="archgraph-bench-") as tmp:
        for factor in (1, 10, 100):
            root = Path(tmp) / f"x{factor}"
            t0 = time.perf_counter()
            make_folder(root, args.base * factor, args.size)
            made = time.perf_counter() - t0
            seed = {**SEED, "inputs": {"image": [3, args.size, args.size]}}
            cfg = {"seed": seed, "method": {"name": "dense"},
                   "data": {"name": "folder", "path": str(root), "batch_size": args.batch, "workers": args.workers,
                            "eval_batch_size": args.batch,
                            "augment": {"flip": True, "translate": 2}},
                   "schedule": {"epochs": args.epochs, "device": "cpu", "threads": 1, "seed": 0}}
            out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg), str(Path(tmp) / f"run{factor}")],
                                 capture_output=True, text=True, cwd=ROOT,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
            if out.returncode:
                raise SystemExit(out.stderr)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            train = 3 * args.base * factor
            row = {"factor": factor, "train_images": train, "peak_rss_mb": round(r["self_kb"] / 1024, 1),
                   "worker_peak_rss_mb": round(r["workers_kb"] / 1024, 1), "wall_s": round(r["wall_s"], 1),
                   "images_per_s": round(train * args.epochs / r["wall_s"], 1), "generate_s": round(made, 1)}
            rows.append(row)
            print(f"folder x{factor:<3} {train:>6} images: peak RSS {row['peak_rss_mb']:.1f} MB (workers "
                  f"{row['worker_peak_rss_mb']:.1f} MB), {row['wall_s']:.1f} s for the run", flush=True)
    base = rows[0]
    for row in rows:
        row["rss_growth"] = round(row["peak_rss_mb"] / base["peak_rss_mb"] - 1, 4)
        row["worker_rss_growth"] = round(row["worker_peak_rss_mb"] / max(1e-9, base["worker_peak_rss_mb"]) - 1, 4)
    return rows


class ArrayItems:
    """The streamed path's item set over in-memory arrays (so both paths read the same images)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def get(self, i, draw):
        return self.x[i], self.y[i]


def mnist_speed(args) -> dict:
    import torch

    import archgraph
    from archgraph.data import data_config
    from archgraph.data.builtin import load_builtin
    from archgraph.data.feed import Dataset, Streamed
    from archgraph.data.registry import Loaded, Request
    torch.set_num_threads(1)
    cfg = data_config(name="mnist", root=args.data_root, val_fraction=0.0, workers=args.workers,
                      augment={"translate": 1})
    loaded = load_builtin(cfg, Request(seed=0, root=args.data_root))
    memory = Dataset.of(loaded, (1, 28, 28), Request())
    items = Loaded("mnist", "classification", ArrayItems(loaded.train.x, loaded.train.y), None,
                   ArrayItems(loaded.test.x, loaded.test.y), 10, (1, 28, 28), loaded.scale)
    streamed = Streamed(items, cfg, Request(seed=0))
    streamed.mean, streamed.std = memory.mean, memory.std   # the same normalisation (not a sample's)
    graph = archgraph.load(ROOT / "examples/seeds/tiny_cnn.yaml")
    module = archgraph.build(graph, seed=0)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    n = args.batches * args.batch
    gen = torch.Generator().manual_seed(0)

    def batches(path, epoch):
        order = torch.randperm(len(memory.train), generator=gen)[:n]
        index = [order[i:i + args.batch] for i in range(0, n, args.batch)]
        return path.batches(path.train, index, cfg.augment, gen, epoch=epoch)

    def run(path, train: bool, epoch: int) -> float:
        t0 = time.perf_counter()
        for x, y in batches(path, epoch):
            if train:
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(module(x), y).backward()
                opt.step()
        return n / (time.perf_counter() - t0)

    results = {k: [] for k in ("memory_data", "loader_data", "memory_train", "loader_train")}
    run(streamed, False, 0)   # start the workers
    for r in range(args.rounds):
        for train in (False, True):
            kind = "train" if train else "data"
            order = [("memory", memory), ("loader", streamed)]
            for name, path in (order if r % 2 == 0 else order[::-1]):
                results[f"{name}_{kind}"].append(run(path, train, r + 1))
    streamed.close()
    out = {k: round(statistics.median(v), 1) for k, v in results.items()}
    for kind in ("data", "train"):
        ratios = [a / b for a, b in zip(results[f"loader_{kind}"], results[f"memory_{kind}"])]
        out[f"ratio_{kind}"] = round(statistics.median(ratios), 3)
    print(f"MNIST images/s, data only: in-memory {out['memory_data']:,.0f}, DataLoader {out['loader_data']:,.0f} "
          f"(ratio {out['ratio_data']:.3f}); with a training step: in-memory {out['memory_train']:,.0f}, "
          f"DataLoader {out['loader_train']:,.0f} (ratio {out['ratio_train']:.3f})", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=int, default=40, help="training images per class at 1x")
    p.add_argument("--size", type=int, default=32, help="image side in pixels (the seed's input)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    p.add_argument("--batches", type=int, default=100, help="MNIST batches per timing")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--skip-folder", action="store_true")
    p.add_argument("--skip-mnist", action="store_true")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} CPUs", flush=True)
    report = {"settings": vars(args), "load_before": load}
    if not args.skip_folder:
        report["folder"] = folder_rss(args)
        for row in report["folder"][1:]:
            print(f"peak RSS growth x{row['factor']}: {100 * row['rss_growth']:+.1f}% (workers "
                  f"{100 * row['worker_rss_growth']:+.1f}%)")
    if not args.skip_mnist:
        report["mnist"] = mnist_speed(args)
    report["load_after"] = os.getloadavg()[0]
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
