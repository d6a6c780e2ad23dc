"""Controls for benchmarks/growth_compute.py's cosine protocol, on the scratch run alone (no growth):

    python benchmarks/growth_compute_control.py constant        # the cosine scratch runs against the constant-lr
                                                                # thresholds (window 3), seeds 0-4, from the cache
    python benchmarks/growth_compute_control.py epochs --epochs 7 --seed 0   # the scratch run with a cosine over 7
                                                                # epochs against its 6-epoch threshold (window 1)

The first says how much a decay alone saves under the constant protocol; the second whether a longer schedule alone
(which the grown run of the cosine protocol has) crosses the threshold sooner. Results are appended to ``--record``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import growth_compute as gc  # noqa: E402
import growth_compute_explore as ge  # noqa: E402

CACHE = gc.HERE / "results" / "growth_compute_scratch"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("control", choices=["constant", "epochs"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=7)
    ap.add_argument("--record", type=Path, default=gc.HERE / "results" / "growth_compute_controls.json")
    args = ap.parse_args(argv)
    rows = []
    if args.control == "constant":
        for seed in args.seeds:
            window, every = 3, 100
            with tempfile.TemporaryDirectory() as tmp:
                constant = gc.cached_train(gc.SCRATCH, Path(tmp) / "c", CACHE, seed=seed, epochs=6, every=every,
                                           settings=None)
            cosine, _, _ = ge.scratch_run("cosine", seed, None, CACHE)
            rows.append(gc.compare(constant, cosine, window, every))
        result = {"control": "the 6-epoch cosine scratch run against the constant-lr scratch run's threshold "
                             "(window 3): grown_* columns are the cosine run's", "rows": rows}
    else:
        scratch, window, every = ge.scratch_run("cosine", args.seed, None, CACHE)
        ref = gc.compare(scratch, {"curve": scratch["curve"], "test_bpc": None}, window, every)
        cfg = gc.with_overrides(gc.load_config(gc.SCRATCH), {"schedule.seed": args.seed, "schedule.epochs": args.epochs,
                                                             "schedule.lr_schedule": "cosine"}, str(gc.SCRATCH))
        with tempfile.TemporaryDirectory() as tmp:
            t = ge.Stopping(cfg, Path(tmp) / "s", seed_graph=gc.load_seed(cfg, gc.SCRATCH.parent, str(gc.SCRATCH)),
                            source=str(gc.SCRATCH), quiet=True, every=every, limit=ref["scratch_flops"])
            try:
                t.run()
            except ge._Stop:
                pass
        rows.append(gc.compare(scratch, {"curve": t.curve, "test_bpc": None}, window, every))
        result = {"control": f"the scratch run with a cosine over {args.epochs} epochs (stopped past the 6-epoch "
                             "run's cost) against the 6-epoch cosine threshold (window 1): grown_* columns are its",
                  "seed": args.seed, "epochs": args.epochs, "rows": rows, "curve": t.curve}
    result["command"] = " ".join(["python", "benchmarks/growth_compute_control.py", *sys.argv[1:]])
    for r in rows:
        print(r["seed"], r["threshold_bpc"], r["grown_step"], r["flops_ratio"], flush=True)
    record = json.loads(args.record.read_text()) if args.record.exists() else {"controls": []}
    record["controls"].append(result)
    args.record.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
