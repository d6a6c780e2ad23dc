"""The GPU check: everything that needs a CUDA device in one run, with its results written as
``results.json`` and ``results.md`` under one folder. It is sized to finish within 8 minutes on one GPU
(``--budget-s 480`` stops starting parts after that); it has not been timed on a GPU yet.

    scripts/gpu_check.sh [OUT_DIR] [options]           # installs with `make dev`, then runs this module
    python scripts/gpu_check.py --out runs/gpu_check    # the same, with the current interpreter

Parts (``--only`` / ``--skip`` take a comma-separated list of them):

``tests``
    the CUDA tests of ``tests/`` (``pytest -k cuda`` over the test files that ask ``torch.cuda.is_available()``).
``seeds``
    every ``examples/seeds/*.yaml`` built on the device and on the CPU with the same weights (normalisation
    randomised, so eval mode shows every layer): same initialisation on both, and the outputs and gradients agree in
    float64 and in float32 (TF32 off; with TF32 on the error is reported, not judged).
``rewrite``
    growth events (``add_filters`` on the residual stream, ``insert_block``) and a ``prune_channels`` event with
    ``archgraph.rewrite(graph, module, rule, optimizer=opt)`` on the device with Adam's state on the device, then
    ``archgraph.prune``; each is checked against the same event on the CPU (float64).
``train``
    a short GNAP run (the CIFAR-10 example's seed) and a short SCS run (the CIFAR-10 SCS example's seed) on
    synthetic CIFAR-shaped data, with AMP on CUDA; each run is also killed (SIGKILL) after its first rewrite and
    resumed, and compared with the uninterrupted one.
``bench``
    ``benchmarks/gpu_throughput.py`` (images/s of the built module against the hand-written twin), at width 1 and 4.

Without CUDA (``--device auto``, the default) the CUDA parts are skipped with a message and the exit status is 0;
the CPU references of ``seeds`` and ``rewrite`` still run and the report is still written. ``--device cpu`` runs
every part on the CPU instead (a dry run of the check itself: no GPU figure comes out of it).

The synthetic data are MNIST-format files of 96x32 images (the three 32x32 colour planes stacked), which the seeds'
``[3, 32, 32]`` input reshapes back into planes: CIFAR-shaped inputs, ten learnable classes, no download. Only
horizontal flips are used as augmentation (a flip of a 96x32 image flips each plane); the normalisation is one mean
and std over all planes instead of one per plane.
"""
from __future__ import annotations

import argparse
import copy
import gzip
import json
import math
import os
import platform
import re
import signal
import statistics
import struct
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PARTS = ("tests", "seeds", "rewrite", "train", "bench")
CUDA_PARTS = ("tests", "train", "bench")        # nothing to run without a device
METHODS = ("gnap", "scs")
DEFAULT_OUT = "runs/gpu_check"
NO_CUDA = "CUDA is not available here"

#: tolerances of ``seeds`` and ``rewrite``: largest difference relative to the largest value of the CPU result
TOL = {"float64": 1e-9, "float32": 1e-4, "float32_grad": 1e-3}

PASSED, FAILED, SKIPPED, ERROR, CPU_ONLY = "passed", "failed", "skipped", "error", "cpu only"


# ---- arguments --------------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None,
                   help=f"output folder (default: $GPU_CHECK_OUT, else {DEFAULT_OUT})")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                   help="auto: CUDA when available, else skip the CUDA parts; cuda: fail without CUDA; cpu: run every "
                        "part on the CPU (a dry run of the check)")
    p.add_argument("--only", default=None, help=f"comma-separated parts to run ({','.join(PARTS)})")
    p.add_argument("--skip", default="", help="comma-separated parts to leave out")
    p.add_argument("--seeds", default=None, help="comma-separated seed names (default: every examples/seeds/*.yaml)")
    p.add_argument("--methods", default=",".join(METHODS), help="training runs of the train part (gnap,scs)")
    p.add_argument("--quick", action="store_true",
                   help="tiny settings (smaller data and batches, fewer benchmark steps): for tests of the check")
    p.add_argument("--bench-compile", action="store_true", help="also time torch.compile in the benchmark")
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="time for the whole check; a part that would start after it is skipped (default 480)")
    args = p.parse_args(argv)
    args.out = args.out or os.environ.get("GPU_CHECK_OUT") or DEFAULT_OUT
    only = _names(args.only, PARTS, "--only") if args.only else list(PARTS)
    skip = set(_names(args.skip, PARTS, "--skip")) if args.skip else set()
    args.parts = [x for x in only if x not in skip]
    args.method_list = _names(args.methods, METHODS, "--methods")
    return args


def _names(text: str, allowed, flag: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in allowed]
    if bad:
        raise SystemExit(f"gpu_check: error: {flag}: unknown {', '.join(bad)} (choose from {', '.join(allowed)})")
    return names


# ---- small helpers ----------------------------------------------------------------------------------------------

def _now() -> float:
    return time.perf_counter()


def _rel(a, b) -> float:
    """Largest |a - b| relative to the largest |b| (both tensors; ``b`` is the CPU reference)."""
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    if a.shape != b.shape:
        return math.inf
    scale = float(b.abs().max()) if b.numel() else 0.0
    diff = float((a - b).abs().max()) if b.numel() else 0.0
    if not math.isfinite(diff):
        return math.inf
    return diff / scale if scale > 0 else diff if diff > 0 else 0.0


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x == 0:
            return "0"
        if abs(x) < 1e-3 or abs(x) >= 1e6:
            return f"{x:.1e}"
        return f"{x:.{digits}f}".rstrip("0").rstrip(".") if abs(x) < 100 else f"{x:,.1f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x).replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return out


def _run(cmd: list[str], timeout: float, log: Optional[Path] = None, env: Optional[dict] = None) -> dict:
    """Run ``cmd`` in the repository root; returns rc, wall_s, stdout, stderr (rc 124 on a timeout)."""
    t0 = _now()
    full_env = {**os.environ, **_child_env(), **(env or {})}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=max(1, timeout))
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc = 124
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        err += f"\ntimed out after {timeout:.0f} s"
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(cmd)}\n# rc {rc}\n--- stdout\n{out}\n--- stderr\n{err}")
    return {"rc": rc, "wall_s": round(_now() - t0, 3), "stdout": out, "stderr": err}


def _child_env() -> dict:
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""),
            "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8")}


def _tail(text: str, n: int = 1500) -> str:
    return text[-n:] if text else ""


# ---- environment ------------------------------------------------------------------------------------------------

def environment() -> dict:
    import torch
    env = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
    try:
        import archgraph
        env["archgraph"] = archgraph.__version__
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        env["archgraph"] = f"import failed: {e}"
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                           timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(device_name=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(),
                   capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                   memory_gib=round(props.total_memory / 2**30, 1),
                   cudnn=torch.backends.cudnn.version())
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            env["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    return env


def target_device(choice: str) -> tuple[Optional[str], str]:
    """``(device, mode)``: the device the device parts run on (None: CUDA parts skipped) and a one-line mode."""
    import torch
    if choice == "cpu":
        return "cpu", "dry run on the CPU (--device cpu): the check's code runs, no GPU figure comes out of it"
    if torch.cuda.is_available():
        return "cuda", f"CUDA: {torch.cuda.get_device_name(0)}"
    if choice == "cuda":
        raise SystemExit(f"gpu_check: error: --device cuda: {NO_CUDA}")
    return None, f"{NO_CUDA}: the CUDA parts are skipped; the CPU references run"


# ---- part: tests ------------------------------------------------------------------------------------------------

def cuda_test_files() -> list[Path]:
    """The test files that skip without CUDA (they ask ``torch.cuda.is_available()``)."""
    return sorted(p for p in (ROOT / "tests").glob("test_*.py")
                  if p.name != "test_gpu_check.py" and "torch.cuda.is_available()" in p.read_text())


def parse_junit(path: Path) -> dict:
    """Counts and one row per test case of a pytest ``--junitxml`` file."""
    root = ET.parse(path).getroot()
    cases = []
    for case in root.iter("testcase"):
        outcome, message = PASSED, ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = FAILED if child.tag == "failure" else ERROR, child.get("message", "")
                break
            if child.tag == "skipped":
                outcome, message = SKIPPED, child.get("message", "")
        name = case.get("name", "")
        cls = case.get("classname", "")
        cases.append({"test": f"{cls.replace('.', '/')}.py::{name}" if cls else name, "outcome": outcome,
                      "time_s": float(case.get("time", 0) or 0), "message": message[:300]})
    counts = {k: sum(c["outcome"] == k for c in cases) for k in (PASSED, FAILED, ERROR, SKIPPED)}
    return {"counts": counts, "cases": cases}


def part_tests(ctx: dict) -> dict:
    if ctx["device"] is None:
        return {"status": SKIPPED, "reason": NO_CUDA}
    files = cuda_test_files()
    xml = ctx["out"] / "tests" / "junit.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", f"--junitxml={xml}",
           *[str(f.relative_to(ROOT)) for f in files]]
    res = _run(cmd, ctx["timeout"](300), ctx["out"] / "tests" / "pytest.log")
    out = {"command": " ".join(cmd[1:]), "files": [str(f.relative_to(ROOT)) for f in files], "rc": res["rc"],
           "wall_s": res["wall_s"]}
    if not xml.exists():
        out.update(status=ERROR, reason=f"pytest wrote no report (rc {res['rc']})",
                   tail=_tail(res["stdout"] + res["stderr"]))
        return out
    out.update(parse_junit(xml))
    counts = out["counts"]
    ok = res["rc"] == 0 and counts[FAILED] == 0 and counts[ERROR] == 0 and counts[PASSED] > 0
    out["status"] = PASSED if ok else FAILED
    if not ok:
        out["tail"] = _tail(res["stdout"])
    if ctx["device"] == "cpu":
        out["note"] = "on the CPU the CUDA tests skip: only the command and its report are checked"
    return out


# ---- part: seeds ------------------------------------------------------------------------------------------------

def seed_paths(names: Optional[str] = None) -> list[Path]:
    paths = sorted((ROOT / "examples" / "seeds").glob("*.yaml"))
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        missing = [n for n in wanted if not (ROOT / "examples" / "seeds" / f"{n}.yaml").exists()]
        if missing:
            raise SystemExit(f"gpu_check: error: --seeds: no examples/seeds/{missing[0]}.yaml")
        paths = [p for p in paths if p.stem in wanted]
    return paths


def randomise(module, seed: int = 0):
    """Norm weights and running variances in [0.5, 1.5), biases and running means N(0, 0.1), drawn on the CPU, so
    eval mode does not hide a wrong buffer (archgraph's own conversion-check helper)."""
    from archgraph.interop.equivalence import randomize_normalization
    return randomize_normalization(module, seed)


def _inputs(graph, dtype, batch: int = 4, seed: int = 0):
    import torch
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *shape, generator=gen, dtype=torch.float64).to(dtype) for shape in graph.inputs.values()]


def _forward_backward(module, xs, train: bool):
    """Output and parameter gradients of ``sum(out**2)/n`` (eval or train mode)."""
    module.train(train)
    module.zero_grad(set_to_none=True)
    out = module(*xs)
    outs = out if isinstance(out, tuple) else (out,)
    sum(o.square().mean() for o in outs).backward()
    grads = {k: p.grad.detach().clone() for k, p in module.named_parameters() if p.grad is not None}
    return [o.detach() for o in outs], grads


def _grad_err(got: dict, want: dict) -> float:
    """Largest gradient difference relative to the largest CPU gradient of any parameter (one scale for all: a
    gradient that is zero in exact arithmetic, like a conv bias before a train-mode batchnorm, is rounding noise on
    both devices, so a per-tensor ratio would compare noise with noise)."""
    if got.keys() != want.keys() or any(got[k].shape != want[k].shape for k in want):
        return math.inf
    if not want:
        return 0.0
    scale = max(float(v.detach().abs().max()) for v in want.values() if v.numel())
    diff = max(float((got[k].detach().cpu().double() - want[k].detach().double()).abs().max())
               for k in want if want[k].numel())
    if not math.isfinite(diff):
        return math.inf
    return diff / scale if scale > 0 else diff


def compare_seed(path: Path, device: Optional[str]) -> dict:
    """One seed: a CPU reference in float64 and float32 and, with ``device``, the same on it."""
    import torch
    import archgraph
    g = archgraph.load(path)
    stochastic = any(n.op == "dropout" for n in g.nodes.values())
    row: dict[str, Any] = {"seed": path.stem, "params": g.params, "macs": g.macs, "stochastic": stochastic}
    checks: dict[str, bool] = {}
    for dtype_name in ("float64", "float32"):
        dtype = getattr(torch, dtype_name)
        ref = archgraph.build(g, seed=0, dtype=dtype)
        again = archgraph.build(g, seed=0, dtype=dtype)
        checks[f"cpu_{dtype_name}_deterministic_init"] = all(
            torch.equal(a, b) for a, b in zip(ref.state_dict().values(), again.state_dict().values()))
        init = {k: v.clone() for k, v in ref.state_dict().items()}
        randomise(ref)
        xs = _inputs(g, dtype)
        ref_out, ref_grads = _forward_backward(ref, xs, train=False)
        checks[f"cpu_{dtype_name}_finite"] = all(bool(torch.isfinite(o).all()) for o in ref_out)
        row[f"cpu_{dtype_name}_out_absmax"] = max(float(o.abs().max()) for o in ref_out)
        if device is None:
            continue
        dev = archgraph.build(g, seed=0, device=device, dtype=dtype)
        checks[f"{dtype_name}_same_init"] = (
            dev.state_dict().keys() == init.keys()
            and all(torch.equal(v.cpu(), init[k]) for k, v in dev.state_dict().items()))
        checks[f"{dtype_name}_on_device"] = all(t.device.type == torch.device(device).type
                                                for t in [*dev.parameters(), *dev.buffers()])
        dev.load_state_dict(ref.state_dict())
        dxs = [x.to(device) for x in xs]
        modes = [("eval", False)] + ([] if stochastic else [("train", True)])
        for mode, train in modes:
            if train:   # batch statistics; on copies, so the running statistics stay as they were
                r_out, r_grads = _forward_backward(copy.deepcopy(ref), xs, train=True)
                d_out, d_grads = _forward_backward(copy.deepcopy(dev), dxs, train=True)
            else:
                r_out, r_grads = ref_out, ref_grads
                d_out, d_grads = _forward_backward(dev, dxs, train=False)
            out_err = max(_rel(a, b) for a, b in zip(d_out, r_out))
            grad_err = _grad_err(d_grads, r_grads)
            row[f"{dtype_name}_{mode}_out_err"] = out_err
            row[f"{dtype_name}_{mode}_grad_err"] = grad_err
            out_tol = TOL[dtype_name]
            grad_tol = TOL["float32_grad"] if dtype_name == "float32" else TOL[dtype_name]
            checks[f"{dtype_name}_{mode}_out"] = out_err <= out_tol
            checks[f"{dtype_name}_{mode}_grad"] = grad_err <= grad_tol
        if dtype_name == "float32" and device == "cuda":
            with _tf32(True):
                t_out, _ = _forward_backward(dev, dxs, train=False)
            row["float32_tf32_out_err"] = max(_rel(a, b) for a, b in zip(t_out, ref_out))   # reported, not judged
    row["checks"] = checks
    row["failed"] = sorted(k for k, v in checks.items() if not v)
    return row


class _tf32:
    """TF32 for cuDNN convolutions and cuBLAS matmuls on or off inside the block (restored after)."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        import torch
        self.saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = self.on

    def __exit__(self, *exc):
        import torch
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved


def part_seeds(ctx: dict) -> dict:
    rows = []
    with _tf32(False):
        for path in seed_paths(ctx["args"].seeds):
            try:
                rows.append(compare_seed(path, ctx["device"]))
            except Exception as e:  # noqa: BLE001 - one seed's failure is reported, the others still run
                rows.append({"seed": path.stem, "error": f"{type(e).__name__}: {e}", "failed": ["error"],
                             "traceback": traceback.format_exc()[-2000:]})
    failed = [r["seed"] for r in rows if r["failed"]]
    status = FAILED if failed else (CPU_ONLY if ctx["device"] is None else PASSED)
    out = {"status": status, "rows": rows, "tolerances": TOL, "failed_seeds": failed}
    if ctx["device"] is None:
        out["reason"] = f"{NO_CUDA}: CPU references only (deterministic initialisation, finite outputs)"
    return out


# ---- part: rewrite ----------------------------------------------------------------------------------------------

REWRITE_SEED = ROOT / "examples" / "seeds" / "resnet_cifar.yaml"
EVENTS = [
    ("growth", {"rule": "add_filters", "args": {"node": "stem", "count": 8, "init": "preserve"}}),
    ("growth", {"rule": "insert_block", "args": {"after": "b1_out"}}),
    ("prune", {"rule": "prune_channels", "args": {"node": "b2_c1", "indices": [0, 3, 5, 7]}}),
]


def _adam_step(module, opt, x, y) -> float:
    import torch.nn.functional as F
    module.train()
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(module(x), y)
    loss.backward()
    opt.step()
    return float(loss.detach())


def _opt_state(opt, module) -> dict:
    out = {}
    for name, p in module.named_parameters():
        for k, v in opt.state.get(p, {}).items():
            if hasattr(v, "dim"):
                out[f"{name}.{k}"] = v
    return out


def rewrite_check(device: str, steps: int = 2, batch: int = 16) -> dict:
    """The events of ``EVENTS`` then ``archgraph.prune`` on ``device`` and on the CPU (float64, Adam)."""
    import torch
    import archgraph
    g0 = archgraph.load(REWRITE_SEED)
    ref = randomise(archgraph.build(g0, seed=0, dtype=torch.float64))
    dev = archgraph.build(g0, seed=0, device=device, dtype=torch.float64)
    dev.load_state_dict(ref.state_dict())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 32, 32, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (batch,), generator=gen)
    dx, dy = x.to(device), y.to(device)
    opt_r = torch.optim.Adam(ref.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(dev.parameters(), lr=1e-3)
    for _ in range(steps):
        _adam_step(ref, opt_r, x, y)
        _adam_step(dev, opt_d, dx, dy)
    g_r = g_d = g0
    dtype_dev = torch.device(device).type
    rows = []
    for kind, rule in EVENTS:
        row: dict[str, Any] = {"event": kind, "rule": rule["rule"], "args": rule["args"]}
        exact = archgraph.apply(g_d, rule).exact
        dev.eval()
        with torch.no_grad():
            before = dev(dx)
        t0 = _now()
        g_r2, ref2 = archgraph.rewrite(g_r, ref, rule, optimizer=opt_r, seed=0)
        t1 = _now()
        g_d2, dev2 = archgraph.rewrite(g_d, dev, rule, optimizer=opt_d, seed=0)
        if dtype_dev == "cuda":
            torch.cuda.synchronize()
        row["rewrite_ms"] = round((_now() - t1) * 1e3, 2)
        row["cpu_rewrite_ms"] = round((t1 - t0) * 1e3, 2)
        state_d = _opt_state(opt_d, dev2)
        state_r = _opt_state(opt_r, ref2)
        held = {id(p) for group in opt_d.param_groups for p in group["params"]}
        checks = {
            "same_graph": archgraph.dumps(g_d2) == archgraph.dumps(g_r2),
            "module_on_device": all(t.device.type == dtype_dev for t in [*dev2.parameters(), *dev2.buffers()]),
            "optimizer_holds_new_params": held == {id(p) for p in dev2.parameters()},
            "optimizer_state_on_device": bool(state_d) and all(
                v.device.type == dtype_dev for k, v in state_d.items() if not k.endswith(".step") and v.dim() > 0),
            "optimizer_state_keys_match_cpu": state_d.keys() == state_r.keys(),
        }
        row["weights_err"] = max(_rel(v, ref2.state_dict()[k]) for k, v in dev2.state_dict().items()
                                 if v.is_floating_point())
        row["optimizer_state_err"] = max((_rel(v, state_r[k]) for k, v in state_d.items() if k in state_r),
                                         default=0.0)
        checks["weights_match_cpu"] = row["weights_err"] <= TOL["float64"]
        checks["optimizer_state_matches_cpu"] = row["optimizer_state_err"] <= TOL["float64"]
        dev2.eval()
        with torch.no_grad():
            after = dev2(dx)
        row["exact"] = exact
        row["function_err"] = _rel(after, before)
        if exact:
            checks["function_preserved"] = row["function_err"] <= TOL["float64"]
        loss_r = _adam_step(ref2, opt_r, x, y)
        loss_d = _adam_step(dev2, opt_d, dx, dy)
        row["step_loss_err"] = abs(loss_d - loss_r) / max(abs(loss_r), 1e-12)
        row["after_step_weights_err"] = max(_rel(v, ref2.state_dict()[k]) for k, v in dev2.state_dict().items()
                                            if v.is_floating_point())
        checks["step_after_matches_cpu"] = row["after_step_weights_err"] <= 1e-7 and row["step_loss_err"] <= 1e-9
        row["params"] = g_d2.params
        row["checks"] = checks
        row["failed"] = sorted(k for k, v in checks.items() if not v)
        rows.append(row)
        g_r, ref, g_d, dev = g_r2, ref2, g_d2, dev2
    # magnitude pruning of the whole network (weights only: archgraph.prune has no optimizer)
    row = {"event": "prune", "rule": "archgraph.prune", "args": {"ratio": 0.25, "criterion": "l2"}}
    gp_r, wp_r = archgraph.prune(g_r, ref, ratio=0.25)
    t1 = _now()
    gp_d, wp_d = archgraph.prune(g_d, dev, ratio=0.25)
    row["rewrite_ms"] = round((_now() - t1) * 1e3, 2)
    built = archgraph.build(gp_d, device=device, dtype=torch.float64)
    built.load_state_dict(wp_d)
    built_r = archgraph.build(gp_r, dtype=torch.float64)
    built_r.load_state_dict(wp_r)
    built.eval()
    built_r.eval()
    with torch.no_grad():
        row["function_err"] = _rel(built(dx), built_r(x))   # the pruned networks against each other
    row["weights_err"] = max(_rel(v, wp_r[k]) for k, v in wp_d.items() if v.is_floating_point())
    row["params"] = gp_d.params
    checks = {"same_graph": archgraph.dumps(gp_d) == archgraph.dumps(gp_r),
              "weights_on_device": all(v.device.type == dtype_dev for v in wp_d.values()),
              "weights_match_cpu": row["weights_err"] <= TOL["float64"],
              "pruned_outputs_match_cpu": row["function_err"] <= TOL["float64"],
              "smaller": gp_d.params < g_d.params}
    row["checks"] = checks
    row["failed"] = sorted(k for k, v in checks.items() if not v)
    rows.append(row)
    return {"device": device, "rows": rows}


def part_rewrite(ctx: dict) -> dict:
    device = ctx["device"] or "cpu"
    try:
        res = rewrite_check(device, batch=4 if ctx["args"].quick else 16)
    except Exception as e:  # noqa: BLE001
        return {"status": ERROR, "reason": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    failed = [f"{r['rule']}: {', '.join(r['failed'])}" for r in res["rows"] if r["failed"]]
    res["status"] = FAILED if failed else (CPU_ONLY if ctx["device"] is None else PASSED)
    res["failed_events"] = failed
    if ctx["device"] is None:
        res["reason"] = f"{NO_CUDA}: the events ran on the CPU against the CPU (a reference of the check only)"
    return res


# ---- part: train ------------------------------------------------------------------------------------------------

def _idx(array) -> bytes:
    return struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape) + \
        array.astype("uint8").tobytes()


def synthetic_images(n: int, seed: int):
    """``n`` CIFAR-shaped images as 96x32 planes stacked (uint8) and their labels: class k is a bright 8x8 square
    at one of five places in colour plane k % 3, on noise."""
    import numpy as np
    rng = np.random.RandomState(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.randint(0, 90, size=(n, 3, 32, 32)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = 4 + (k % 5 // 3) * 16, 2 + (k % 5) * 6
        images[i, k % 3, r:r + 8, c:c + 8] = 255
        images[i, (k + 1) % 3, r:r + 8, c:c + 8] = 200 if k >= 5 else 0
    return images.reshape(n, 96, 32), labels.astype(np.uint8)


def write_synthetic(root: Path, n_train: int, n_test: int) -> Path:
    """MNIST-format files (``root/MNIST/raw``, gzipped) of :func:`synthetic_images`; returns ``root``."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n, s in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_images(n, s)
        (raw / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images), mtime=0))
        (raw / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels), mtime=0))
    return Path(root)


#: synthetic images (training incl. the validation split, test) of the train part
DATA_SIZES = {"quick": (200, 100), "full": (5000, 1000)}

#: the example each run starts from and what is changed to make it short
RUNS = {
    "gnap": ("examples/cifar10_gnap.yaml",
             {"patience": 1, "min_delta": 100.0, "min_phase_epochs": 2, "max_growths": 1, "param_cost": 20.0,
              "mask_lr": 0.05, "finetune_epochs": 1}),
    "scs": ("examples/cifar10_scs_resnet.yaml",
            {"grow_every": 1, "grow_until": 0.5, "max_growths": 1, "finetune_epochs": 1}),
}


def run_config(method: str, data_root: Path, device: str, quick: bool) -> dict:
    """The short run of ``method``: its CIFAR-10 example with synthetic data, a few epochs and a fixed format."""
    import yaml
    example, changes = RUNS[method]
    cfg = yaml.safe_load((ROOT / example).read_text())
    cfg.pop("name", None)
    cfg["seed"] = str((ROOT / example).parent / cfg["seed"])
    cfg["data"] = {"name": "mnist", "root": str(data_root), "download": False, "val_fraction": 0.2,
                   "batch_size": 32 if quick else 128, "eval_batch_size": 256 if quick else 1024,
                   "augment": {"flip": True}}
    cfg["method"].update(changes)
    cfg["schedule"].update(epochs=4 if quick else 6, device=device, format="channels_last", seed=0)
    if device == "cuda":
        cfg["schedule"]["amp"] = "float16"
    else:
        cfg["schedule"]["threads"] = 1
    return cfg


def _events(run: Path) -> list[dict]:
    path = run / "history.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass   # a line being written
    return out


def _decisions(events: list[dict]) -> list[tuple]:
    """What a run decided, event by event (no timings, no metrics)."""
    out = []
    for e in events:
        if e.get("event") == "epoch":
            out.append(("epoch", e.get("epoch"), e.get("version")))
        elif e.get("event") == "rewrite":
            out.append(("rewrite", e.get("rule"), json.dumps(e.get("args"), sort_keys=True), e.get("version")))
        elif e.get("event") in ("start", "end"):
            out.append((e["event"],))
    return out


def _worker_cmd(run_file: Path, out: Path, resume: bool = False) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "_grow", str(run_file), str(out)] + \
        (["--resume"] if resume else [])


def grow_worker(argv: list[str]) -> int:
    """``gpu_check.py _grow RUN.yaml OUT [--resume]``: ``archgraph.grow`` with deterministic kernels on CUDA, so an
    interrupted and resumed run can be compared with an uninterrupted one."""
    import torch
    run_file, out = argv[0], argv[1]
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    import archgraph
    archgraph.grow(run_file, out, quiet=True, resume="--resume" in argv[2:])
    return 0


def _summary(run: Path) -> Optional[dict]:
    path = run / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def _final_weights_diff(a: Path, b: Path) -> Optional[float]:
    from safetensors.torch import load_file
    pa, pb = a / "weights" / "final.safetensors", b / "weights" / "final.safetensors"
    if not (pa.exists() and pb.exists()):
        return None
    wa, wb = load_file(str(pa)), load_file(str(pb))
    if wa.keys() != wb.keys() or any(wa[k].shape != wb[k].shape for k in wa):
        return math.inf
    return max((float((wa[k].double() - wb[k].double()).abs().max()) for k in wa if wa[k].numel()), default=0.0)


def train_check(method: str, folder: Path, data_root: Path, device: str, quick: bool,
                timeout: Callable[[float], float]) -> dict:
    """The uninterrupted run and, alongside it, the same run killed after its first rewrite and resumed."""
    import yaml
    folder.mkdir(parents=True, exist_ok=True)
    run_file = folder / "run.yaml"
    run_file.write_text(yaml.safe_dump(run_config(method, data_root, device, quick), sort_keys=False))
    ref_dir, cut_dir = folder / "uninterrupted", folder / "interrupted"
    env = {**os.environ, **_child_env()}
    limit = timeout(240)
    t0 = _now()
    with open(folder / "uninterrupted.log", "w") as ref_log, open(folder / "interrupted.log", "w") as cut_log:
        ref = subprocess.Popen(_worker_cmd(run_file, ref_dir), cwd=ROOT, env=env, stdout=ref_log, stderr=ref_log)
        cut = subprocess.Popen(_worker_cmd(run_file, cut_dir), cwd=ROOT, env=env, stdout=cut_log, stderr=cut_log)
        kill = {"landed": False}
        while cut.poll() is None and _now() - t0 < limit:
            events = _events(cut_dir)
            if any(e.get("event") == "rewrite" for e in events):
                cut.send_signal(signal.SIGKILL)
                cut.wait()
                kill = {"landed": True, "after_events": len(events), "at_epoch": max(
                    (e.get("epoch", 0) for e in events if e.get("event") == "epoch"), default=0),
                        "after_s": round(_now() - t0, 3)}
                break
            time.sleep(0.01)
        if cut.poll() is None:   # out of time
            cut.kill()
            cut.wait()
        kill["rc"] = cut.returncode
        res = _run(_worker_cmd(run_file, cut_dir, resume=True), max(1, limit - (_now() - t0)),
                   folder / "resumed.log")
        try:
            ref_rc = ref.wait(timeout=max(1, limit - (_now() - t0)))
        except subprocess.TimeoutExpired:
            ref.kill()
            ref_rc = 124
    out: dict[str, Any] = {"method": method, "device": device, "run_file": str(run_file),
                           "wall_s": round(_now() - t0, 3), "uninterrupted_rc": ref_rc, "resumed_rc": res["rc"],
                           "kill": kill}
    s_ref, s_cut = _summary(ref_dir), _summary(cut_dir)
    e_ref, e_cut = _events(ref_dir), _events(cut_dir)
    epochs = [e for e in e_ref if e.get("event") == "epoch"]
    losses = [e["metrics"].get("train_loss") for e in epochs]
    checks = {"uninterrupted_ok": ref_rc == 0 and s_ref is not None,
              "kill_landed_after_a_rewrite": kill["landed"],
              "resumed_ok": res["rc"] == 0 and s_cut is not None}
    if s_ref is not None:
        out["summary"] = {k: s_ref.get(k) for k in ("test_acc", "val_acc", "train_acc", "params", "nonzero_params",
                                                     "macs", "versions", "growth_events", "prune_events", "epochs",
                                                     "steps", "device", "amp", "format", "wall_s")}
        speed = (s_ref.get("speed") or {}).get("versions") or []
        steps = [r["step_s"] for r in speed if r.get("step_s")]
        out["step_ms_median"] = round(statistics.median(steps) * 1e3, 3) if steps else None
        out["event_s_mean"] = (s_ref.get("speed") or {}).get("event_s_mean")
        out["train_loss"] = losses
        checks["on_device"] = s_ref.get("device") == device
        checks["amp_as_asked"] = s_ref.get("amp") == ("float16" if device == "cuda" else "off")
        checks["grew"] = (s_ref.get("growth_events") or 0) >= 1
        checks["losses_finite"] = bool(losses) and all(v is not None and math.isfinite(v) for v in losses)
        checks["test_acc_valid"] = s_ref.get("test_acc") is not None and 0.0 <= s_ref["test_acc"] <= 1.0
    if s_ref is not None and s_cut is not None:
        speed_cut = (s_cut.get("speed") or {}).get("versions") or []
        checks["resume_restored_a_checkpoint"] = any(r.get("kind") == "resume" for r in speed_cut)
        checks["same_decisions"] = _decisions(e_cut) == _decisions(e_ref)
        strip = ("wall_s", "speed")
        same_summary = {k: v for k, v in s_cut.items() if k not in strip} == \
            {k: v for k, v in s_ref.items() if k not in strip}
        diff = _final_weights_diff(cut_dir, ref_dir)
        out["resume"] = {"same_summary": same_summary, "final_weights_max_diff": diff,
                         "identical": same_summary and diff == 0.0,
                         "test_acc": s_cut.get("test_acc"), "test_acc_uninterrupted": s_ref.get("test_acc")}
        if device == "cpu":   # promised bit for bit on the CPU (tests/test_resume.py); reported on CUDA
            checks["resume_bit_for_bit"] = out["resume"]["identical"]
    if res["rc"] != 0:
        out["resumed_tail"] = _tail(res["stderr"])
    if ref_rc != 0:
        out["uninterrupted_tail"] = _tail((folder / "uninterrupted.log").read_text())
    out["checks"] = checks
    out["failed"] = sorted(k for k, v in checks.items() if not v)
    return out


def part_train(ctx: dict) -> dict:
    device = ctx["device"]
    if device is None:
        return {"status": SKIPPED, "reason": NO_CUDA}
    quick = ctx["args"].quick
    n_train, n_test = DATA_SIZES["quick" if quick else "full"]
    root = write_synthetic(ctx["out"] / "train" / "data", n_train, n_test)
    rows = []
    for method in ctx["args"].method_list:
        try:
            rows.append(train_check(method, ctx["out"] / "train" / method, root, device, quick, ctx["timeout"]))
        except Exception as e:  # noqa: BLE001
            rows.append({"method": method, "error": f"{type(e).__name__}: {e}", "failed": ["error"],
                         "traceback": traceback.format_exc()[-3000:]})
    failed = [f"{r['method']}: {', '.join(r['failed'])}" for r in rows if r["failed"]]
    return {"status": FAILED if failed else PASSED, "rows": rows, "failed_runs": failed,
            "data": {"train": n_train, "test": n_test,
                     "note": "synthetic CIFAR-shaped images (MNIST-format files of 96x32 = three 32x32 planes)"}}


# ---- part: bench ------------------------------------------------------------------------------------------------

ROW = re.compile(r"^\|\s*([^|]+?)\s*\|\s*([\d.,]+)\s*\|\s*([\d.,]+)\s*\|\s*([\d.,]+)\s*\|\s*$")


def parse_throughput(stdout: str) -> dict:
    """The header line and the table rows that ``benchmarks/gpu_throughput.py`` prints."""
    rows = []
    for line in stdout.splitlines():
        m = ROW.match(line.strip())
        if m:
            name, ms, ips, ratio = m.groups()
            rows.append({"variant": name, "ms": float(ms.replace(",", "")),
                         "images_s": float(ips.replace(",", "")), "ratio": float(ratio.replace(",", ""))})
    header = next((line for line in stdout.splitlines() if "torch" in line and "params" in line), "")
    return {"header": header.strip(), "rows": rows}


def part_bench(ctx: dict) -> dict:
    device = ctx["device"]
    if device is None:
        return {"status": SKIPPED, "reason": NO_CUDA}
    runs = []
    smoke = device == "cpu" or ctx["args"].quick
    for width in ((1,) if smoke else (1, 4)):
        cmd = [sys.executable, "benchmarks/gpu_throughput.py", "--device", device, "--width", str(width)]
        if smoke:
            cmd += ["--batch", "16", "--steps", "2", "--rounds", "2"]
        if ctx["args"].bench_compile and device == "cuda":
            cmd.append("--compile")
        res = _run(cmd, ctx["timeout"](180), ctx["out"] / "bench" / f"width{width}.log")
        parsed = parse_throughput(res["stdout"])
        run = {"command": " ".join(cmd[1:]), "width": width, "rc": res["rc"], "wall_s": res["wall_s"], **parsed}
        run["ok"] = res["rc"] == 0 and {"hand-written", "archgraph"} <= {r["variant"] for r in parsed["rows"]}
        if not run["ok"]:
            run["tail"] = _tail(res["stderr"] or res["stdout"])
        runs.append(run)
    out = {"status": PASSED if all(r["ok"] for r in runs) else FAILED, "runs": runs}
    if smoke:
        out["note"] = "smoke settings (batch 16, 2 steps, 2 rounds): the figures are not a measurement"
    return out


# ---- the report -------------------------------------------------------------------------------------------------

PART_FUNCS = {"tests": part_tests, "seeds": part_seeds, "rewrite": part_rewrite, "train": part_train,
              "bench": part_bench}


def run_check(args) -> dict:
    t0 = _now()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device, mode = target_device(args.device)
    print(f"gpu_check: {mode}", flush=True)

    def timeout(want: float) -> float:
        return max(5.0, min(want, args.budget_s - (_now() - t0)))

    ctx = {"args": args, "out": out, "device": device, "timeout": timeout}
    results: dict[str, Any] = {"check": "archgraph gpu_check", "format": 1, "mode": mode, "device": device,
                               "cuda_available": device == "cuda", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "argv": sys.argv[1:], "environment": environment(), "parts": {}}
    for name in PARTS:
        if name not in args.parts:
            results["parts"][name] = {"status": SKIPPED, "reason": "not asked for (--only/--skip)"}
            continue
        if _now() - t0 > args.budget_s:
            results["parts"][name] = {"status": SKIPPED, "reason": f"out of time (--budget-s {args.budget_s:g})"}
            continue
        p0 = _now()
        print(f"gpu_check: {name} ...", flush=True)
        try:
            part = PART_FUNCS[name](ctx)
        except Exception as e:  # noqa: BLE001 - a broken part is reported; the others still run
            part = {"status": ERROR, "reason": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        part["wall_s"] = round(_now() - p0, 3)
        results["parts"][name] = part
        print(f"gpu_check: {name}: {part['status']}" + (f" ({part['reason']})" if part.get("reason") else ""),
              flush=True)
    statuses = [p["status"] for p in results["parts"].values()]
    results["ok"] = not any(s in (FAILED, ERROR) for s in statuses)
    results["wall_s"] = round(_now() - t0, 3)
    skipped_cuda = [n for n in CUDA_PARTS if results["parts"][n].get("reason") == NO_CUDA]
    results["message"] = ("some parts failed: " + ", ".join(n for n, p in results["parts"].items()
                                                            if p["status"] in (FAILED, ERROR))) if not results["ok"] \
        else (f"{NO_CUDA}: skipped {', '.join(skipped_cuda) or 'no part'}; the CPU parts that ran passed"
              if device is None else "every part that ran passed")
    write_report(results, out)
    return results


def write_report(results: dict, out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "results.md").write_text(markdown(results))


def markdown(r: dict) -> str:
    env = r["environment"]
    lines = ["# archgraph GPU check", "", f"- mode: {r['mode']}", f"- result: **{'ok' if r['ok'] else 'FAILED'}** "
             f"({r['message']})", f"- started {r['started']}, {r['wall_s']:.1f} s",
             f"- torch {env.get('torch')} (CUDA {env.get('torch_cuda') or 'none'}), Python {env.get('python')}, "
             f"commit {str(env.get('git_commit') or '?')[:12]}"]
    if env.get("device_name"):
        lines.append(f"- device: {env['device_name']} (compute capability {env.get('capability')}, "
                     f"{env.get('memory_gib')} GiB, cuDNN {env.get('cudnn')}, driver {env.get('driver') or '?'})")
    lines += ["", "## Parts", ""]
    lines += _table(["part", "status", "wall s", "note"],
                    [[n, p["status"], p.get("wall_s"), p.get("reason") or p.get("note") or ""]
                     for n, p in r["parts"].items()])
    parts = r["parts"]
    t = parts.get("tests", {})
    if t.get("cases"):
        counts = ", ".join(f"{v} {k}" for k, v in t["counts"].items())
        lines += ["", "## CUDA tests", "", f"`{t['command']}`: {counts}", ""]
        lines += _table(["test", "outcome", "s", "message"],
                        [[c["test"], c["outcome"], c["time_s"], c["message"]] for c in t["cases"]])
    s = parts.get("seeds", {})
    if s.get("rows"):
        lines += ["", "## Seeds: device against CPU", "",
                  "Largest difference relative to the largest CPU value (for gradients: the largest CPU gradient "
                  f"of any parameter); limits: float64 {TOL['float64']:g}, "
                  f"float32 {TOL['float32']:g} (gradients {TOL['float32_grad']:g}), TF32 off; the TF32 column is "
                  "reported, not judged.", ""]
        cols = [f"{d}_{m}_{k}_err" for d in ("float64", "float32") for m in ("eval", "train") for k in ("out", "grad")]
        head = ["seed", "params"] + [c.replace("float", "f").replace("_err", "").replace("_", " ") for c in cols] + \
            ["f32 TF32 eval out", "CPU f32 out max", "failed"]
        lines += _table(head, [[x["seed"], x.get("params"), *[x.get(c) for c in cols], x.get("float32_tf32_out_err"),
                                x.get("cpu_float32_out_absmax"), ", ".join(x["failed"]) or "-"] for x in s["rows"]])
    w = parts.get("rewrite", {})
    if w.get("rows"):
        lines += ["", f"## Rewrites with the optimizer on the device ({w['device']}, float64, Adam)", ""]
        lines += _table(["event", "rule", "args", "params after", "ms", "weights err", "optimizer state err",
                         "function err", "exact", "failed"],
                        [[x["event"], x["rule"], json.dumps(x["args"]), x.get("params"), x.get("rewrite_ms"),
                          x.get("weights_err"), x.get("optimizer_state_err"), x.get("function_err"),
                          x.get("exact"), ", ".join(x["failed"]) or "-"] for x in w["rows"]])
    tr = parts.get("train", {})
    if tr.get("rows"):
        lines += ["", "## Short training runs, killed and resumed", "", tr["data"]["note"] +
                  f": {tr['data']['train']} training and {tr['data']['test']} test images.", ""]
        rows = []
        for x in tr["rows"]:
            sm, rs = x.get("summary") or {}, x.get("resume") or {}
            rows.append([x["method"], sm.get("device"), sm.get("amp"), sm.get("test_acc"), sm.get("params"),
                         sm.get("nonzero_params"), f"{sm.get('growth_events', '-')} / {sm.get('prune_events', '-')}",
                         sm.get("epochs"), x.get("step_ms_median"), (x.get("kill") or {}).get("at_epoch"),
                         rs.get("identical"), rs.get("final_weights_max_diff"), ", ".join(x["failed"]) or "-"])
        lines += _table(["method", "device", "amp", "test acc", "params", "non-zero", "growth / prune", "epochs",
                         "step ms", "killed at epoch", "resume identical", "weights max diff", "failed"], rows)
    b = parts.get("bench", {})
    if b.get("runs"):
        lines += ["", "## Throughput (benchmarks/gpu_throughput.py)", ""]
        if b.get("note"):
            lines += [b["note"], ""]
        for run in b["runs"]:
            lines += [f"`{run['command']}` (rc {run['rc']}): {run.get('header') or ''}", ""]
            lines += _table(["variant", "ms/step", "images/s", "ratio to hand-written"],
                            [[x["variant"], x["ms"], x["images_s"], x["ratio"]] for x in run["rows"]]) + [""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_grow"]:
        return grow_worker(argv[1:])
    args = parse_args(argv)
    results = run_check(args)
    print(f"gpu_check: {results['message']}")
    print(f"gpu_check: wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'results.md'}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
