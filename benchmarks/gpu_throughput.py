"""Training throughput (images/s) on a GPU: the CIFAR-10 GNAP example's network built by archgraph vs the same
architecture hand-written, both with AMP and channels_last, on synthetic CIFAR-shaped batches (no download).

    python benchmarks/gpu_throughput.py                       # the seed of examples/cifar10_gnap.yaml
    python benchmarks/gpu_throughput.py --width 4             # every conv 4x wider (GNAP's widening, twice)
    python benchmarks/gpu_throughput.py --device cpu --batch 32 --steps 3 --rounds 2   # a smoke test without a GPU

Variants, timed in interleaved rounds (fresh random order each round) with ``torch.cuda.synchronize`` around each
timing:

* ``hand-written``: ``benchmarks/handwritten.ResNetCifar`` with the same widths and weights, the usual AMP recipe
  (``autocast`` + ``GradScaler``) and channels_last;
* ``archgraph``: the fx module ``archgraph.build`` makes, same recipe;
* ``archgraph loop path``: the same module called the way ``Trainer.train_step`` calls it (``_Forward`` wrapper);
* ``archgraph compiled`` (``--compile``): ``torch.compile`` of the built module.

The step is SGD with Nesterov momentum as in examples/cifar10_gnap.yaml. Images/s is the batch size over the median
step time; the ratio column is each variant's median per-round ratio to the hand-written one (>= 0.95 is parity).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from handwritten import ResNetCifar  # noqa: E402
from timing import interleaved, timed  # noqa: E402

import archgraph  # noqa: E402
from archgraph.format.yaml_io import parse_yaml, read_text  # noqa: E402
from archgraph.train.loop import _Forward, _functional_forward  # noqa: E402

SEED = ROOT / "examples" / "seeds" / "resnet_cifar.yaml"


def widened_seed(width: int) -> archgraph.Graph:
    """The CIFAR ResNet seed with every conv ``width`` times wider (what GNAP's widening makes of it)."""
    data = parse_yaml(read_text(SEED), str(SEED))
    for node in data["nodes"].values():
        if node.get("op") == "conv2d":
            node["out_channels"] *= width
    return archgraph.Graph.model_validate(data)


def handwritten(width: int) -> torch.nn.Module:
    ref = ResNetCifar()
    conv = lambda i, o, k=3, s=1: torch.nn.Conv2d(i, o, k, stride=s, padding=k // 2, bias=False)  # noqa: E731
    a, b = 16 * width, 32 * width
    ref.stem, ref.stem_bn = conv(3, a), torch.nn.BatchNorm2d(a)
    ref.b1_c1, ref.b1_bn1 = conv(a, a), torch.nn.BatchNorm2d(a)
    ref.b1_c2, ref.b1_bn2 = conv(a, a), torch.nn.BatchNorm2d(a)
    ref.b2_c1, ref.b2_bn1 = conv(a, b, s=2), torch.nn.BatchNorm2d(b)
    ref.b2_c2, ref.b2_bn2 = conv(b, b), torch.nn.BatchNorm2d(b)
    ref.b2_short, ref.b2_sbn = conv(a, b, k=1, s=2), torch.nn.BatchNorm2d(b)
    ref.fc = torch.nn.Linear(b, 10)
    return ref


def make_step(model, call, x, y, device, amp_dtype):
    """One SGD step with the AMP recipe; ``call(model, x)`` runs the forward pass."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def step():
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = call(model, x)
        loss = F.cross_entropy(out.float(), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return step


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=128, help="examples/cifar10_gnap.yaml trains with 128")
    p.add_argument("--width", type=int, default=1, help="widen every conv by this factor")
    p.add_argument("--steps", type=int, default=50, help="steps per timing")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--amp", choices=["float16", "bfloat16", "off"], default="float16")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the built module")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA is not available here; pass --device cpu for a smoke test")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp_dtype = None if args.amp == "off" or device.type != "cuda" else getattr(torch, args.amp)
    channels_last = not args.no_channels_last
    torch.manual_seed(0)

    graph = widened_seed(args.width)
    built = archgraph.build(graph, device=device)
    ref = handwritten(args.width).to(device)
    ref.load_state_dict(built.state_dict())
    with torch.no_grad():   # the twin is the same function
        probe = torch.randn(4, 3, 32, 32, device=device)
        assert torch.allclose(built.eval()(probe), ref.eval()(probe), atol=1e-4), "hand-written twin differs"
    built.train()
    ref.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(args.batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def prepared(m):
        return m.to(memory_format=fmt)
    steps = {
        "hand-written": make_step(prepared(ref), lambda m, x: m(x), x, y, device, amp_dtype),
        "archgraph": make_step(prepared(copy.deepcopy(built)), lambda m, x: m(x), x, y, device, amp_dtype),
        "archgraph loop path": make_step(_Forward(prepared(copy.deepcopy(built)), _functional_forward),
                                         lambda m, x: m(x, {}), x, y, device, amp_dtype),
    }
    if args.compile:
        compiled = torch.compile(prepared(copy.deepcopy(built)))
        steps["archgraph compiled"] = make_step(compiled, lambda m, x: m(x), x, y, device, amp_dtype)
    for step in steps.values():
        timed(step, 5, device)   # warm-up, cuDNN autotuning and compilation
    times = interleaved(steps, args.rounds, args.steps, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, {graph.params:,} params (width x{args.width}), batch {args.batch}, "
          f"AMP {args.amp if amp_dtype is not None else 'off'}, channels_last {channels_last}; median of "
          f"{args.rounds} rounds of {args.steps} steps\n")
    print("| variant | ms/step | images/s | ratio to hand-written |\n|---|---|---|---|")
    rows = []
    for k, v in times.items():
        med = statistics.median(v)
        ratio = statistics.median(a / b for a, b in zip(times["hand-written"], v))   # throughput ratio
        rows.append({"variant": k, "ms": med * 1e3, "images_s": args.batch / med, "ratio": ratio})
        print(f"| {k} | {med * 1e3:.2f} | {args.batch / med:,.0f} | {ratio:.3f} |")
    return rows


if __name__ == "__main__":
    main()
