"""Does growth save compute? A tiny GPT on the bundled text (CPython's pydoc_data.topics, character level), grown
from a small seed into a target by function-preserving rules, against the target trained from scratch: training
FLOPs and wall time until each first reaches the same validation bpc, per seed and as ratios grown / scratch.

    python benchmarks/growth_compute.py                 # 3 seeds, about 25 minutes on one shared CPU thread
    python benchmarks/growth_compute.py --seeds 0 --scratch-epochs 1 --grown-epochs 1 --every 100   # a smoke run
    python benchmarks/growth_compute.py --seeds 0 1 2 3 4 --grown-epochs 7 --window 1 \
        --scratch-set schedule.lr_schedule=cosine --set schedule.lr_schedule=cosine \
        --scratch-cache benchmarks/results/growth_compute_scratch --out benchmarks/results/growth_compute_cosine

The last is the cosine protocol: both runs decay to zero over their own epochs and the threshold is the scratch
run's last val bpc (window 1); ``--scratch-cache`` reuses scratch runs already trained (deterministic per seed).

The two runs are the run files ``benchmarks/configs/growth_compute_scratch.yaml`` (the target, ``dense``) and
``growth_compute_grown.yaml`` (the seed and its ``staged`` rules, which end in exactly the target's architecture),
trained by the ordinary loop (``archgraph grow`` trains them identically): same data order, optimizer and constant
learning rate. The script only watches: :class:`Probe` evaluates the validation bpc every ``--every`` steps (eval
mode, no random draws, so training is unchanged) and accounts every step.

Conventions, stated once:

- **FLOPs** of a training step = ``6 x MACs x samples``: ``graph.macs`` is the forward multiply-accumulates of one
  sample (linear layers and attention's projections, scores and weighted values; not embeddings, norms, softmax),
  2 FLOPs per MAC and a backward pass of twice the forward. A grown run's FLOPs are the sum over its versions of
  that version's per-sample cost times the samples it trained on.
- **Wall time** is the time inside training steps plus the time of each rewrite (rule, build, weight and optimizer
  transfer); evaluation is left out of both runs (each pays the same per evaluation).
- **The threshold** is the scratch run's validation bpc at the end of its budget, averaged over its last
  ``--window`` evaluations at multiples of ``--every`` steps (the end of the last epoch is not one) (at a constant
  learning rate one evaluation is noisy); each run's cost is that at its
  *first* evaluation whose average with the ``window - 1`` before it is at or below the threshold (the grown run
  trains longer so it can get there).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from archgraph.train.config import RunConfig, config_from_data, load_config, load_seed, with_overrides  # noqa: E402
from archgraph.train.loop import Trainer  # noqa: E402

HERE = Path(__file__).resolve().parent
SCRATCH = HERE / "configs" / "growth_compute_scratch.yaml"
GROWN = HERE / "configs" / "growth_compute_grown.yaml"
FLOPS_PER_MAC = 6   # 2 FLOPs per multiply-accumulate, forward + backward (twice the forward)


class Probe(Trainer):
    """A :class:`Trainer` that also evaluates the validation split every ``every`` steps and accounts each step:
    ``curve`` (one point per evaluation: step, cumulative FLOPs and wall time, val bpc) and ``ledger`` (per graph
    version: its per-sample MACs, steps and samples)."""

    def __init__(self, *args, every: int, **kw):
        super().__init__(*args, **kw)
        self.every = every
        self.curve: list[dict] = []
        self.ledger: list[dict] = []
        self.flops = 0
        self.train_s = 0.0

    def _point(self) -> None:
        if self.curve and self.curve[-1]["step"] == self.step:
            return
        bpc = self.evaluate(self.dataset.val)["bpc"]
        self.curve.append({"step": self.step, "version": self.version, "flops": self.flops,
                           "wall_s": round(self.train_s, 4), "val_bpc": bpc})

    def train_step(self, batch, n: int):
        if self.step % self.every == 0:   # the state after self.step steps (and any rewrite after the last one)
            self._point()
        if not self.ledger or self.ledger[-1]["version"] != self.version:
            self.ledger.append({"version": self.version, "macs": self.graph.macs, "steps": 0, "samples": 0})
        t0 = time.perf_counter()
        out = super().train_step(batch, n)
        float(out[0])   # wait for the step (a no-op on the CPU)
        self.train_s += time.perf_counter() - t0
        self.flops += FLOPS_PER_MAC * self.graph.macs * n
        self.ledger[-1]["steps"] += 1
        self.ledger[-1]["samples"] += n
        return out

    def apply_rule(self, rule) -> None:
        t0 = time.perf_counter()
        super().apply_rule(rule)
        self.train_s += time.perf_counter() - t0

    def run(self) -> dict:
        summary = super().run()
        self._point()
        return summary


def with_stage_steps(cfg: RunConfig, steps: Optional[list[int]], source: str) -> RunConfig:
    """``cfg`` with its staged method's stages moved to ``steps`` (one per stage, in order; None: unchanged)."""
    if steps is None:
        return cfg
    data = cfg.model_dump(mode="json")
    stages = data["method"]["stages"]
    if len(steps) != len(stages):
        raise SystemExit(f"{source} has {len(stages)} stages; --stage-steps gave {len(steps)} steps")
    for stage, step in zip(stages, steps):
        stage.update(step=step, epoch=None)
    return config_from_data(data, source)


def train(run_file: Path, out_dir: Path, *, seed: int, epochs: int, every: int,
          settings: Optional[dict] = None, stage_steps: Optional[list[int]] = None) -> dict:
    """Train one run file with a :class:`Probe` (``settings``: dotted overrides, ``stage_steps``: see
    :func:`with_stage_steps`); its curve, ledger and summary."""
    cfg = with_overrides(load_config(run_file), {"schedule.seed": seed, "schedule.epochs": epochs,
                                                 **(settings or {})}, str(run_file))
    cfg = with_stage_steps(cfg, stage_steps, str(run_file))
    trainer = Probe(cfg, out_dir, seed_graph=load_seed(cfg, run_file.parent, str(run_file)), source=str(run_file),
                    quiet=True, every=every)
    summary = trainer.run()
    return {"run_file": str(run_file.relative_to(HERE.parent)) if run_file.is_relative_to(HERE.parent)
            else str(run_file), "seed": seed, "epochs": epochs, "settings": settings or {},
            "stage_steps": stage_steps,
            "curve": trainer.curve, "ledger": trainer.ledger, "flops": trainer.flops,
            "final_macs": summary["macs"], "params": summary["params"], "val_bpc": summary["val_bpc"],
            "test_bpc": summary["test_bpc"], "versions": summary["versions"], "hash": summary["hash"]}


def cached_train(run_file: Path, out_dir: Path, cache: Optional[Path], **kw) -> dict:
    """:func:`train`, or its result saved in ``cache`` (a folder) by an earlier call with the same run file, seed,
    epochs, evaluation interval and settings (a run is deterministic given these, so the scratch runs are trained
    once while the grown variants are explored); None: no cache."""
    if cache is None:
        return train(run_file, out_dir, **kw)
    key = json.dumps({"run_file": run_file.name, **kw}, sort_keys=True)
    name = f"{run_file.stem}-s{kw['seed']}-e{kw['epochs']}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.json"
    if (cache / name).exists():
        return json.loads((cache / name).read_text())
    run = train(run_file, out_dir, **kw)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / name).write_text(json.dumps(run) + "\n")
    return run


def smoothed(curve: list[dict], window: int) -> list[dict]:
    """``curve`` with ``bpc``: the mean val bpc of each point and the ``window - 1`` before it (fewer at the start),
    so that one lucky evaluation of a noisy constant-learning-rate run neither sets nor meets the threshold.

    >>> [p["bpc"] for p in smoothed([{"val_bpc": 3.0}, {"val_bpc": 2.0}, {"val_bpc": 1.0}], 2)]
    [3.0, 2.5, 1.5]
    """
    return [dict(p, bpc=statistics.fmean(q["val_bpc"] for q in curve[max(0, i - window + 1):i + 1]))
            for i, p in enumerate(curve)]


def crossing(curve: list[dict], threshold: float) -> Optional[dict]:
    """The first point of ``curve`` whose ``bpc`` is at or below ``threshold`` (None when the run never gets there).

    >>> crossing([{"bpc": 3.0}, {"bpc": 2.0}, {"bpc": 1.9}], 2.0)
    {'bpc': 2.0}
    """
    return next((p for p in curve if p["bpc"] <= threshold), None)


def compare(scratch: dict, grown: dict, window: int = 1, every: Optional[int] = None) -> dict:
    """One seed's row: the threshold (scratch's last smoothed val bpc), each run's cost at its first smoothed point
    at or below it, and the ratios grown / scratch. With ``every`` only the points at multiples of ``every`` steps
    count: a run's last point, at the end of its last epoch, is not one of the other run's points."""
    def grid(curve):
        return [p for p in curve if every is None or p["step"] % every == 0]
    sc, gr = smoothed(grid(scratch["curve"]), window), smoothed(grid(grown["curve"]), window)
    threshold = sc[-1]["bpc"]
    a, b = crossing(sc, threshold), crossing(gr, threshold)
    row = {"seed": scratch["seed"], "threshold_bpc": threshold,
           "scratch_step": a["step"], "scratch_flops": a["flops"], "scratch_wall_s": a["wall_s"],
           "grown_step": None, "grown_flops": None, "grown_wall_s": None, "flops_ratio": None, "wall_ratio": None,
           "grown_best_bpc": min(p["bpc"] for p in gr),
           "scratch_test_bpc": scratch["test_bpc"], "grown_test_bpc": grown["test_bpc"]}
    if b is not None:
        row.update(grown_step=b["step"], grown_flops=b["flops"], grown_wall_s=b["wall_s"],
                   flops_ratio=b["flops"] / a["flops"], wall_ratio=b["wall_s"] / a["wall_s"])
    return row


def _median(values: list) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def write(rows: list[dict], runs: list[dict], args, out: Path, command: Optional[str] = None) -> None:
    flops_med, wall_med = _median([r["flops_ratio"] for r in rows]), _median([r["wall_ratio"] for r in rows])
    here = " ".join(["python", "benchmarks/growth_compute.py", *sys.argv[1:]])
    data = {"command": command or here, **({"rows_from": here} if command else {}),
            "conventions": {"flops": "6 x forward MACs (graph.macs) x samples per training step",
                            "wall_s": "time in training steps and rewrites, evaluation excluded",
                            "threshold": "the scratch run's last validation bpc, averaged over the last "
                                         f"{args.window} evaluations; crossings on the same average"},
            "torch_threads": torch.get_num_threads(), "every": args.every, "window": args.window,
            "median_flops_ratio": flops_med, "median_wall_ratio": wall_med, "rows": rows, "runs": runs}
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    lines = ["# Growth saves compute? (benchmarks/growth_compute.py)", "",
             f"`{data['command']}`" + (f" (rows from `{here}`)" if command else "")
             + ", one CPU thread. The target (`benchmarks/configs/gpt_grow_target.yaml`, "
             f"{runs[0]['params']:,} parameters) trained from scratch against the same architecture grown from "
             "`gpt_grow_seed.yaml` by the staged, function-preserving rules of "
             "`benchmarks/configs/growth_compute_grown.yaml`. Cost until the first evaluation (every "
             f"{args.every} steps) whose validation bpc"
             + (f", averaged with the {args.window - 1} before it," if args.window > 1 else "")
             + " is at or below the scratch run's final one"
             + (" (averaged the same way)" if args.window > 1 else "") + "; FLOPs = 6 x forward MACs x "
             "samples; wall time = training steps and rewrites, evaluation excluded."
             + "".join(f" The {kind} run's overrides: `{json.dumps(run['settings'])}`, {run['epochs']} epochs."
                       for kind, run in (("scratch", runs[0]), ("grown", runs[1])) if run["settings"]), "",
             "| seed | threshold val bpc | scratch step | scratch GFLOPs | scratch wall s | grown step | grown GFLOPs "
             "| grown wall s | FLOPs grown/scratch | wall grown/scratch | test bpc scratch / grown |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]

    def num(v, fmt):
        return "never" if v is None else format(v, fmt)
    for r in rows:
        lines.append(f"| {r['seed']} | {r['threshold_bpc']:.4f} | {r['scratch_step']} | "
                     f"{r['scratch_flops'] / 1e9:,.0f} | {r['scratch_wall_s']:.1f} | {num(r['grown_step'], 'd')} | "
                     f"{num(r['grown_flops'] and r['grown_flops'] / 1e9, ',.0f')} | {num(r['grown_wall_s'], '.1f')} | "
                     f"{num(r['flops_ratio'], '.3f')} | {num(r['wall_ratio'], '.3f')} | "
                     f"{r['scratch_test_bpc']:.4f} / {r['grown_test_bpc']:.4f} |")
    lines += ["", f"Median FLOPs ratio {num(flops_med, '.3f')}, median wall-time ratio {num(wall_med, '.3f')} "
              f"(grown / scratch; below 1 the grown run is cheaper)."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scratch-epochs", type=int, default=6)
    ap.add_argument("--grown-epochs", type=int, default=7)
    ap.add_argument("--every", type=int, default=100, help="steps between evaluations of the validation bpc")
    ap.add_argument("--window", type=int, default=3, help="evaluations averaged before the threshold is applied")
    ap.add_argument("--scratch", type=Path, default=SCRATCH)
    ap.add_argument("--grown", type=Path, default=GROWN)
    ap.add_argument("--stage-steps", type=int, nargs="+", help="move the grown run's stages to these steps")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override of the grown run file (a YAML value), e.g. schedule.lr=0.003")
    ap.add_argument("--scratch-set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override of the scratch run file, e.g. schedule.lr_schedule=cosine")
    ap.add_argument("--scratch-cache", type=Path, help="a folder keeping the scratch runs (reused when present)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "growth_compute")
    ap.add_argument("--rescore", type=Path, help="recompute the rows from the runs of a results JSON, no training")
    args = ap.parse_args(argv)
    if args.rescore:
        old = json.loads(args.rescore.read_text())
        runs = old["runs"]
        rows = [compare(a, b, args.window, args.every) for a, b in zip(runs[::2], runs[1::2])]
        write(rows, runs, args, args.out, command=old.get("command"))
        return
    import yaml
    grown_settings = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    scratch_settings = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.scratch_set)}
    rows, runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            scratch = cached_train(args.scratch, Path(tmp) / f"scratch-{seed}", args.scratch_cache, seed=seed,
                                   epochs=args.scratch_epochs, every=args.every, settings=scratch_settings or None)
            grown = train(args.grown, Path(tmp) / f"grown-{seed}", seed=seed, epochs=args.grown_epochs,
                          every=args.every, settings=grown_settings, stage_steps=args.stage_steps)
            if grown["final_macs"] != scratch["final_macs"] or grown["params"] != scratch["params"]:
                raise SystemExit(f"the grown run ends in {grown['params']:,} parameters and {grown['final_macs']:,} "
                                 f"MACs, the target has {scratch['params']:,} and {scratch['final_macs']:,}")
            rows.append(compare(scratch, grown, args.window, args.every))
            runs += [scratch, grown]
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write(rows, runs, args, args.out)


if __name__ == "__main__":
    main()
