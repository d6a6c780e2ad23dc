"""Time `archgraph validate` on every file of the malformed corpus (tests/malformed/).

Two numbers per file: the wall time of the whole command (a fresh `python -m archgraph validate FILE`, interpreter
start-up included) and the time of `archgraph.load(FILE)` alone, in process (best of 5). The baseline row times the
same command on a valid seed, so the cost of refusing a file reads as a ratio against accepting one.

    python benchmarks/malformed_timing.py            # table
    python benchmarks/malformed_timing.py --json     # machine-readable
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import archgraph  # noqa: E402
from archgraph.errors import ArchgraphError  # noqa: E402


def command_time(path: Path) -> tuple[float, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "archgraph", "validate", str(path)], env=env,
                            capture_output=True, timeout=60)
    return time.perf_counter() - start, result.returncode


def load_time(path: Path, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            archgraph.load(path)
        except ArchgraphError:
            pass
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    files = sorted((ROOT / "tests" / "malformed").glob("*.yaml"))
    baseline = ROOT / "examples" / "seeds" / "resnet_cifar.yaml"
    rows = []
    for path in [baseline, *files]:
        wall, rc = command_time(path)
        rows.append({"file": str(path.relative_to(ROOT)), "exit": rc, "command_s": round(wall, 4),
                     "load_s": round(load_time(path), 5)})
    if "--json" in sys.argv:
        print(json.dumps(rows, indent=2))
        return
    width = max(len(r["file"]) for r in rows)
    print(f"{'file'.ljust(width)}  exit  command_s  load_ms  ratio_vs_valid")
    base = rows[0]["command_s"]
    for r in rows:
        print(f"{r['file'].ljust(width)}  {r['exit']:>4}  {r['command_s']:>9.3f}  {r['load_s'] * 1000:>7.2f}  "
              f"{r['command_s'] / base:>14.2f}")
    walls = [r["command_s"] for r in rows[1:]]
    print(f"\n{len(walls)} malformed files: command max {max(walls):.3f} s, mean {sum(walls) / len(walls):.3f} s; "
          f"load max {max(r['load_s'] for r in rows[1:]) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
