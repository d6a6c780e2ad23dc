"""A dense CNN on MNIST or Fashion-MNIST pruned to about 30% of its MACs by each criterion, recovered by distillation.

The seed (``--seed-graph``, default ``examples/seeds/mnist_wide.yaml``) is trained densely for ``--epochs`` epochs
(AdamW, cosine learning rate); then each criterion (``l2``, ``l1``, ``random``, ``activation``, ``taylor``) prunes
it at the one ratio whose pruned graph has at most ``--macs`` of the MACs (the MACs depend on the widths only, so the
ratio is the same for every criterion), calibrated on ``--calib-batches`` training batches, and the pruned network is
trained ``--distill-steps`` steps by distillation from the dense one (KL on logits softened at ``--temperature``,
the same batches for every criterion). Test accuracy before and after recovery.

    python benchmarks/cnn_compress.py --data mnist --data-root ../shared/data --threads 1
    python benchmarks/cnn_compress.py --data fashion_mnist --data-root ../shared/data --epochs 2 --distill-steps 300

The dense model's test accuracy after every epoch is logged and kept (``test_acc_per_epoch``), so the table says how
converged the teacher is. Depth pruning is not in the table: the default seed has no residual blocks to remove.

Results: benchmarks/results/cnn_compress_<data>.json and .md, with the configuration.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import archgraph  # noqa: E402
from archgraph.data import data_config  # noqa: E402
from archgraph.data.feed import load_data  # noqa: E402
from archgraph.fx.builder import build  # noqa: E402
from archgraph.train.teacher import Teacher, distill_loss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def accuracy(module, ds, split) -> float:
    module.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(split), 1000):
            x, y = ds.batch(split, torch.arange(i, min(i + 1000, len(split))))
            right += int((module(x).argmax(1) == y).sum())
    module.train()
    return right / len(split)


def ratio_for(graph, weights, macs: float) -> float:
    lo, hi = 0.0, 0.95
    for _ in range(12):
        mid = (lo + hi) / 2
        if archgraph.prune(graph, weights, mid).graph.macs > macs * graph.macs:
            lo = mid
        else:
            hi = mid
    return hi


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="mnist", choices=["mnist", "fashion_mnist"])
    p.add_argument("--data-root", "--root", dest="root", default=str(ROOT.parent / "shared" / "data"),
                   help="the torchvision-layout dataset folder (MNIST/raw, FashionMNIST/raw)")
    p.add_argument("--seed-graph", default=str(ROOT / "examples" / "seeds" / "mnist_wide.yaml"))
    p.add_argument("--epochs", type=int, default=8, help="dense training epochs (cosine learning rate)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--macs", type=float, default=0.3, help="target fraction of the dense MACs")
    p.add_argument("--distill-steps", type=int, default=500)
    p.add_argument("--distill-lr", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--criteria", default="l2,l1,random,activation,taylor")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    graph = archgraph.load(args.seed_graph)
    ds = load_data(data_config(name=args.data, val_fraction=0.0), seed=0, root=args.root,
                   input_shape=graph.inputs["image"])
    model = build(graph)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    steps = args.epochs * math.ceil(len(ds.train) / args.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    curve = []   # test accuracy after each dense epoch: where it levels off is the convergence the table states
    for _ in range(args.epochs):
        order = torch.randperm(len(ds.train), generator=gen)
        for i in range(0, len(order), args.batch):
            x, y = ds.batch(ds.train, order[i:i + args.batch])
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        curve.append(round(accuracy(model, ds, ds.test), 4))
        print(json.dumps({"epoch": len(curve), "test_acc": curve[-1]}), file=sys.stderr, flush=True)
    dense = {"params": graph.params, "macs": graph.macs, "test_acc": accuracy(model, ds, ds.test),
             "train_s": time.perf_counter() - t, "test_acc_per_epoch": curve}
    print(json.dumps({"dense": dense}), file=sys.stderr, flush=True)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    teacher = Teacher(graph, weights)
    order = torch.randperm(len(ds.train), generator=torch.Generator().manual_seed(1))
    calib = [ds.batch(ds.train, order[i * args.batch:(i + 1) * args.batch]) for i in range(args.calib_batches)]
    ratio = ratio_for(graph, weights, args.macs)
    rows = {}
    for criterion in args.criteria.split(","):
        g2, w2 = archgraph.prune(graph, weights, ratio, criterion=criterion, calib=calib)
        student = build(g2)
        student.load_state_dict(w2)
        pruned_acc = accuracy(student, ds, ds.test)
        sopt = torch.optim.AdamW(student.parameters(), lr=args.distill_lr, weight_decay=5e-4)
        dgen = torch.Generator().manual_seed(2)
        student.train()
        for _ in range(args.distill_steps):
            x, _ = ds.batch(ds.train, torch.randint(0, len(ds.train), (args.batch,), generator=dgen))
            loss = distill_loss(student(x), teacher(x), temperature=args.temperature)
            sopt.zero_grad()
            loss.backward()
            sopt.step()
        rows[criterion] = {"params": g2.params, "macs": g2.macs, "test_acc_pruned": pruned_acc,
                           "test_acc_recovered": accuracy(student, ds, ds.test)}
        print(json.dumps({criterion: rows[criterion]}), file=sys.stderr, flush=True)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    config.update(ratio=ratio, threads_used=torch.get_num_threads())
    out = args.out or str(RESULTS / f"cnn_compress_{args.data}")
    Path(out + ".json").write_text(json.dumps({"config": config, "dense": dense, "rows": rows}, indent=1))
    lines = [f"Configuration: {json.dumps(config)}", "",
             f"Dense test accuracy per epoch: {dense['test_acc_per_epoch']}", "",
             "| criterion | params | MACs | test acc pruned | test acc after distillation |",
             "|---|---:|---:|---:|---:|",
             f"| dense | {dense['params']:,} | {dense['macs']:,} | {100 * dense['test_acc']:.2f}% | - |"]
    for c, r in rows.items():
        lines.append(f"| {c} | {r['params']:,} | {r['macs']:,} | {100 * r['test_acc_pruned']:.2f}% | "
                     f"{100 * r['test_acc_recovered']:.2f}% |")
    Path(out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
