"""Try a growth schedule of benchmarks/growth_compute.py on one seed against that seed's scratch run saved in a
results JSON (the scratch run is deterministic given the seed, so it is not trained again), on the validation split
only. A variant is a list of stages (``step`` and ``rules``, as in ``growth_compute_grown.yaml``); the grown run is
the shipped run file with its stages replaced, trained by the same :class:`growth_compute.Probe` and stopped at the
first evaluation past ``--stop`` times the scratch run's cost (it can no longer matter there), so no test bpc.

    python benchmarks/growth_compute_explore.py NAME --seed 0     # NAME: a variant of VARIANTS below

Each result is appended to ``--record`` (default ``benchmarks/results/growth_compute_variants.json``) with the row of
:func:`growth_compute.compare` (window 3, every 100) and ``val_bpc_at_0.70``: the grown run's smoothed val bpc at 0.70
times the scratch run's cost, interpolated in FLOPs between evaluations (a continuous figure to rank variants by
when the crossing, on a 100-step grid, ties or misses).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import growth_compute as gc  # noqa: E402

WIDEN = [{"rule": "add_filters", "args": {"node": "wte", "count": 32, "init": "preserve"}},
         {"rule": "add_heads", "args": {"node": "b0_attn", "count": 2, "init": "preserve"}},
         {"rule": "add_filters", "args": {"node": "b0_fc", "count": 128, "init": "preserve"}}]


def block(i: int) -> dict:
    return {"rule": "insert_block", "args": {"after": f"b{i - 1}_res2", "prefix": f"b{i}", "norm": "rmsnorm",
                                             "mlp_ratio": 4}}


WIDEN4 = [WIDEN[0], *({"rule": "add_heads", "args": {"node": f"b{i}_attn", "count": 2, "init": "preserve"}}
                       for i in range(4)),
          *({"rule": "add_filters", "args": {"node": n, "count": 128, "init": "preserve"}}
            for n in ("b0_fc", "b1_fc1", "b2_fc1", "b3_fc1"))]   # the stream, heads and MLPs of all four blocks


VARIANTS = {   # the seven tried, in this order (growth_compute_variants.json, "explored"); w200_d300 is shipped
    "w200_d700": [{"step": 200, "rules": WIDEN}, {"step": 700, "rules": [block(1), block(2), block(3)]}],
    "w200_d400x1_d800x2": [{"step": 200, "rules": WIDEN}, {"step": 400, "rules": [block(1)]},
                           {"step": 800, "rules": [block(2), block(3)]}],
    "w200_d300x1_d600x2": [{"step": 200, "rules": WIDEN}, {"step": 300, "rules": [block(1)]},
                           {"step": 600, "rules": [block(2), block(3)]}],
    "w200_d400": [{"step": 200, "rules": WIDEN}, {"step": 400, "rules": [block(1), block(2), block(3)]}],
    # depth first: three narrow blocks, then every block widened
    "d200_w500": [{"step": 200, "rules": [block(1), block(2), block(3)]}, {"step": 500, "rules": WIDEN4}],
    "w200_d300": [{"step": 200, "rules": WIDEN}, {"step": 300, "rules": [block(1), block(2), block(3)]}],
    "w100_d300": [{"step": 100, "rules": WIDEN}, {"step": 300, "rules": [block(1), block(2), block(3)]}],
}


class _Stop(Exception):
    pass


class Stopping(gc.Probe):
    """A Probe that stops at the first evaluation with more than ``limit`` FLOPs behind it."""

    def __init__(self, *args, limit: float, **kw):
        super().__init__(*args, **kw)
        self.limit = limit

    def _point(self) -> None:
        super()._point()
        if self.curve[-1]["flops"] > self.limit:
            raise _Stop


def at_flops(curve: list[dict], flops: float) -> float | None:
    """The smoothed bpc of ``curve`` at ``flops``, linear between the points either side (None past the end)."""
    for p, q in zip(curve, curve[1:]):
        if p["flops"] <= flops <= q["flops"]:
            t = (flops - p["flops"]) / (q["flops"] - p["flops"])
            return p["bpc"] + t * (q["bpc"] - p["bpc"])
    return None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variant", choices=sorted(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scratch-from", type=Path, default=gc.HERE / "results" / "growth_compute.json")
    ap.add_argument("--stop", type=float, default=0.85, help="stop past this fraction of the scratch run's cost")
    ap.add_argument("--epochs", type=int, default=7)
    ap.add_argument("--record", type=Path, default=gc.HERE / "results" / "growth_compute_variants.json")
    args = ap.parse_args(argv)
    saved = json.loads(args.scratch_from.read_text())
    scratch = next(r for r in saved["runs"] if r["seed"] == args.seed and "scratch" in r["run_file"])
    window, every = saved["window"], saved["every"]
    ref = gc.compare(scratch, {"curve": scratch["curve"], "test_bpc": None}, window, every)
    stages = VARIANTS[args.variant]
    cfg = gc.with_overrides(gc.load_config(gc.GROWN), {"schedule.seed": args.seed, "schedule.epochs": args.epochs,
                                                       "method.stages": stages}, str(gc.GROWN))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Stopping(cfg, Path(tmp) / "grown", seed_graph=gc.load_seed(cfg, gc.GROWN.parent, str(gc.GROWN)),
                           source=str(gc.GROWN), quiet=True, every=every, limit=args.stop * ref["scratch_flops"])
        try:
            trainer.run()
        except _Stop:
            pass
    target = scratch["final_macs"]
    if trainer.ledger[-1]["macs"] != target or trainer.graph.params != scratch["params"]:
        raise SystemExit(f"{args.variant} does not end in the target ({trainer.ledger[-1]['macs']} MACs)")
    grown = {"curve": trainer.curve, "test_bpc": None}
    row = gc.compare(scratch, grown, window, every)
    grid = gc.smoothed([p for p in trainer.curve if p["step"] % every == 0], window)
    result = {"variant": args.variant, "seed": args.seed, "stages": stages, "stopped_after_flops": args.stop,
              "stage_steps": [s["step"] for s in stages], "curve": trainer.curve, "ledger": trainer.ledger,
              "row": row, "val_bpc_at_0.70": at_flops(grid, 0.70 * ref["scratch_flops"])}
    print(json.dumps({k: result[k] for k in ("variant", "seed", "row", "val_bpc_at_0.70")}), flush=True)
    record = json.loads(args.record.read_text())
    record.setdefault("explored", []).append(result)
    args.record.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
