"""archgraph compress RUN.yaml --target params=0.5 --out DIR [--steps N] [--rounds R] [--criterion taylor]
[--calib-batches N] [--round-to N] [--temperature T] [--alpha A] [--lr LR] [--data-root PATH] [--device cpu|cuda]"""
from __future__ import annotations

import json

from .args import command, quiet_argument, run_file_argument, training_arguments


def register(sub) -> None:
    p = command(sub, "compress", run, help="prune and recover by distillation in rounds, to a size or latency target",
                description="Start from the network RUN.yaml names (its seed and weights:), and in --rounds rounds "
                            "prune it by a calibrated criterion (batches of the run's data:) to a geometric share "
                            "of the target and train it --steps steps by distillation from the starting network "
                            "(KL on temperature-softened logits, plus --alpha of the task loss). The target is a "
                            "fraction of the start's params, macs or latency (the built module's median forward "
                            "time on this device at the run's data.batch_size; measured after every round, and "
                            "rounds go on, up to twice --rounds, until it is reached). DIR is a run folder as grow "
                            "writes it: every pruning rule a version in history.jsonl (archgraph replay, report and "
                            "render read it), one epoch event per round, the final weights and summary.json (params, "
                            "macs, the test metrics, the target and the reached fraction).")
    run_file_argument(p, "a run file with seed, weights: (the trained network) and data: (examples/digits_gnap.yaml)")
    p.add_argument("--target", required=True, metavar="KIND=FRACTION",
                   help="params=F, macs=F or latency=F: the fraction (0 < F < 1) of the starting network's to reach")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory to write (must be new or empty)")
    p.add_argument("--steps", type=int, default=200, metavar="N",
                   help="distillation steps after each round's pruning (default 200; 0: prune only)")
    p.add_argument("--rounds", type=int, default=3, metavar="R", help="pruning rounds (default 3)")
    p.add_argument("--criterion", default="taylor", choices=["taylor", "activation", "l2", "l1"],
                   help="channel importance (default taylor: the summed |w * dL/dw| of each channel's weights on "
                        "calibration batches, which weighs a channel by what removing it costs the loss)")
    p.add_argument("--calib-batches", type=int, default=8, metavar="N",
                   help="calibration batches of data.batch_size per round (default 8)")
    p.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="keep every pruned width a multiple of N (default 1)")
    p.add_argument("--temperature", type=float, default=2.0, metavar="T",
                   help="distillation temperature (default 2)")
    p.add_argument("--alpha", type=float, default=0.0, metavar="A",
                   help="weight of the task loss beside the distillation term, in [0, 1] (default 0)")
    p.add_argument("--lr", type=float, default=None, metavar="LR",
                   help="learning rate of the distillation (default: the run's schedule.lr)")
    training_arguments(p)
    quiet_argument(p, "print only the summary line")


def run(args) -> int:
    from ..train.compress import compress
    summary = compress(args.run_file, args.out, args.target, steps=args.steps, rounds=args.rounds,
                       criterion=args.criterion, calib_batches=args.calib_batches, round_to=args.round_to,
                       temperature=args.temperature, alpha=args.alpha, lr=args.lr, data_root=args.data_root,
                       device=args.device, say=(lambda _text: None) if args.quiet else print)
    keys = [k for k in summary if k.startswith("test_")] + ["params", "macs", "target", "reached", "rounds"]
    print(json.dumps({k: summary[k] for k in keys if k in summary}))
    return 0
