"""Resume equality of the streamed sources, with real kills (issue 32): for `folder`, `tokens` and `arrays`, one
``archgraph grow`` run uninterrupted, and the same run SIGKILLed ``--kills`` times (each at a random moment after
its history shows a given number of events: the mid-epoch rewrite of a ``staged`` method at step 4, then epoch
ends) and resumed with ``--resume`` each time. Prints each run's final metrics, where it was killed, and whether
the resumed run's summary (timings aside), history, versions and final weights equal the uninterrupted run's.

    nice -n 10 python benchmarks/data_resume_table.py --work /tmp/resume_table

The data are the small trees and files the tests make (tests/data_helpers.py): 30 training images of three
classes as PNGs of mixed sizes and modes, the same as an ``.npz``, and a token corpus of 1200 ids.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))   # the tests' small-data makers, so the table and the tests share data

from data_helpers import IMAGE_SEED, TOKEN_SEED, write_arrays, write_folder, write_tokens  # noqa: E402

sys.path.insert(0, str(ROOT))
from archgraph.history.rundir import RunDir  # noqa: E402

STAGE = {"step": 4, "rules": [{"rule": "add_filters", "args": {"node": "c2", "count": 2, "init": "preserve"}}]}


def run_files(work: Path, epochs: int) -> dict[str, dict]:
    pets = write_folder(work / "pets", per_class=(10, 0, 3))
    corpus = write_tokens(work / "corpus", n_train=1200)
    arrays = write_arrays(work / "pets.npz", n_train=30, n_test=9)
    schedule = {"optimizer": "adamw", "lr": 0.01, "epochs": epochs, "seed": 0, "device": "cpu", "threads": 1}
    token_stage = copy.deepcopy(STAGE)
    token_stage["rules"][0]["args"]["node"] = "fc"
    return {
        "folder": {"seed": IMAGE_SEED, "data": {"name": "folder", "path": str(pets), "batch_size": 4, "workers": 1,
                                                "augment": {"flip": True, "translate": 1, "color_jitter": 0.2}},
                   "method": {"name": "staged", "stages": [STAGE]}, "schedule": schedule},
        "tokens": {"seed": TOKEN_SEED, "data": {"name": "tokens", "path": str(corpus), "batch_size": 16,
                                                "workers": 1, "limit": 96},
                   "method": {"name": "staged", "stages": [token_stage]}, "schedule": schedule},
        "arrays": {"seed": IMAGE_SEED, "data": {"name": "arrays", "path": str(arrays), "batch_size": 4, "workers": 1,
                                                "augment": {"flip": True, "translate": 1}},
                   "method": {"name": "staged", "stages": [STAGE]}, "schedule": schedule},
    }


def grow(run_file: Path, out: Path, resume: bool = False) -> subprocess.Popen:
    argv = [sys.executable, "-m", "archgraph", "grow", str(run_file), "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(argv + (["--resume"] if resume else []), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def events(out: Path) -> list[dict]:
    path = out / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def killed_run(run_file: Path, out: Path, kills: int, rng: random.Random) -> list[str]:
    """Run, SIGKILLing the process ``kills`` times (each after one more event than the last kill saw, plus a random
    delay), resuming after each; where each resume started (its checkpoint's step, epoch and batch)."""
    where = []
    seen = 0
    for k in range(kills + 1):
        proc = grow(run_file, out, resume=k > 0)
        if k == kills:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"the last resume failed:\n{err}")
            break
        while proc.poll() is None and len(events(out)) <= seen:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is not None:
            raise SystemExit(f"the run ended before kill {k + 1}; use fewer --kills or more epochs")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen = len(events(out))
        ckpt = RunDir(out).load_checkpoint()   # where the resumed run will start
        where.append("start" if ckpt is None else
                     f"step {ckpt['loop']['step']} (epoch {ckpt['loop']['epoch']}, batch "
                     f"{(ckpt['loop'].get('epoch_state') or {}).get('batch', 0)})")
    return where


def digest(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    history = []
    for e in events(out):
        e.pop("time", None)
        if e["event"] == "end":
            e["summary"] = {k: v for k, v in e["summary"].items() if k not in ("wall_s", "speed")}
        history.append(e)
    versions = {p.name: p.read_text() for p in sorted((out / "versions").iterdir())}
    weights = hashlib.sha256((out / "weights" / "final.safetensors").read_bytes()).hexdigest()
    return {"summary": {k: v for k, v in summary.items() if k not in ("wall_s", "speed")}, "history": history,
            "versions": versions, "weights": weights}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="seeds the kill delays")
    args = ap.parse_args()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = random.Random(args.seed)
    rows = []
    for source, cfg in run_files(work, args.epochs).items():
        run_file = work / f"{source}.yaml"
        run_file.write_text(json.dumps(cfg))   # JSON is YAML
        ref, out = work / f"{source}_ref", work / f"{source}_killed"
        proc = grow(run_file, ref)
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{source}: the uninterrupted run failed:\n{err}")
        where = killed_run(run_file, out, args.kills, rng)
        a, b = digest(ref), digest(out)
        second = "test_ppl" if source == "tokens" else "test_acc"
        rows.append((source, a["summary"]["test_loss"], b["summary"]["test_loss"], second, a["summary"][second],
                     b["summary"][second], "; ".join(where), a["summary"] == b["summary"],
                     a["history"] == b["history"] and a["versions"] == b["versions"], a["weights"] == b["weights"],
                     a["summary"]["versions"]))
        print(f"{source}: done", flush=True)
    print("\n| source | test_loss uninterrupted | test_loss killed + resumed | metric | uninterrupted | killed + "
          "resumed | resumed from | same summary | same history and versions | same final weights | versions |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]!r} | {r[2]!r} | {r[3]} | {r[4]!r} | {r[5]!r} | {r[6]} | {r[7]} | {r[8]} | {r[9]} | "
              f"{r[10]} |")

if __name__ == "__main__":
    main()
