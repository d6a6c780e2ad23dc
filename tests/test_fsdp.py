"""``schedule.parallel: fsdp``: FSDP2 (``fully_shard``) on two CPU processes under torchrun (gloo, loopback).

* Agreement: a net without batch norm or dropout, grown and pruned on a fixed schedule (staged), ends with the same
  weights in one process, in two DDP processes and in two FSDP processes, up to the order of float sums
  (``ATOL``/``RTOL``); the FSDP ranks hold the same whole state (hashed by tests/ddp_worker.py from all-gathered
  tensors) after the seed, every epoch, every rewrite and at the end.
* Sharded checkpoints: each rank writes its shard (torch.distributed.checkpoint) under ``shards/<tag>/``; a
  two-process job killed with SIGKILL after a rewrite resumes on one process, and a one-process run killed after a
  rewrite resumes on two, both ending like the uninterrupted run.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

import archgraph
from archgraph.fx.weights import load_weights
from archgraph.train import fsdp
from conftest import ROOT
from test_ddp import free_port, pytestmark, torchrun  # noqa: F401  (pytestmark: the same skip)
from test_resume import Crash
from train_helpers import tiny_config, write_mnist

#: float summation order: the largest difference allowed between the runs' final weights
ATOL, RTOL = 1e-5, 1e-4

#: an MLP in two blocks (two FSDP units and the root), no batch norm, no dropout
BLOCK_MLP = {"archgraph": 1, "name": "block_mlp", "inputs": {"image": [1, 28, 28]},
             "nodes": {"flat": {"op": "flatten", "in": "image"},
                       "b0_fc": {"op": "linear", "in": "flat", "out_features": 16},
                       "b0_act": {"op": "relu", "in": "b0_fc"},
                       "b1_fc": {"op": "linear", "in": "b0_act", "out_features": 12},
                       "b1_act": {"op": "relu", "in": "b1_fc"},
                       "fc": {"op": "linear", "in": "b1_act", "out_features": 10}},
             "outputs": ["fc"]}

#: a growth event mid-epoch and a prune event at an epoch end
STAGES = [{"step": 3, "rules": [{"rule": "add_filters", "args": {"node": "b0_fc", "count": 4, "init": "preserve"}}]},
          {"epoch": 2, "rules": [{"rule": "prune_channels", "args": {"node": "b1_fc", "indices": [0, 5]}}]}]


def staged_config(data, epochs: int = 3, parallel: str = "fsdp") -> dict:
    cfg = tiny_config(data, method="dense", epochs=epochs)
    cfg["seed"] = copy.deepcopy(BLOCK_MLP)
    cfg["data"]["augment"] = {}
    cfg["method"] = {"name": "staged", "stages": STAGES, "require_exact": False}
    cfg["schedule"].update(optimizer="sgd", lr=0.1, momentum=0.9, parallel=parallel)
    return cfg


def write(cfg: dict, path) -> str:
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def max_diff(a_dir, b_dir) -> float:
    a = load_weights(a_dir / "weights" / "final.safetensors")
    b = load_weights(b_dir / "weights" / "final.safetensors")
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=ATOL, rtol=RTOL), (k, float((a[k] - b[k]).abs().max()))
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it, children first looked up, then all killed at once."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 60        # SIGKILL is not instant: wait until each is gone (or a zombie)
    for p in pids:
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{p}/stat") as f:
                    if f.read().rpartition(")")[2].split()[:1] == ["Z"]:
                        break
            except OSError:
                break
            time.sleep(0.05)


def decisions(run) -> list:
    return [(e["rule"], e["version"], e["epoch"], e["step"]) for e in
            map(json.loads, (run / "history.jsonl").read_text().splitlines()) if e["event"] == "rewrite"]


def test_units_follow_the_blocks():
    g = archgraph.loads(yaml.safe_dump(BLOCK_MLP))
    assert {k: sorted(v) for k, v in fsdp.units(g).items()} == {"b0": ["b0_act", "b0_fc"], "b1": ["b1_act", "b1_fc"]}
    assert fsdp.units(g, whole=True) == {}
    gpt = archgraph.load(ROOT / "examples" / "seeds" / "gpt_tiny.yaml")
    assert list(fsdp.units(gpt)) == ["b0", "b1"] and "lm_head" not in sum(fsdp.units(gpt).values(), [])


def test_one_process_ignores_fsdp_and_says_so(tmp_path):
    data = write_mnist(tmp_path / "data", n_train=100, n_test=20)
    summary = archgraph.grow(staged_config(data, epochs=1), tmp_path / "run", quiet=True)
    assert summary["world_size"] == 1 and summary["parallel"] == "fsdp" and summary["growth_events"] == 1
    plain = archgraph.grow(staged_config(data, epochs=1, parallel="ddp"), tmp_path / "ddp", quiet=True)
    assert plain["parallel"] == "ddp"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The staged run in one process, two DDP processes and two FSDP processes (traced), and its data."""
    tmp = tmp_path_factory.mktemp("fsdp")
    # 194 examples: 39 validation, 155 training = 4 batches of 32 and one of 27 (14 + 13 on the two ranks)
    data = write_mnist(tmp / "data", n_train=194, n_test=40)
    cfg = staged_config(data)
    archgraph.grow(cfg, tmp / "one", quiet=True)
    torchrun(["-m", "archgraph", "grow", write(staged_config(data, parallel="ddp"), tmp / "ddp.yaml"),
              "--out", str(tmp / "ddp"), "--quiet"], tmp)
    trace = tmp / "trace"
    trace.mkdir()
    torchrun([str(ROOT / "tests" / "ddp_worker.py"), write(cfg, tmp / "fsdp.yaml"), "--out", str(tmp / "fsdp"),
              "--quiet"], tmp, DDP_TRACE_DIR=str(trace))
    traces = [[json.loads(line) for line in (trace / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    return {"tmp": tmp, "data": data, "cfg": cfg, "traces": traces}


@pytest.mark.slow
def test_fsdp_agrees_with_ddp_and_one_process(runs, record_property):
    tmp = runs["tmp"]
    summaries = {d: json.loads((tmp / d / "summary.json").read_text()) for d in ("one", "ddp", "fsdp")}
    assert [(s["world_size"], s["parallel"]) for s in summaries.values()] == [(1, "fsdp"), (2, "ddp"), (2, "fsdp")]
    for s in summaries.values():
        assert (s["growth_events"], s["prune_events"], s["steps"]) == (1, 1, 15)
    assert decisions(tmp / "one") == decisions(tmp / "ddp") == decisions(tmp / "fsdp")
    diffs = {"fsdp_vs_one": max_diff(tmp / "fsdp", tmp / "one"), "ddp_vs_one": max_diff(tmp / "ddp", tmp / "one"),
             "fsdp_vs_ddp": max_diff(tmp / "fsdp", tmp / "ddp")}
    for k, v in diffs.items():
        record_property(k, v)
    print("largest final-weight differences:", diffs)
    # the ranks held the same whole state at every point, and it changed
    ranks = runs["traces"]
    assert ranks[0] == ranks[1]
    whats = [e["what"] for e in ranks[0]]
    assert whats[0] == "start" and whats[-1] == "end"
    assert "rewrite add_filters" in whats and "rewrite prune_channels" in whats
    assert len({e["hash"] for e in ranks[0]}) > 3   # the state changes, so equal hashes mean something


@pytest.mark.slow
def test_sharded_checkpoint_resumes_after_sigkill_on_fewer_and_more_processes(runs, tmp_path):
    tmp, cfg = runs["tmp"], runs["cfg"]
    run_file = write(cfg, tmp_path / "run.yaml")

    # 2 -> 1: the whole two-process job killed with SIGKILL after its first rewrite, resumed in one process
    out = tmp_path / "two_then_one"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "archgraph", "grow", run_file,
           "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(ROOT)}
    job = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    started = time.monotonic()
    while job.poll() is None and time.monotonic() - started < 240:
        history = out / "history.jsonl"
        if history.exists() and '"event":"rewrite"' in history.read_text():
            break
        time.sleep(0.05)
    assert job.poll() is None, "the job ended before it could be killed"
    kill_tree(job.pid)   # torchrun and both ranks (torchrun starts each rank in a session of its own)
    job.wait(timeout=60)
    # the layout: rank 0's checkpoint names the shard folder, which holds each rank's file and the metadata
    first = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert first["shards"].startswith("shards/") and first["model"] == {} and first["optimizer"] == {}
    files = {p.name for p in (out / first["shards"]).iterdir()}
    assert {".metadata", "__0_0.distcp", "__1_0.distcp"} <= files
    archgraph.grow(cfg, out, quiet=True, resume=True)
    assert decisions(out) == decisions(tmp / "one")
    max_diff(out, tmp / "one")
    assert list((out / "shards").iterdir()) == []   # one process wrote whole checkpoints: the shards went

    # 1 -> 2: a one-process run killed after its first rewrite, resumed by two processes
    out = tmp_path / "one_then_two"
    seen = []
    from archgraph.history.rundir import RunDir
    original = RunDir.append

    def append(self, event):
        if seen and seen[-1] == "rewrite":
            raise Crash("after the first rewrite")
        seen.append(event["event"])
        return original(self, event)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunDir, "append", append)
        with pytest.raises(Crash):
            archgraph.grow(cfg, out, quiet=True)
    torchrun(["-m", "archgraph", "grow", run_file, "--out", str(out), "--quiet", "--resume"], tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["parallel"] == "fsdp"
    assert decisions(out) == decisions(tmp / "one")
    max_diff(out, tmp / "one")
