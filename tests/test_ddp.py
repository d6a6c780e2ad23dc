"""Distributed training: two CPU processes under torchrun (gloo, loopback) grow one run.

* After the seed, every epoch, every rewrite and at the end both ranks hold bit-identical weights, buffers, optimizer
  state and strategy tensors (hashed by tests/ddp_worker.py, not by the code under test), through at least one
  growth and one prune event; only rank 0 wrote the run directory, and its saved weights are rank 1's.
* ``torchrun -m archgraph grow`` on two processes trains like one process on the same global batches (a net without
  batch norm, so the only difference is the order of float sums).
"""
import hashlib
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import ROOT
from train_helpers import tiny_config, write_mnist

import archgraph
from archgraph.fx.weights import load_weights

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not sys.platform.startswith("linux"),
                                reason="needs torch.distributed with gloo on Linux")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args, tmp_path, **env):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(ROOT), **env}
    proc = subprocess.run(cmd, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def weights_hash(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.mark.slow
def test_ranks_hold_identical_state_after_every_event(tmp_path):
    data = write_mnist(tmp_path / "data", n_train=200, n_test=60)
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(tiny_config(data, epochs=4)))
    trace, out = tmp_path / "trace", tmp_path / "run"
    trace.mkdir()
    proc = torchrun([str(ROOT / "tests" / "ddp_worker.py"), str(run_file), "--out", str(out), "--quiet"], tmp_path,
                    DDP_TRACE_DIR=str(trace))
    assert len([line for line in proc.stdout.splitlines() if line.startswith("{")]) == 1   # rank 0 prints

    ranks = [[json.loads(line) for line in (trace / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert ranks[0] == ranks[1]
    whats = [e["what"] for e in ranks[0]]
    assert whats[0] == "start" and whats[-1] == "end" and all(e["world_size"] == 2 for e in ranks[0])
    assert any(w == "rewrite add_filters" for w in whats) and any(w == "rewrite prune_channels" for w in whats)
    assert len({e["hash"] for e in ranks[0]}) > 3   # the state changes, so equal hashes mean something

    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["growth_events"] >= 1 and summary["prune_events"] >= 1
    events = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("start") == 1 and events[-1]["event"] == "end"   # written once
    rewrites = [e for e in events if e["event"] == "rewrite"]
    assert [e["version"] for e in rewrites] == [e["version"] for e in ranks[0] if e["what"].startswith("rewrite")]
    assert len(list((out / "versions").glob("*.yaml"))) == summary["versions"]
    # the saved weights are exactly the weights rank 1 ended with (it never wrote a file)
    saved = load_weights(out / "weights" / "final.safetensors")
    end = [e for e in ranks[1] if e["what"] == "end"][0]
    assert end["weights"] == weights_hash(saved)


MLP = {"archgraph": 1, "name": "mlp", "inputs": {"image": [1, 28, 28]},
       "nodes": {"flat": {"op": "flatten", "in": "image"},
                 "h": {"op": "linear", "in": "flat", "out_features": 16},
                 "act": {"op": "relu", "in": "h"},
                 "fc": {"op": "linear", "in": "act", "out_features": 10}},
       "outputs": ["fc"]}


def one_and_two_processes(cfg: dict, tmp_path) -> tuple[dict, dict]:
    """Run ``cfg`` in this process (into ``tmp_path/one``) and as ``torchrun -m archgraph grow`` on two processes
    (into ``tmp_path/two``); check the world sizes and that both end with the same weights up to the order of float
    sums; return the two summaries."""
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(cfg))
    one = archgraph.grow(cfg, tmp_path / "one", quiet=True)
    torchrun(["-m", "archgraph", "grow", str(run_file), "--out", str(tmp_path / "two"), "--quiet"], tmp_path)
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2)
    a = load_weights(tmp_path / "one" / "weights" / "final.safetensors")
    b = load_weights(tmp_path / "two" / "weights" / "final.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())
    return one, two


@pytest.mark.slow
def test_torchrun_trains_like_one_process(tmp_path):
    # 194 examples: 39 validation, 155 training = 4 batches of 32 and one of 27 (14 + 13 on the two ranks)
    data = write_mnist(tmp_path / "data", n_train=194, n_test=60)
    cfg = tiny_config(data, method="dense", epochs=3)
    cfg["seed"] = MLP
    cfg["schedule"].update(optimizer="sgd", lr=0.1)
    one, two = one_and_two_processes(cfg, tmp_path)
    assert one["steps"] == two["steps"] == 15
    epochs = [[e["metrics"] for e in map(json.loads, (tmp_path / d / "history.jsonl").read_text().splitlines())
               if e["event"] == "epoch"] for d in ("one", "two")]
    for m1, m2 in zip(*epochs):
        assert m1["train_loss"] == pytest.approx(m2["train_loss"], rel=1e-5)
        assert m1["train_acc"] == m2["train_acc"] and m1["val_acc"] == m2["val_acc"]


@pytest.mark.slow
def test_torchrun_streams_a_folder_like_one_process(tmp_path):
    """A streamed source (folder, DataLoader workers, per-example augmentation) under torchrun: each rank loads its
    share of every global batch, and the run trains like one process."""
    from data_helpers import run_config, write_folder
    pets = write_folder(tmp_path / "pets", per_class=(11, 0, 3))   # 33 images: 30 training, 3 validation
    seed = {"archgraph": 1, "name": "mlp-rgb", "inputs": {"image": [3, 8, 8]},
            "nodes": {"flat": {"op": "flatten", "in": "image"},
                      "h": {"op": "linear", "in": "flat", "out_features": 16},
                      "act": {"op": "relu", "in": "h"},
                      "fc": {"op": "linear", "in": "act", "out_features": 3}}, "outputs": ["fc"]}
    cfg = run_config(seed, {"name": "folder", "path": str(pets), "batch_size": 8, "workers": 1,
                            "augment": {"flip": True, "translate": 1}}, epochs=2)
    cfg["schedule"].update(optimizer="sgd", lr=0.1)
    one, two = one_and_two_processes(cfg, tmp_path)
    assert one["steps"] == two["steps"] == 8
    assert one["test_acc"] == two["test_acc"]


RANK_EXIT = """
import atexit, os, sys, torch, torch.distributed as dist
from archgraph.cli import main
from archgraph.train import distributed
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2])
dist.init_process_group("gloo", rank=0, world_size=1)
rank = distributed.Dist(0, 1, 0, torch.device("cpu"), "gloo", owns_group=True)
atexit.register(lambda: print("interpreter shutdown ran", flush=True))
assert not distributed.left_after_run()
rank.close(finished=sys.argv[1] == "finished")
print(f"left after run: {distributed.left_after_run()}", end=" ")   # no newline: still buffered at the exit
sys.exit(main(["rules"]))
"""


@pytest.mark.parametrize("how", ["finished", "error"])
def test_a_rank_whose_run_finished_ends_without_the_interpreter_shutdown(how):
    """After ``Dist.close(finished=True)`` the command line ends the process with ``end_rank`` (streams flushed,
    then ``os._exit``: no atexit handler, no interpreter shutdown racing gloo's threads); after an error it exits
    the ordinary way."""
    proc = subprocess.run([sys.executable, "-c", RANK_EXIT, how, str(free_port())], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"left after run: {how == 'finished'}" in proc.stdout and "add_filters" in proc.stdout   # all flushed
    assert ("interpreter shutdown ran" in proc.stdout) == (how == "error")
