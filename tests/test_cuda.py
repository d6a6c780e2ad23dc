"""The CUDA paths, checked on every device this machine has (the ``device`` fixture of conftest.py: the CPU always,
CUDA when available; the CUDA case skips cleanly without it). ``pytest -m cuda`` runs exactly these, which is what
scripts/gpu_check.sh does on a GPU.

* every seed of examples/seeds built on the device against the CPU, float64 and float32: the same initial weights,
  and (normalisation randomised) the same outputs and gradients in eval mode and, without dropout, in train mode;
* growth and prune events through ``archgraph.rewrite(..., optimizer=adam)`` with Adam's state on the device, then
  ``archgraph.prune``, each against the same event on the CPU in float64;
* short GNAP and SCS runs with AMP (float16 on CUDA; the CPU ignores ``amp``) killed after their first rewrite and
  resumed, against the uninterrupted run.

Errors are the largest difference relative to the largest CPU value (for gradients, the largest CPU gradient of any
parameter: a gradient that is zero in exact arithmetic is rounding noise on both devices). Tolerances: float64 1e-9,
float32 1e-4 (gradients 1e-3) with TF32 off. Each case records its errors as JUnit properties (``record_property``),
which scripts/gpu_results.py puts in the GPU check's results.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, SEEDS
from method_helpers import method_config
from test_resume import Crash, strip
from train_helpers import tiny_config

import archgraph
from archgraph.fx.weights import load_weights
from archgraph.graph import is_tokens
from archgraph.history.rundir import RunDir
from archgraph.interop.equivalence import randomize_normalization

pytestmark = pytest.mark.cuda

TOL = {"float64": 1e-9, "float32": 1e-4}
GRAD_TOL = {"float64": 1e-9, "float32": 1e-3}


@pytest.fixture(autouse=True)
def _no_tf32():
    """TF32 off (cuDNN convolutions, cuBLAS matmuls), so float32 on CUDA is float32; restored after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference of ``a`` from the reference ``b``, relative to ``b``'s largest value."""
    if a.shape != b.shape:
        return math.inf
    if not a.numel():
        return 0.0
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    scale = float(b.abs().max())
    diff = float((a - b).abs().max())
    return diff / scale if scale > 0 else diff


def grad_err(got: dict, want: dict) -> float:
    """Largest gradient difference relative to the largest reference gradient of any parameter."""
    if got.keys() != want.keys():
        return math.inf
    scale = max((float(v.abs().max()) for v in want.values() if v.numel()), default=0.0)
    diff = max((float((got[k].cpu().double() - want[k].double()).abs().max()) if got[k].shape == want[k].shape
                else math.inf for k in want if want[k].numel()), default=0.0)
    return diff / scale if scale > 0 else diff


def inputs(graph, dtype, batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, shape.vocab, (batch, *shape), generator=gen) if is_tokens(shape)
            else torch.randn(batch, *shape, generator=gen, dtype=torch.float64).to(dtype)
            for shape in graph.inputs.values()]


def forward_backward(module, xs, train: bool):
    """Outputs and parameter gradients of ``sum(mean(out**2))``."""
    module.train(train)
    module.zero_grad(set_to_none=True)
    out = module(*xs)
    outs = out if isinstance(out, tuple) else (out,)
    sum(o.float().square().mean() if o.is_floating_point() else 0 for o in outs).backward()
    return [o.detach() for o in outs], {k: p.grad.detach().clone() for k, p in module.named_parameters()
                                        if p.grad is not None}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", SEEDS, ids=[p.stem for p in SEEDS])
def test_every_seed_builds_on_the_device_like_on_the_cpu(seed, dtype, device, record_property):
    g = archgraph.load(seed)
    dt = getattr(torch, dtype)
    ref = archgraph.build(g, seed=0, dtype=dt)
    dev = archgraph.build(g, seed=0, dtype=dt, device=device)
    assert dev.state_dict().keys() == ref.state_dict().keys()
    for k, v in dev.state_dict().items():       # the same initialisation on every device
        assert v.device.type == device and torch.equal(v.cpu(), ref.state_dict()[k]), k
    randomize_normalization(ref)
    dev.load_state_dict(ref.state_dict())
    xs = inputs(g, dt)
    # train mode (batch statistics) where nothing is random; on the CPU, eval mode only: the CPU case checks the
    # test itself, and the train-mode copies of the large seeds would cost seconds for nothing
    stochastic = any(n.op == "dropout" for n in g.nodes.values())
    modes = [False] + ([] if stochastic or device == "cpu" else [True])
    for train in modes:   # train mode on copies, so the running statistics stay as they were for eval
        r, d = (copy.deepcopy(ref), copy.deepcopy(dev)) if train else (ref, dev)
        r_out, r_grads = forward_backward(r, xs, train)
        d_out, d_grads = forward_backward(d, [x.to(device) for x in xs], train)
        assert all(bool(torch.isfinite(o).all()) for o in r_out if o.is_floating_point())
        assert all(o.device.type == device for o in d_out)
        out_err = max(rel(a, b) for a, b in zip(d_out, r_out))
        g_err = grad_err(d_grads, r_grads)
        mode = "train" if train else "eval"
        record_property(f"{mode}_out_err", out_err)
        record_property(f"{mode}_grad_err", g_err)
        assert out_err <= TOL[dtype], f"{seed.stem} {dtype} {mode}: outputs differ by {out_err:.3g}"
        assert g_err <= GRAD_TOL[dtype], f"{seed.stem} {dtype} {mode}: gradients differ by {g_err:.3g}"


# ---- rewrites with Adam's state on the device ---------------------------------------------------------------------

REWRITE_SEED = ROOT / "examples" / "seeds" / "resnet_cifar.yaml"
EVENTS = [
    {"rule": "add_filters", "args": {"node": "stem", "count": 8, "init": "preserve"}},     # the residual stream
    {"rule": "insert_block", "args": {"after": "b1_out"}},
    {"rule": "prune_channels", "args": {"node": "b2_c1", "indices": [0, 3, 5, 7]}},
]


def adam_step(module, opt, x, y) -> float:
    module.train()
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(module(x), y)
    loss.backward()
    opt.step()
    return float(loss.detach())


def adam_state(opt, module) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name, p in module.named_parameters() for k, v in opt.state.get(p, {}).items()
            if torch.is_tensor(v)}


def test_rewrites_and_prune_with_adam_state_on_the_device(device, record_property):
    g0 = archgraph.load(REWRITE_SEED)
    ref = randomize_normalization(archgraph.build(g0, seed=0, dtype=torch.float64))
    dev = archgraph.build(g0, seed=0, dtype=torch.float64, device=device)
    dev.load_state_dict(ref.state_dict())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 32, 32, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (8,), generator=gen)
    dx, dy = x.to(device), y.to(device)
    opt_r, opt_d = torch.optim.Adam(ref.parameters(), lr=1e-3), torch.optim.Adam(dev.parameters(), lr=1e-3)
    for _ in range(2):
        adam_step(ref, opt_r, x, y)
        adam_step(dev, opt_d, dx, dy)
    g_r = g_d = g0
    for event in EVENTS:
        name = event["rule"]
        exact = archgraph.apply(g_d, event).exact
        with torch.no_grad():
            before = dev.eval()(dx)
        g_r, ref = archgraph.rewrite(g_r, ref, event, optimizer=opt_r, seed=0)
        g_d, dev = archgraph.rewrite(g_d, dev, event, optimizer=opt_d, seed=0)
        assert archgraph.dumps(g_d) == archgraph.dumps(g_r)
        assert all(t.device.type == device for t in [*dev.parameters(), *dev.buffers()]), name
        held = {id(p) for group in opt_d.param_groups for p in group["params"]}
        assert held == {id(p) for p in dev.parameters()}, f"{name}: the optimizer lost the new parameters"
        state_d, state_r = adam_state(opt_d, dev), adam_state(opt_r, ref)
        assert state_d.keys() == state_r.keys() and state_d, name
        assert all(v.device.type == device for k, v in state_d.items() if not k.endswith(".step")), name
        weights_err = max(rel(v, ref.state_dict()[k]) for k, v in dev.state_dict().items() if v.is_floating_point())
        state_err = max(rel(v, state_r[k]) for k, v in state_d.items())
        with torch.no_grad():
            function_err = rel(dev.eval()(dx), before)
        record_property(f"{name}_weights_err", weights_err)
        record_property(f"{name}_adam_state_err", state_err)
        record_property(f"{name}_function_err", function_err)
        assert weights_err <= TOL["float64"] and state_err <= TOL["float64"], name
        if exact:
            assert function_err <= TOL["float64"], f"{name} should keep the function"
        loss_r, loss_d = adam_step(ref, opt_r, x, y), adam_step(dev, opt_d, dx, dy)   # the optimizer continues
        assert abs(loss_d - loss_r) <= 1e-9 * abs(loss_r), name
        step_err = max(rel(v, ref.state_dict()[k]) for k, v in dev.state_dict().items() if v.is_floating_point())
        assert step_err <= 1e-7, f"{name}: the step after differs by {step_err:.3g}"
    # magnitude pruning of the whole network (weights only: archgraph.prune takes no optimizer); module in, module out
    gp_r, mp_r = archgraph.prune(g_r, ref, ratio=0.25)
    gp_d, mp_d = archgraph.prune(g_d, dev, ratio=0.25)
    wp_r, wp_d = mp_r.state_dict(), mp_d.state_dict()
    assert archgraph.dumps(gp_d) == archgraph.dumps(gp_r) and gp_d.params < g_d.params
    assert all(v.device.type == device for v in wp_d.values())
    prune_err = max(rel(v, wp_r[k]) for k, v in wp_d.items() if v.is_floating_point())
    record_property("prune_weights_err", prune_err)
    assert prune_err <= TOL["float64"]


# ---- short runs with AMP, killed after their first rewrite and resumed --------------------------------------------

def crash_after_first_rewrite(monkeypatch):
    """The run dies at the first history event after its first rewrite (the rewrite's checkpoint is written)."""
    original = RunDir.append
    seen = []

    def append(self, event):
        if seen and seen[-1] == "rewrite":
            raise Crash("after the first rewrite")
        seen.append(event["event"])
        return original(self, event)
    monkeypatch.setattr(RunDir, "append", append)


def decisions(run) -> list[tuple]:
    return [(e["event"], e.get("rule"), e.get("version")) for e in RunDir(run).events()
            if e["event"] in ("rewrite", "epoch")]


@pytest.mark.parametrize("method", ["gnap", "scs"])
def test_amp_run_killed_after_a_rewrite_resumes(method, device, data_root, tmp_path, monkeypatch, record_property):
    if device == "cuda":   # the same kernels on both runs, so they can be compared
        monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    cfg = tiny_config(data_root, epochs=4) if method == "gnap" else method_config(data_root, "scs", epochs=5)
    cfg["schedule"].update(device=device, amp="float16")
    ref = archgraph.grow(cfg, tmp_path / "ref", quiet=True)
    assert ref["device"] == device and ref["amp"] == ("float16" if device == "cuda" else "off")
    assert ref["growth_events"] >= 1 and 0 <= ref["test_acc"] <= 1
    with monkeypatch.context() as patch:
        crash_after_first_rewrite(patch)
        with pytest.raises(Crash):
            archgraph.grow(cfg, tmp_path / "cut", quiet=True)
    resumed = archgraph.grow(cfg, tmp_path / "cut", quiet=True, resume=True)
    assert decisions(tmp_path / "cut") == decisions(tmp_path / "ref")
    a = load_weights(tmp_path / "cut" / "weights" / "final.safetensors")
    b = load_weights(tmp_path / "ref" / "weights" / "final.safetensors")
    assert a.keys() == b.keys()
    diff = max(rel(a[k], b[k]) for k in a if a[k].is_floating_point())
    record_property("resume_final_weights_err", diff)
    record_property("resume_identical", strip(resumed) == strip(ref) and diff == 0)
    if device == "cpu":      # bit for bit on the CPU (tests/test_resume.py); on CUDA within AMP's rounding
        assert strip(resumed) == strip(ref) and diff == 0
    else:
        assert diff <= 1e-2, f"the resumed run's weights differ by {diff:.3g}"
