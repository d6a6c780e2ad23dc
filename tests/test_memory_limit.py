"""Every CLI command answers bad input under a 4 GiB address-space limit (``ulimit -v 4194304``) with exit status 2
and a one-line message: never a traceback, never killed.

The limit is set with ``resource.setrlimit(RLIMIT_AS)`` in the child (``preexec_fn``). 4 GiB is enough to start:
importing torch (CPU build), torchvision, onnx and matplotlib was measured at about 0.75 GiB of address space
(``VmPeak`` in /proc/self/status). A CUDA build of torch maps far more at import; where 4 GiB is too little to
import torch at all, the test is skipped, saying so, rather than run with a higher limit.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest
from conftest import ROOT

LIMIT = 4 << 30
SEEDS = ROOT / "examples" / "seeds"
TINY = SEEDS / "tiny_cnn.yaml"


def _limit():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def limited(*args, cwd=None, timeout=180) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd or ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=_limit)


@pytest.fixture(scope="module")
def torch_fits():
    code = "import torch; from archgraph.compat import import_torchvision; import_torchvision()"
    result = limited("-c", code)
    if result.returncode != 0:
        pytest.skip(f"torch cannot even be imported under {LIMIT >> 30} GiB of address space here")


@pytest.fixture(scope="module")
def bad(tmp_path_factory, torch_fits):
    """Bad inputs: a graph over the width limit, one that fits the limits but not 4 GiB twice over, a run dir with a
    truncated history and a run file with a mistyped field."""
    d = tmp_path_factory.mktemp("bad")
    (d / "wide.yaml").write_text("archgraph: 1\ninputs: {x: [8]}\nnodes:\n"
                                 "  fc: {op: linear, in: x, out_features: 1000000000000}\noutputs: [fc]\n")
    (d / "huge.yaml").write_text("archgraph: 1\ninputs: {x: [31000]}\nnodes:\n"
                                 "  fc: {op: linear, in: x, out_features: 31000}\n"
                                 "  fc2: {op: linear, in: fc, out_features: 2}\noutputs: [fc2]\n")
    (d / "run.yaml").write_text(f"seed: {TINY}\ndata: {{name: digits}}\nmethod: {{name: gnap}}\n"
                                "schedule: {epochs: \"3\"}\n")
    run = d / "run"
    (run / "versions").mkdir(parents=True)
    (run / "versions" / "0000.yaml").write_text(TINY.read_text())
    (run / "history.jsonl").write_text('{"event": "start", "config": {}}\n{"event": "epo')
    (d / "w.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{nothing")
    return d


def commands(d, out):
    return {
        "validate": ["validate", "/dev/urandom"],
        "summary": ["summary", d / "wide.yaml"],
        "init": ["init", d / "huge.yaml", "-o", out / "w.safetensors"],
        "init_wide": ["init", d / "wide.yaml", "-o", out / "w.safetensors"],
        "render": ["render", "/dev/zero", "-o", out / "x.svg"],
        "diff": ["diff", TINY, d / "wide.yaml"],
        "schema": ["schema", "-o", TINY],
        "apply": ["apply", TINY, "add_filters", "node=c1", "count=100000000", "-o", out / "a"],
        "apply_weights": ["apply", TINY, "add_filters", "node=c1", "--weights", d / "w.safetensors", "-o", out / "b"],
        "prune": ["prune", TINY, "--weights", "/dev/urandom", "--ratio", "0.5", "-o", out / "p"],
        "grow": ["grow", d / "run.yaml", "--out", out / "g"],
        "replay": ["replay", d / "run"],
        "plot": ["plot", d / "run", "-o", out / "p.png"],
        "report": ["report", d / "run", "-o", out / "r.html"],
        "import": ["import", "torchvision:resnet18", "--input-shape", "3,100000,100000", "-o", out / "i"],
        "export": ["export", d / "huge.yaml", "--python", out / "m.py", "--weights", d / "w.safetensors"],
    }


CASES = list(commands(ROOT, ROOT))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_bad_input_under_a_4_gib_limit(case, bad, tmp_path):
    argv = commands(bad, tmp_path)[case]
    result = limited("-m", "archgraph", *argv)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and result.stderr.startswith("archgraph: error: "), result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
