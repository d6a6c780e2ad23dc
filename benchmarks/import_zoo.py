"""Import the torchvision classification zoo, export it to ONNX, and prune it with archgraph and Torch-Pruning.

For each model (random init; norms and scales randomised so every layer shows in the output):
  conversion: from_module ok, max |converted - original| on a batch of 2
  ONNX:       export_onnx ok, max |onnxruntime - PyTorch|
  pruning at ratio 0.5, L2 magnitude, classifier kept whole, side by side:
    archgraph.prune(graph, weights, ratio=0.5, criterion="l2")
    Torch-Pruning MetaPruner(importance=MagnitudeImportance(p=2), pruning_ratio=0.5, ignored_layers=[classifier])
  pruned ok (the call returns and the pruned model runs with the right output shape), params and MACs after
  (both counted by archgraph on the converted pruned model, conv + linear MACs per sample), wall time of the pruning
  call (median of 3; Torch-Pruning's includes building its dependency graph, archgraph's the channel analysis and
  the weight transfer), CPU latency (batch 1, median of --reps interleaved runs) before and after, in the same
  process.

    python benchmarks/import_zoo.py                       # all 16 models at 3x224x224, single thread
    python benchmarks/import_zoo.py --models resnet18 --size 64 --no-prune
    python benchmarks/import_zoo.py --models fcn_resnet50,lraspp_mobilenet_v3_large --size 96   # segmentation
    python benchmarks/import_zoo.py --models swin_t,swin_v2_t,maxvit_t --float64 --no-prune \
        --out benchmarks/results/import_zoo_windows      # window attention, conversion error in float64
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from run_rows import write_tables  # noqa: E402

import archgraph  # noqa: E402
from archgraph.fx.builder import build  # noqa: E402
from archgraph.fx.weights import load_into  # noqa: E402
from archgraph.interop.equivalence import main_output, max_error, randomize_normalization, torchvision_model  # noqa: E402,E501
from archgraph.interop.export import export_onnx  # noqa: E402
from archgraph.interop.importer import from_module  # noqa: E402

ZOO = ["resnet18", "resnet50", "vgg11_bn", "alexnet", "mobilenet_v2", "mobilenet_v3_small", "densenet121",
       "efficientnet_b0", "regnet_x_400mf", "shufflenet_v2_x1_0", "squeezenet1_0", "googlenet", "convnext_tiny",
       "resnext50_32x4d", "mnasnet0_5", "wide_resnet50_2"]
#: segmentation models (random backbone, no auxiliary head; the output compared is {"out": ...}'s [K, H, W]);
#: run them with --models
SEGMENTATION = ["fcn_resnet50", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]
#: window attention models (Swin v1 and v2, MaxViT); run them with --models and --float64, which measures the
#: conversion error in float64 (ONNX stays float32)
WINDOWS = ["swin_t", "swin_s", "swin_b", "swin_v2_t", "swin_v2_s", "swin_v2_b", "maxvit_t"]


def latencies_ms(modules: dict, x, reps: int) -> dict[str, float]:
    """Median latency of each module; the runs are interleaved (one run of each per round), so load from other
    processes falls on all of them alike."""
    times: dict[str, list[float]] = {k: [] for k in modules}
    with torch.no_grad():
        for m in modules.values():
            m(x)  # warm-up
        for _ in range(reps):
            for key, m in modules.items():
                t = time.perf_counter()
                m(x)
                times[key].append(time.perf_counter() - t)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def counted(module, size) -> tuple[int, int]:
    """(params, MACs) of a model, counted by archgraph on its conversion (the same counter for both pruners)."""
    graph, _ = from_module(module, input_shape=(3, size, size))
    return graph.params, graph.macs


def classifier_layers(model, num_classes: int = 1000):
    return [m for m in model.modules()
            if (isinstance(m, torch.nn.Linear) and m.out_features == num_classes)
            or (isinstance(m, torch.nn.Conv2d) and m.out_channels == num_classes)]


def prune_tp(model, x, ratio: float, calls: int = 3) -> dict:
    """Torch-Pruning on copies of ``model``; the time is the median of ``calls`` runs (each on a fresh copy)."""
    import torch_pruning as tp
    times = []
    for _ in range(calls):
        pruned = copy.deepcopy(model)
        t = time.perf_counter()
        try:
            pruner = tp.pruner.MetaPruner(pruned, x, importance=tp.importance.MagnitudeImportance(p=2),
                                          pruning_ratio=ratio, ignored_layers=classifier_layers(pruned))
            pruner.step()
            times.append(time.perf_counter() - t)
            with torch.no_grad():
                y = main_output(pruned(x))
            if tuple(y.shape[:2]) != (x.shape[0], 1000):
                raise RuntimeError(f"output shape {list(y.shape)}")
        except Exception as err:
            return {"ok": False, "error": f"{type(err).__name__}: {str(err)[:160]}"}
    return {"ok": True, "seconds": statistics.median(times), "model": pruned}


def prune_archgraph(graph, weights, x, ratio: float, calls: int = 3) -> dict:
    """archgraph.prune; the time is the median of ``calls`` runs (graphs are immutable: each run starts afresh)."""
    times = []
    try:
        for _ in range(calls):
            t = time.perf_counter()
            g2, w2 = archgraph.prune(graph, weights, ratio=ratio, criterion="l2")
            times.append(time.perf_counter() - t)
        module = build(g2)
        load_into(module, w2)
        module.eval()
        with torch.no_grad():
            y = module(x)
        if tuple(y.shape[:2]) != (x.shape[0], 1000):
            raise RuntimeError(f"output shape {list(y.shape)}")
    except Exception as err:
        return {"ok": False, "error": f"{type(err).__name__}: {str(err)[:160]}"}
    return {"ok": True, "seconds": statistics.median(times), "model": module, "params": g2.params, "macs": g2.macs}


def bench(name: str, size: int, reps: int, prune: bool, ratio: float, onnx_dir: Path, dtype=torch.float32) -> dict:
    row: dict = {"model": name}
    model = randomize_normalization(torchvision_model(name)).to(dtype)
    x1 = torch.randn(1, 3, size, size, dtype=dtype)
    x2 = torch.randn(2, 3, size, size, dtype=dtype)
    t = time.perf_counter()
    try:
        graph, weights = from_module(model, input_shape=(3, size, size))
    except archgraph.ArchgraphError as err:
        row.update(convert_ok=False, convert_error=str(err))
        return row
    row["convert_s"] = time.perf_counter() - t
    built = build(graph, dtype=dtype)
    load_into(built, weights)
    built.eval()
    with torch.no_grad():
        scale = float(main_output(model(x2)).abs().max())
    weights32 = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
    row.update(convert_ok=True, max_error=max_error(model, built, x2), params=graph.params, macs=graph.macs,
               nodes=len(graph.nodes), output_scale=scale)
    try:
        row["onnx_error"] = export_onnx(graph, weights32, onnx_dir / f"{name}.onnx", atol=float("inf"))
        row["onnx_ok"] = row["onnx_error"] <= 1e-4 * max(1.0, scale)
    except archgraph.ArchgraphError as err:
        row.update(onnx_ok=False, onnx_fail=str(err)[:200])
    (onnx_dir / f"{name}.onnx").unlink(missing_ok=True)
    if not prune:
        return row
    ag = prune_archgraph(graph, weights, x1, ratio)
    row["ag"] = {k: v for k, v in ag.items() if k != "model"}
    tp = prune_tp(model, x1, ratio)
    row["tp"] = {k: v for k, v in tp.items() if k != "model"}
    if tp["ok"]:
        try:
            row["tp"]["params"], row["tp"]["macs"] = counted(tp["model"], size)
        except archgraph.ArchgraphError as err:
            row["tp"]["count_error"] = str(err)[:160]
    modules = {"before": built, "tv": model}
    modules.update({key: r["model"] for key, r in (("ag", ag), ("tp", tp)) if r["ok"]})
    lat = latencies_ms(modules, x1, reps)
    row["latency_ms"], row["tv_latency_ms"] = lat["before"], lat["tv"]
    for key in ("ag", "tp"):
        if key in lat:
            row[key]["latency_ms"] = lat[key]
    return row


def fmt_m(n) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


def fmt_g(n) -> str:
    return "-" if n is None else f"{n / 1e9:.2f}G"


def tables(rows: list[dict], size: int, ratio: float, dtype=torch.float32) -> str:
    precision = " in float64" if dtype == torch.float64 else ""
    out = [f"Conversion and ONNX export at 3x{size}x{size} (batch 2, random weights with randomised norms): max "
           f"absolute error{precision} of the converted model against the torchvision model, and of onnxruntime "
           f"(float32) against "
           f"PyTorch; max |y| is the largest output magnitude (ONNX ok: error <= 1e-4 x max(1, max |y|)).", "",
           "| model | nodes | params | MACs | converted | max error | max abs y | ONNX max error | ONNX ok |",
           "|---|---:|---:|---:|:---:|---:|---:|---:|:---:|"]
    for r in rows:
        if not r.get("convert_ok"):
            out.append(f"| {r['model']} | - | - | - | no: {r.get('convert_error', '')[:80]} | - | - | - | - |")
            continue
        onnx = f"{r['onnx_error']:.1e}" if "onnx_error" in r else f"fail: {r.get('onnx_fail', '')[:60]}"
        out.append(f"| {r['model']} | {r['nodes']} | {fmt_m(r['params'])} | {fmt_g(r['macs'])} | yes | "
                   f"{r['max_error']:.1e} | {r['output_scale']:.3g} | {onnx} | {'yes' if r['onnx_ok'] else 'no'} |")
    pruned = [r for r in rows if "tp" in r]
    if not pruned:
        return "\n".join(out) + "\n"
    out += ["", f"Pruning at ratio {ratio} (L2 magnitude, classifier kept), archgraph (AG) vs Torch-Pruning (TP). "
                "Params and MACs after pruning are counted by archgraph on both results; latency is CPU, 1 thread, "
                "batch 1, median of interleaved runs, after / before in the same process; time is the wall time of the "
                "pruning call (median of 3).",
            "",
            "| model | AG ok | AG params | AG MACs | AG time | AG latency | TP ok | TP params | TP MACs | TP time "
            "| TP latency |",
            "|---|:---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|"]
    for r in pruned:
        cells = [r["model"]]
        for key, before in (("ag", r["latency_ms"]), ("tp", r["tv_latency_ms"])):
            p = r[key]
            if not p["ok"]:
                cells += [f"no ({p['error'][:70]})", "-", "-", "-", "-"]
                continue
            macs = p.get("macs")
            cells += ["yes", f"{fmt_m(p.get('params'))} ({p.get('params', 0) / r['params']:.0%})",
                      f"{fmt_g(macs)} ({(macs or 0) / r['macs']:.0%})", f"{p['seconds']:.2f}s",
                      f"{p['latency_ms']:.0f}/{before:.0f} ms ({p['latency_ms'] / before:.0%})"]
        out.append("| " + " | ".join(cells) + " |")
    ok_ag = sum(r["ag"]["ok"] for r in pruned)
    ok_tp = sum(r["tp"]["ok"] for r in pruned)
    out += ["", f"Pruned successfully: archgraph {ok_ag}/{len(pruned)}, Torch-Pruning {ok_tp}/{len(pruned)}."]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(ZOO))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--reps", type=int, default=10, help="latency runs per model (median)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-prune", action="store_true", help="conversion and ONNX only")
    p.add_argument("--float64", action="store_true", help="measure the conversion error in float64")
    p.add_argument("--out", help="writes OUT.md and OUT.json (default: benchmarks/results/import_zoo for the full "
                                 "benchmark; a partial run writes nothing unless --out is given)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    prune = not args.no_prune
    dtype = torch.float64 if args.float64 else torch.float32
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            t = time.perf_counter()
            try:
                row = bench(name, args.size, args.reps, prune, args.ratio, Path(tmp), dtype)
            except Exception:
                traceback.print_exc()
                row = {"model": name, "convert_ok": False, "convert_error": "benchmark crashed (see log)"}
            rows.append(row)
            print(f"{name}: {time.perf_counter() - t:.1f}s {json.dumps(row, default=str)}", file=sys.stderr,
                  flush=True)
    text = tables(rows, args.size, args.ratio, dtype)
    full = args.models == ",".join(ZOO) and args.size == 224 and not args.no_prune and not args.float64
    out = Path(args.out) if args.out else (Path("benchmarks/results/import_zoo") if full else None)
    write_tables(out, text, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
