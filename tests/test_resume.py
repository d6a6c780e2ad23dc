"""Crash-safe resume: a run stopped at any point continues from its last checkpoint and ends exactly like an
uninterrupted run (CPU), and no file of the run directory is ever left half-written."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import ROOT
from train_helpers import tiny_config

import archgraph
from archgraph.fx.weights import load_weights
from archgraph.history.rundir import RunDir

EPOCHS = 6


class Crash(BaseException):
    """Stands for the process dying (not an Exception, so nothing catches it)."""


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    archgraph.grow(tiny_config(data_root, epochs=EPOCHS), out, quiet=True)
    return out


def strip(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("wall_s", "speed")}   # timings


def history(run) -> list[dict]:
    out = []
    for e in RunDir(run).events():
        e = dict(e)
        e.pop("time", None)
        if e["event"] == "end":
            e["summary"] = strip(e["summary"])
        out.append(e)
    return out


def assert_same_run(run, ref):
    summary = json.loads((run / "summary.json").read_text())
    assert strip(summary) == strip(json.loads((ref / "summary.json").read_text()))
    assert history(run) == history(ref)
    a, b = load_weights(run / "weights" / "final.safetensors"), load_weights(ref / "weights" / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (run / "versions").iterdir()) == sorted(p.name for p in (ref / "versions").iterdir())
    for p in (ref / "versions").iterdir():
        assert (run / "versions" / p.name).read_text() == p.read_text()


def assert_nothing_corrupt(run):
    """Every file of the run directory parses (leftover temporary files of atomic writes are not run files)."""
    for path in run.rglob("*"):
        if path.is_dir() or (path.name.startswith(".") and path.name.endswith(".tmp")):
            continue
        if path.name == ".lock":      # a SIGKILLed run leaves its lock: the holder's pid and host, taken over on resume
            pid, host = path.read_text().split()
            assert int(pid) > 0 and host
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
        elif path.suffix == ".yaml":
            archgraph.load(path)
        elif path.suffix == ".safetensors":
            load_weights(path)
        elif path.suffix == ".pt":
            torch.load(path, weights_only=True)
        else:
            raise AssertionError(f"unexpected file {path}")


WRITES = ("append", "save_checkpoint", "write_version", "write_summary", "write_final_weights")


def crash_before_write(monkeypatch, k):
    """Make the k-th write of the run directory (1-based) kill the run before it happens."""
    count = [0]
    for name in WRITES:
        original = getattr(RunDir, name)

        def wrapped(self, *args, _original=original, **kwargs):
            count[0] += 1
            if count[0] == k:
                raise Crash(f"write {k}")
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(RunDir, name, wrapped)
    return count


def count_writes(reference) -> int:
    log = RunDir(reference).events()
    rewrites = sum(e["event"] == "rewrite" for e in log)
    epochs = sum(e["event"] == "epoch" for e in log)
    # start: version 0, start event, checkpoint; per epoch: event, checkpoint; per rewrite: version, event,
    # checkpoint; the end: the finalize checkpoint, weights, summary, end event
    return 3 + 2 * epochs + 3 * rewrites + 4


def crash_then_resume(cfg, out, k, monkeypatch, reference) -> dict:
    """Run ``cfg`` into ``out`` until its k-th write kills it, check nothing on disk is corrupt, resume it, and
    check the resumed run is the uninterrupted ``reference`` run: the same summary, versions and history."""
    with monkeypatch.context() as patch:
        count = crash_before_write(patch, k)
        with pytest.raises(Crash):
            archgraph.grow(cfg, out, quiet=True)
        assert count[0] == k
    assert_nothing_corrupt(out)
    summary = archgraph.grow(cfg, out, quiet=True, resume=True)
    assert strip(summary) == strip(json.loads((reference / "summary.json").read_text())), f"crash at write {k}"
    assert_same_run(out, reference)
    return summary


def test_crash_at_any_write_then_resume(data_root, reference, tmp_path, monkeypatch):
    total = count_writes(reference)
    rng = random.Random(0)
    points = sorted({1, 2, 3, 4, total - 2, total - 1, total, *rng.sample(range(5, total - 2), 5)})
    cfg = tiny_config(data_root, epochs=EPOCHS)
    for k in points:
        out = tmp_path / f"crash{k}"
        crash_then_resume(cfg, out, k, monkeypatch, reference)
        assert not list(out.rglob(".*.tmp"))


def test_resume_refuses_a_changed_run_file(data_root, reference, tmp_path, monkeypatch):
    cfg = tiny_config(data_root, epochs=EPOCHS)
    with monkeypatch.context() as patch:
        crash_before_write(patch, 12)
        with pytest.raises(Crash):
            archgraph.grow(cfg, tmp_path / "run", quiet=True)
    cfg["schedule"]["lr"] = 0.02
    with pytest.raises(archgraph.errors.ConfigError, match="differs"):
        archgraph.grow(cfg, tmp_path / "run", quiet=True, resume=True)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(data_root, reference, tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(tiny_config(data_root, epochs=EPOCHS), sort_keys=False))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "archgraph", "grow", str(run_file), "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kills = 0
    for attempt in range(3):
        proc = subprocess.Popen(cmd + (["--resume"] if attempt else []), cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait until the run has written something, then kill it at a random moment
        started = time.monotonic()
        while not (out / "history.jsonl").exists() and proc.poll() is None and time.monotonic() - started < 60:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 2.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        assert_nothing_corrupt(out)
    done = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert kills >= 1, f"no kill landed (random seed {seed})"
    assert_nothing_corrupt(out)
    assert_same_run(out, reference), f"random seed {seed}"


def test_rewrite_in_the_middle_of_an_epoch_resumes_mid_epoch(data_root, tmp_path, monkeypatch):
    """A strategy may rewrite at a step end: the checkpoint then holds the epoch's position, and a crash after it
    resumes inside the epoch."""
    from archgraph import rules
    from archgraph.train.strategies.dense import DenseStrategy

    def widen_at_step_5(self, trainer):
        return [rules.AddFilters(node="c2", count=2)] if trainer.step == 5 else []
    monkeypatch.setattr(DenseStrategy, "on_step_end", widen_at_step_5)
    cfg = tiny_config(data_root, method="dense", epochs=2)
    ref = archgraph.grow(cfg, tmp_path / "ref", quiet=True)
    assert ref["versions"] == 2 and ref["growth_events"] == 1
    rewrite = [e for e in RunDir(tmp_path / "ref").events() if e["event"] == "rewrite"][0]
    assert rewrite["step"] == 5 and rewrite["epoch"] == 0
    # writes 1-3: version 0, start event, checkpoint; 4-6: version 1, rewrite event, mid-epoch checkpoint
    for k in (5, 6, 7, 8):
        out = tmp_path / f"crash{k}"
        with monkeypatch.context() as patch:
            crash_before_write(patch, k)
            with pytest.raises(Crash):
                archgraph.grow(cfg, out, quiet=True)
        if k > 6:
            assert RunDir(out).load_checkpoint()["loop"]["epoch_state"]["batch"] == 5
        summary = archgraph.grow(cfg, out, quiet=True, resume=True)
        assert strip(summary) == strip(ref), f"crash at write {k}"
        assert_same_run(out, tmp_path / "ref")
