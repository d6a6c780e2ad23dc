"""archgraph.prune side by side with Torch-Pruning on a recurrent and a dense-prediction model, both at ratio 0.5
by L2 magnitude (Torch-Pruning's ``MetaPruner`` with ``GroupMagnitudeImportance(p=2)``, the output layer ignored;
archgraph's ``prune``, which never prunes the graph's outputs):

* ``lstm_text``: Embedding(128, 32) -> LSTM(32, 64) -> Linear(64, 128), hand-written (tests/reference_models.py
  ``LSTMText``); archgraph builds examples/seeds/lstm_text.yaml and loads the same state dict (its names are
  ``nn.LSTM``'s);
* ``unet_tiny``: examples/seeds/unet_tiny.yaml and its hand-written twin (``UNetTiny``: convs, batchnorms, max
  pools, a transposed conv, nearest upsampling, skip concatenations).

For each: parameters before and after, MACs after (Torch-Pruning's ``count_ops_and_params`` on both pruned modules,
and archgraph's own count from the graph), the pruning wall time (Torch-Pruning: building the dependency graph and
``pruner.step()``; archgraph: ``archgraph.prune`` and building the pruned module with its weights), whether the
pruned model runs, and the largest difference between Torch-Pruning's and archgraph's pruned models' outputs (0
when both removed the same channels). MACs are of one sample; Torch-Pruning's counter also counts the element-wise
work of norms, activations and an LSTM's gates, archgraph's counts the multiply-accumulates of the weights only. A
failure is recorded with its error message; on the LSTM, Torch-Pruning is also run with the LSTM in
``ignored_layers`` (its hidden units kept), to show what it prunes around it.

    python benchmarks/tp_recurrent_dense.py      # writes benchmarks/results/tp_recurrent_dense.md and .json
"""
from __future__ import annotations

import copy
import json
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402
from reference_models import LSTMText, UNetTiny  # noqa: E402

import archgraph  # noqa: E402

RATIO = 0.5
OUT = ROOT / "benchmarks" / "results"

#: name -> (seed, hand-written class, example input of one sample, Torch-Pruning runs: the layers each ignores)
MODELS = {"lstm_text": ("lstm_text", LSTMText, lambda: torch.randint(0, 128, (1, 32)), [("head",), ("head", "lstm")]),
          "unet_tiny": ("unet_tiny", UNetTiny, lambda: torch.randn(1, 3, 32, 32), [("head",)])}


def params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def tp_macs(m, x):
    import torch_pruning as tp
    try:
        macs, _ = tp.utils.count_ops_and_params(m, x)
        return int(macs)
    except Exception as e:   # noqa: BLE001 - recorded, not hidden
        return f"count failed: {type(e).__name__}: {e}"


def run_check(m, x, want_shape):
    try:
        with torch.no_grad():
            y = m.eval()(x)
        return tuple(y.shape) == tuple(want_shape), y
    except Exception as e:   # noqa: BLE001
        return f"{type(e).__name__}: {e}", None


def torch_pruning(ref, x, ignored: tuple[str, ...]) -> dict:
    import torch_pruning as tp
    m = copy.deepcopy(ref)
    before = params(m)
    tool = "Torch-Pruning " + tp.__version__
    if len(ignored) > 1:
        tool += " (" + ", ".join(ignored[1:]) + " in ignored_layers)"
    out = {"tool": tool, "params_before": before}
    try:
        t0 = time.perf_counter()
        pruner = tp.pruner.MetaPruner(m, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=RATIO, ignored_layers=[getattr(m, n) for n in ignored])
        pruner.step()
        out["seconds"] = time.perf_counter() - t0
    except Exception as e:   # noqa: BLE001
        out.update(error=f"{type(e).__name__}: {e}", trace=traceback.format_exc(limit=3))
        return out
    out["params_after"] = params(m)
    out["module"] = m
    return out


def archgraph_prune(name: str, ref) -> dict:
    g = archgraph.load(ROOT / f"examples/seeds/{name}.yaml")
    out = {"tool": "archgraph", "params_before": g.params}
    t0 = time.perf_counter()
    g2, w2 = archgraph.prune(g, ref.state_dict(), ratio=RATIO)
    m = archgraph.build(g2)
    m.load_state_dict(w2)
    out["seconds"] = time.perf_counter() - t0
    out.update(params_after=g2.params, graph_macs=g2.macs, module=m, widths=_widths(g, g2))
    return out


def _widths(g, g2) -> str:
    from archgraph.ops.registry import OPS, channel_width
    a, b = g.shapes(), g2.shapes()
    return ", ".join(f"{n} {channel_width(a[n])}->{channel_width(b[n])}" for n in g.nodes
                     if n in g2.nodes and a[n] != b[n] and OPS[g.nodes[n].op].params(g.nodes[n], [a[i] for i in
                                                                                             g.nodes[n].inputs], a[n]))


def measure(name: str) -> list[dict]:
    seed, cls, make_x, tp_runs = MODELS[name]
    torch.manual_seed(0)
    ref = cls().eval()
    g = archgraph.load(ROOT / f"examples/seeds/{seed}.yaml")
    archgraph.build(g).load_state_dict(ref.state_dict())   # strict: the same names and shapes
    x = make_x()
    with torch.no_grad():
        want = ref(x).shape
    rows = []
    outputs = {}
    for result in [torch_pruning(ref, x, ignored) for ignored in tp_runs] + [archgraph_prune(seed, ref)]:
        m = result.pop("module", None)
        if m is not None:
            result["macs_after"] = tp_macs(m, x)
            result["runs"], outputs[result["tool"]] = run_check(m, x, want)
        else:
            result["runs"] = False
        result["model"] = name
        rows.append(result)
    ours = outputs.get("archgraph")
    for r in rows:
        y = outputs.get(r["tool"])
        if r["tool"] != "archgraph" and y is not None and ours is not None and y.shape == ours.shape:
            r["max_output_diff_vs_archgraph"] = float((y - ours).abs().max())
    return rows


def fmt(v, spec=","):
    if v is None:
        return "-"
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def table(rows) -> str:
    out = ["| model | tool | params before | params after | MACs after (TP counter) | MACs after (archgraph graph) | "
           "prune wall s | pruned model runs | max output diff vs archgraph's pruned model | error |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['tool']} | {fmt(r['params_before'])} | {fmt(r.get('params_after'))} | "
                   f"{fmt(r.get('macs_after'))} | {fmt(r.get('graph_macs'))} | {fmt(r.get('seconds'), '.3f')} | "
                   f"{r['runs']} | {fmt(r.get('max_output_diff_vs_archgraph'), '.2e')} | "
                   f"{r.get('error', '').replace('|', '/')[:300]} |")
    return "\n".join(out)


def main() -> list[dict]:
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    rows = [r for name in MODELS for r in measure(name)]
    head = (f"torch {torch.__version__}, CPU, 1 thread, ratio {RATIO}, L2 magnitude; load average {load:.2f} "
            f"({os.cpu_count()} cores). Command: `python benchmarks/tp_recurrent_dense.py`\n")
    text = head + "\n" + table(rows) + "\n"
    widths = [f"- {r['model']} (archgraph): {r['widths']}" for r in rows if r.get("widths")]
    text += "\narchgraph's pruned widths:\n" + "\n".join(widths) + "\n"
    text += ("\nMACs before (archgraph's count, one sample): " + ", ".join(
        f"{name} {archgraph.load(ROOT / f'examples/seeds/{MODELS[name][0]}.yaml').macs:,}" for name in MODELS) + "\n")
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "tp_recurrent_dense.md").write_text(text)
    (OUT / "tp_recurrent_dense.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    return rows


if __name__ == "__main__":
    main()
