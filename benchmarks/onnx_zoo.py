"""Does every model the coverage runs imported export to ONNX and match onnxruntime?

For each model that ``benchmarks/zoo.py`` (torchvision, Hugging Face) and ``benchmarks/timm_zoo.py`` (the timm
sample) imported (``import_ok`` in ``benchmarks/results/zoo.json`` and ``timm_zoo.json``), the same model is built
again the same way (random weights, norms randomised, torchvision and timm with 10 classes at the input size the
coverage run used), imported with ``archgraph.from_module`` (``hf.from_model`` for Hugging Face), and written with
``archgraph.export_onnx`` (opset 17, batch axis dynamic), whose own check compares onnxruntime with PyTorch on a
random batch of 2 in float32: ok when the largest difference is at most 1e-4 x max(1, max |y|) (the function raises
otherwise). The ONNX files go to a temporary folder and are removed.

    python benchmarks/onnx_zoo.py                           # -> benchmarks/results/onnx_zoo.md/.json
    python benchmarks/onnx_zoo.py --models resnet18,timm:resnet26 --out /tmp/onnx_check
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_rows import write_tables  # noqa: E402
from timm_zoo import create, short, time_limit  # noqa: E402
from zoo import CLASSES, hf_model  # noqa: E402
from archgraph.interop.equivalence import randomize_normalization, torchvision_model  # noqa: E402
from archgraph.interop.export import export_onnx  # noqa: E402
from archgraph.interop.importer import from_module  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def imported(limit_to: set[str] | None) -> list[tuple[str, str, int]]:
    """(zoo, model, input size or sequence length) of every model the coverage runs imported, in their order."""
    zoo = json.loads((RESULTS / "zoo.json").read_text())
    timm_rows = json.loads((RESULTS / "timm_zoo.json").read_text())
    found = [("torchvision", r["model"], r["size"]) for r in zoo["tv"] if r.get("import_ok")]
    found += [("hf", r["model"], 16) for r in zoo["hf"] if r.get("import_ok")]
    found += [("timm", r["model"], r["size"]) for r in timm_rows if r.get("import_ok")]
    if limit_to is not None:
        found = [f for f in found if f[1] in limit_to or f"{f[0]}:{f[1]}" in limit_to]
    return found


def convert(zoo: str, name: str, size: int):
    """(graph, weights) of the model, built as its coverage run built it."""
    if zoo == "hf":
        from archgraph.interop import hf
        model, _, _ = hf_model(name)
        return hf.from_model(model, size)
    if zoo == "torchvision":
        model = torchvision_model(name, num_classes=CLASSES)
    else:
        model, size = create(name, size)
    randomize_normalization(model)
    return from_module(model.eval(), input_shape=(3, size, size), name=name)


def bench(zoo: str, name: str, size: int, limit: int, folder: Path) -> dict:
    row: dict = {"zoo": zoo, "model": name, "size": size}
    try:
        with time_limit(limit):
            torch.manual_seed(0)
            graph, weights = convert(zoo, name, size)
    except Exception as err:
        row.update(ok=False, error=f"import: {short(err, 160)}")
        return row
    t = time.perf_counter()
    path = folder / f"{name}.onnx"
    try:
        with time_limit(limit):
            row.update(ok=True, onnx_error=export_onnx(graph, weights, path))
    except Exception as err:
        row.update(ok=False, error=short(err, 200))
    row["seconds"] = time.perf_counter() - t
    path.unlink(missing_ok=True)
    return row


def tables(rows: list[dict], limit: int) -> str:
    out = ["ONNX export of every model the coverage runs imported (`python benchmarks/onnx_zoo.py`): "
           "`archgraph.export_onnx`, opset 17, onnxruntime against PyTorch in float32 on a random batch of 2, ok at "
           f"<= 1e-4 x max(1, max |y|); time limit {limit}s per model.", "",
           "| zoo | imported | exported and matched | failed |", "|---|---:|---:|---:|"]
    for zoo in ("torchvision", "hf", "timm"):
        mine = [r for r in rows if r["zoo"] == zoo]
        if mine:
            ok = sum(r["ok"] for r in mine)
            out.append(f"| {zoo} | {len(mine)} | {ok} | {len(mine) - ok} |")
    failed = [r for r in rows if not r["ok"]]
    if failed:
        out += ["", "Failures:", "", "| zoo | model | error |", "|---|---|---|"]
        out += [f"| {r['zoo']} | {r['model']} | {r['error'][:200].replace('|', '/')} |" for r in failed]
    errors = [r["onnx_error"] for r in rows if r["ok"]]
    if errors:
        out += ["", f"Largest onnxruntime difference among those that matched: {max(errors):.1e} (median "
                    f"{sorted(errors)[len(errors) // 2]:.1e})."]
    out += ["", "| zoo | model | size (px; HF: tokens) | ok | max abs difference | export s |", "|---|---|---:|:---:|---:|---:|"]
    for r in rows:
        diff = f"{r['onnx_error']:.1e}" if "onnx_error" in r else "-"
        secs = f"{r['seconds']:.1f}" if "seconds" in r else "-"
        out.append(f"| {r['zoo']} | {r['model']} | {r['size']} | {'yes' if r['ok'] else 'no'} | {diff} | {secs} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", help="comma-separated names (or zoo:name) of imported models instead of all")
    p.add_argument("--limit", type=int, default=300, help="seconds per model (import, then export and check)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="OUT.md and OUT.json (default benchmarks/results/onnx_zoo for a full run)")
    p.add_argument("--update", metavar="JSON", help="put the rows of --models in place of the same models' rows of "
                                                    "an earlier run's JSON (appended when new), then rewrite it")
    args = p.parse_args(argv)
    if args.update and not args.models:
        p.error("--update needs --models (the models to run again)")
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    todo = imported(set(args.models.split(",")) if args.models else None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for zoo, name, size in todo:
            t = time.perf_counter()
            try:
                row = bench(zoo, name, size, args.limit, Path(tmp))
            except Exception as err:  # the benchmark itself must go on
                row = {"zoo": zoo, "model": name, "size": size, "ok": False, "error": f"crashed: {short(err)}"}
            rows.append(row)
            print(f"{zoo} {name}: {time.perf_counter() - t:.1f}s {json.dumps(row, default=str)}", file=sys.stderr,
                  flush=True)
    if args.update:
        fresh = {(r["zoo"], r["model"]): r for r in rows}
        earlier = json.loads(Path(args.update).read_text())
        rows = [fresh.pop((r["zoo"], r["model"]), r) for r in earlier] + list(fresh.values())
        args.out = args.out or str(Path(args.update).with_suffix(""))
    out = Path(args.out) if args.out else (RESULTS / "onnx_zoo" if not args.models else None)
    write_tables(out, tables(rows, args.limit), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
