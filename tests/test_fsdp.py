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
from conftest import ROOT
from test_ddp import free_port, pytestmark, torchrun, weights_hash  # noqa: F401  (pytestmark: the same skip)
from test_ddp_methods import METHODS as DDP_METHODS
from test_ddp_methods import seed_with_dropout, traced_ranks
from test_resume import Crash
from train_helpers import tiny_config, write_mnist

import archgraph
from archgraph.fx.weights import load_weights
from archgraph.train import fsdp

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


#: every method, with settings that make it rewrite within three epochs (tests/test_ddp_methods.py's), and GNAP's
FSDP_METHODS = {**{m: s for m, (s, _) in DDP_METHODS.items()},
                "gnap": tiny_config(".")["method"]}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(FSDP_METHODS))
def test_every_method_keeps_fsdp_ranks_identical(method, tmp_path):
    """Each method on two FSDP processes (its reparametrised network one unit; staged's blocks are units in the
    agreement test above) through its growth and prune events: the ranks' whole state is the same at every point."""
    data = write_mnist(tmp_path / "data", n_train=194, n_test=40)
    cfg = tiny_config(data, method="dense", epochs=4 if method == "gnap" else 3)   # GNAP grows in its 4th
    cfg["seed"] = seed_with_dropout()
    cfg["method"] = dict(FSDP_METHODS[method])
    cfg["schedule"]["parallel"] = "fsdp"
    ranks, out = traced_ranks(cfg, tmp_path)
    for a, b in zip(ranks[0], ranks[1], strict=True):
        assert a == b, f"{method}: the ranks differ after {a['what']} (version {a['version']}, step {a['step']})"
    whats = [e["what"] for e in ranks[0]]
    assert whats[0] == "start" and whats[-1] == "end" and any(w.startswith("rewrite") for w in whats)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["world_size"], summary["parallel"], summary["method"]) == (2, "fsdp", method)
    assert summary["growth_events"] + summary["prune_events"] >= 1
    saved = load_weights(out / "weights" / "final.safetensors")
    assert [e for e in ranks[1] if e["what"] == "end"][0]["weights"] == weights_hash(saved)


@pytest.mark.slow
def test_two_nodes_on_localhost_grow_one_run(tmp_path):
    """Two "machines" of one process each (``torchrun --nnodes=2``, c10d rendezvous on 127.0.0.1), sharded,
    through a growth event: one run directory, written once, saying world size 2."""
    data = write_mnist(tmp_path / "data", n_train=100, n_test=20)
    run_file = write(staged_config(data, epochs=1), tmp_path / "run.yaml")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(ROOT)}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={r}",
                               "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
                               "--rdzv_id=archgraph-test", "-m", "archgraph", "grow", run_file,
                               "--out", str(tmp_path / "run"), "--quiet"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in (0, 1)]
    outputs = [n.communicate(timeout=300)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["world_size"], summary["parallel"], summary["growth_events"]) == (2, "fsdp", 1)
    events = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("start") == 1 and events[-1]["event"] == "end"


@pytest.mark.slow
def test_sweep_trials_as_torchrun_jobs(tmp_path, capsys):
    """``archgraph sweep --launcher "torchrun --nproc_per_node=2"``: the trial's run is a two-process (FSDP) job."""
    pytest.importorskip("optuna")
    from test_sweep import sweep_args

    from archgraph.cli import main
    out = tmp_path / "sweep"
    assert main(sweep_args(out, 1, "--set", "schedule.parallel=fsdp", "--set", "data.limit=200",
                           "--launcher", "torchrun --nproc_per_node=2")) == 0
    assert "on the Pareto front" in capsys.readouterr().out
    summary = json.loads((out / "trials" / "0000" / "seed-0" / "summary.json").read_text())
    assert (summary["world_size"], summary["parallel"]) == (2, "fsdp")
    assert json.loads((out / "pareto.json").read_text())["front"][0]["val_acc"] == summary["val_acc"]


def test_launcher_words():
    from archgraph.sweep.runner import launcher_command
    assert launcher_command("torchrun --nproc_per_node=2") == [sys.executable, "-m", "torch.distributed.run",
                                                              "--standalone", "--nproc_per_node=2"]
    assert "--standalone" not in launcher_command("torchrun --rdzv_endpoint=h:1 --nnodes=2")
    assert launcher_command("srun -n 2") == ["srun", "-n", "2"]
