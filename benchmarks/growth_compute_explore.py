"""Try a growth schedule of benchmarks/growth_compute.py on one seed against that seed's scratch run saved in a
results JSON (the scratch run is deterministic given the seed, so it is not trained again), on the validation split
only. A variant is a list of stages (``step`` and ``rules``, as in ``growth_compute_grown.yaml``); the grown run is
the shipped run file with its stages replaced, trained by the same :class:`growth_compute.Probe` and stopped at the
first evaluation past ``--stop`` times the scratch run's cost (it can no longer matter there), so no test bpc.

    python benchmarks/growth_compute_explore.py NAME --seed 0     # NAME: a variant of VARIANTS below
    python benchmarks/growth_compute_explore.py NAME --seed 0 --protocol cosine --epochs 7 --stop 1.0

``--protocol cosine`` gives both runs a cosine decay to zero over their own epochs (the scratch run over its 6,
trained once and kept in ``--scratch-cache``) and takes that scratch run's last val bpc as the threshold (window 1).

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


WIDEN_CLONE = [{"rule": "add_filters", "args": {"node": "wte", "count": 32, "init": "clone", "eps": 0.01}},
               WIDEN[1],
               {"rule": "add_filters", "args": {"node": "b0_fc", "count": 128, "init": "clone", "eps": 0.01}}]


def stacked(i: int) -> dict:
    """G_stack: block ``i`` a copy of the trained block 0 with its residual writers at zero (exact)."""
    return {"rule": "stack_block", "args": {"start": "wpe", "end": "b0_res2", "after": f"b{i - 1}_res2",
                                            "prefix": f"b{i}_", "init": "zero"}}


def lr_stages(stages: list[dict], factors: list, warmup: int = 0) -> list[dict]:
    """``stages`` with the learning-rate factor of each (None: unchanged) reached over ``warmup`` steps."""
    return [dict(s, **({} if f is None else {"lr_factor": f, "warmup_steps": warmup})) for s, f in zip(stages, factors)]


D300 = {"step": 300, "rules": [block(1), block(2), block(3)]}
VARIANTS.update({   # third round (growth-following learning rate, cloned widening, G_stack): run in this order
    # the seed (half the width) at twice the rate, muP-like for Adam; the target's rate from the widening on
    "w200_d300_lr2": {"method": {"lr_factor": 2.0}, "stages": lr_stages([{"step": 200, "rules": WIDEN}, D300],
                                                                        [1.0, None])},
    # HyperCloning: the stream and the MLP widened by copying every channel (+-0.01 noise on the readers)
    "cw200_d300": [{"step": 200, "rules": WIDEN_CLONE}, D300],
    "cw200_d300_lr2": {"method": {"lr_factor": 2.0}, "stages": lr_stages([{"step": 200, "rules": WIDEN_CLONE},
                                                                          D300], [1.0, None])},
    # a longer, cheap small phase at a higher rate
    "w400_d500_lr2": {"method": {"lr_factor": 2.0}, "stages": lr_stages([{"step": 400, "rules": WIDEN},
                                                                         dict(D300, step=500)], [1.0, None])},
    # G_stack: copies of the trained block (residual writers at zero) instead of fresh blocks
    "w200_s300": [{"step": 200, "rules": WIDEN}, {"step": 300, "rules": [stacked(1), stacked(2), stacked(3)]}],
    # the one-block models (narrow, then wide) at 2x, down to the target's rate over 100 steps after the deepening
    "w200_d300_lr2_ramp": {"method": {"lr_factor": 2.0},
                         "stages": lr_stages([{"step": 200, "rules": WIDEN}, D300], [None, 1.0], warmup=100)},
    # a long, cheap seed phase (the seed costs 1/12 of the target per step), then all growth in one event
    "wd800_lr2": {"method": {"lr_factor": 2.0},
                  "stages": [{"step": 800, "lr_factor": 1.0, "rules": WIDEN + [block(1), block(2), block(3)]}]},
    "wd1200_lr2": {"method": {"lr_factor": 2.0},
                   "stages": [{"step": 1200, "lr_factor": 1.0, "rules": WIDEN + [block(1), block(2), block(3)]}]},
    "wd400": [{"step": 400, "rules": WIDEN + [block(1), block(2), block(3)]}],
})


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


def variant(name: str) -> dict:
    """A variant as ``{"stages", "method", "schedule", "epochs"}`` (the first seven are lists of stages only)."""
    v = VARIANTS[name]
    v = {"stages": v} if isinstance(v, list) else v
    return {"method": {}, "schedule": {}, "epochs": None, **v}


def scratch_run(protocol: str, seed: int, scratch_from: Path, cache: Path) -> tuple[dict, int, int]:
    """The seed's scratch run of ``protocol`` with the window and evaluation interval its threshold uses: constant,
    the run saved in ``scratch_from`` (window 3); cosine, the scratch run file with a cosine decay over its 6 epochs,
    from ``cache`` or trained into it (window 1: the end of a decay is not noisy, its last value is the threshold)."""
    if protocol == "constant":
        saved = json.loads(scratch_from.read_text())
        scratch = next(r for r in saved["runs"] if r["seed"] == seed and "scratch" in r["run_file"])
        return scratch, saved["window"], saved["every"]
    with tempfile.TemporaryDirectory() as tmp:
        scratch = gc.cached_train(gc.SCRATCH, Path(tmp) / "scratch", cache, seed=seed, epochs=6, every=100,
                                  settings=PROTOCOLS[protocol])
    return scratch, 1, 100


#: the scratch run's settings of each protocol (the grown runs get the same lr_schedule)
PROTOCOLS = {"constant": None, "cosine": {"schedule.lr_schedule": "cosine"}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variant", choices=sorted(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="constant",
                    help="constant: both runs at a constant learning rate (the scratch run from --scratch-from); "
                         "cosine: both decay to zero over their own epochs (the scratch run over its 6)")
    ap.add_argument("--scratch-from", type=Path, default=gc.HERE / "results" / "growth_compute.json")
    ap.add_argument("--scratch-cache", type=Path, default=gc.HERE / "results" / "growth_compute_scratch")
    ap.add_argument("--stop", type=float, default=0.85, help="stop past this fraction of the scratch run's cost")
    ap.add_argument("--epochs", type=int, default=7, help="the grown run's epochs (a variant may set its own)")
    ap.add_argument("--record", type=Path, default=gc.HERE / "results" / "growth_compute_variants.json")
    args = ap.parse_args(argv)
    scratch, window, every = scratch_run(args.protocol, args.seed, args.scratch_from, args.scratch_cache)
    ref = gc.compare(scratch, {"curve": scratch["curve"], "test_bpc": None}, window, every)
    v = variant(args.variant)
    epochs = v["epochs"] or args.epochs
    settings = {"schedule.seed": args.seed, "schedule.epochs": epochs, "method.stages": v["stages"],
                **(PROTOCOLS[args.protocol] or {}), **{f"method.{k}": x for k, x in v["method"].items()},
                **{f"schedule.{k}": x for k, x in v["schedule"].items()}}
    cfg = gc.with_overrides(gc.load_config(gc.GROWN), settings, str(gc.GROWN))
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
    result = {"variant": args.variant, "seed": args.seed, "protocol": args.protocol, "window": window,
              "epochs": epochs, "method": v["method"], "schedule": v["schedule"], "stages": v["stages"],
              "stopped_after_flops": args.stop, "stage_steps": [s["step"] for s in v["stages"]],
              "curve": trainer.curve, "ledger": trainer.ledger, "row": row,
              "val_bpc_at_0.50": at_flops(grid, 0.50 * ref["scratch_flops"]),
              "val_bpc_at_0.70": at_flops(grid, 0.70 * ref["scratch_flops"])}
    print(json.dumps({k: result[k] for k in ("variant", "seed", "protocol", "row", "val_bpc_at_0.50",
                                             "val_bpc_at_0.70")}), flush=True)
    record = json.loads(args.record.read_text())
    record.setdefault("explored", []).append(result)
    args.record.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
