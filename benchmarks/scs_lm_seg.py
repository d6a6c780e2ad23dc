"""SCS on the LSTM language model and on segmentation with a U-Net, each against dense training of the same steps.

(a) **LM**: examples/text_lstm_scs.yaml (the bundled text, the 1-layer LSTM seed lstm_text.yaml: embedding 32,
    LSTM 64), shortened or lengthened by ``--lm-limit`` / ``--lm-epochs``, with SCS variants that differ only in the
    MAC ``budget`` (growth as in the example file). Baselines, trained dense for the same epochs on the same windows:
    the seed LSTM, and an LSTM of SCS's final shape (embedding and hidden size) from scratch. The goal's ratio is
    SCS's final parameters over the dense seed's, and its test bpc over the dense seed's.
(b) **Segmentation**: examples/digits_scenes_scs.yaml (the bundled digits' 32x32 scenes of 1-2 digits, 11 classes,
    the three-stage U-Net seed unet_scenes_deep.yaml; its data, epochs and schedule unless ``--seg-limit`` /
    ``--seg-epochs``) with SCS variants differing in ``budget`` (or named sets of settings, ``--seg-variants``),
    against the dense U-Net trained for the same epochs, and a dense U-Net with every hidden width times
    ``--seg-narrow`` (0.7: 48% of the MACs), which says what a network of the goal's size reaches in these epochs.
    The goal's ratio is SCS's final MACs over the dense U-Net's, and the mIoU difference in points.

Among the SCS variants the reported one is chosen on the validation split (LM: lowest val bpc among those with at
most half the dense seed's parameters, else lowest val bpc; segmentation: highest val mIoU among those with at most
half the dense MACs, else the fewest MACs); every variant is listed. One seed (CPU only, one thread).

    python benchmarks/scs_lm_seg.py      # writes benchmarks/results/scs_lm_seg.md and .json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import yaml  # noqa: E402

import archgraph  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
EXAMPLES = ROOT / "examples"


def run_config(example: str, *, epochs: Optional[int], limit: Optional[int], method: dict, seed: int = 0) -> dict:
    run = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
    run["seed"] = str((EXAMPLES / run["seed"]).resolve())
    if limit is not None:
        run["data"]["limit"] = limit
    run["schedule"].update(device="cpu", threads=1, seed=seed, **({"epochs": epochs} if epochs is not None else {}))
    run["method"] = method
    return run


def train(run: dict, work: Path, name: str) -> dict:
    t = time.perf_counter()
    summary = archgraph.grow(run, work / name, quiet=True)
    summary["bench_wall_s"] = round(time.perf_counter() - t, 1)
    versions = sorted((work / name / "versions").glob("*.yaml"))
    summary["final_yaml"] = versions[-1].read_text()
    return summary


def lm_part(args, work: Path) -> dict:
    rows, dense = scs_and_dense(args, work, "text_lstm_scs", "lm", args.lm_variants, args.lm_budgets,
                                epochs=args.lm_epochs, limit=args.lm_limit)
    dense = {"variant": "dense seed (embedding 32, LSTM 64)", **dense}
    chosen = _choose(rows, lambda r: r["params"] <= 0.5 * dense["params"], key=lambda r: r["val_bpc"])
    # the dense LSTM of SCS's final shape, from scratch
    text = chosen.pop("final_yaml_text")
    for r in rows:
        r.pop("final_yaml_text", None)
    path = work / "lm_final_shape.yaml"
    path.write_text(text)
    run = run_config("text_lstm_scs", epochs=args.lm_epochs, limit=args.lm_limit,
                     method={"name": "dense"}, seed=args.seed)
    run["seed"] = str(path)
    g = archgraph.load(path)
    shape = {n: {k: v for k, v in node.model_dump().items() if k in ("embedding_dim", "hidden_size")}
             for n, node in g.nodes.items() if n in ("embed", "lstm")}
    small = {"variant": f"dense, SCS's final shape {shape}", **_pick(train(run, work, "lm_dense_final"), "bpc")}
    small.pop("final_yaml_text")
    dense.pop("final_yaml_text")
    return {"settings": {"example": "examples/text_lstm_scs.yaml", "data.limit": args.lm_limit,
                         "epochs": args.lm_epochs, "budgets": args.lm_budgets, "overrides": args.overrides,
                         "seed": args.seed},
            "scs_variants": rows, "chosen": chosen, "dense_seed": dense, "dense_final_shape": small,
            "params_ratio": round(chosen["params"] / dense["params"], 4),
            "test_bpc_ratio": round(chosen["test_bpc"] / dense["test_bpc"], 4),
            "goal_met": chosen["params"] <= 0.5 * dense["params"] and chosen["test_bpc"] <= 1.02 * dense["test_bpc"]}


def seg_part(args, work: Path) -> dict:
    rows, dense = scs_and_dense(args, work, "digits_scenes_scs", "seg", args.seg_variants, args.seg_budgets,
                                epochs=args.seg_epochs, limit=args.seg_limit)
    dense = {"variant": "dense U-Net (the example's seed)", **dense}
    dense.pop("final_yaml_text")
    baselines = [dense]
    if args.seg_narrow:
        run = run_config("digits_scenes_scs", epochs=args.seg_epochs, limit=args.seg_limit,
                         method={"name": "dense"}, seed=args.seed)
        run["seed"] = str(narrow_seed(Path(run["seed"]), args.seg_narrow, work / "unet_narrow.yaml"))
        narrow = {"variant": f"dense U-Net, hidden widths x{args.seg_narrow}",
                  **_pick(train(run, work, "seg_dense_narrow"), "miou")}
        narrow.pop("final_yaml_text")
        baselines.append(narrow)
    chosen = _choose(rows, lambda r: r["macs"] <= 0.5 * dense["macs"], key=lambda r: -r["val_miou"],
                     fallback=lambda r: r["macs"])
    for r in rows:
        r.pop("final_yaml_text", None)
    chosen.pop("final_yaml_text", None)
    drop = round(100 * (dense["test_miou"] - chosen["test_miou"]), 2)
    return {"settings": {"example": "examples/digits_scenes_scs.yaml", "data.limit": args.seg_limit,
                         "epochs": args.seg_epochs, "budgets": args.seg_budgets, "overrides": args.overrides,
                         "seed": args.seed},
            "scs_variants": rows, "chosen": chosen, "dense": dense, "baselines": baselines,
            "macs_ratio": round(chosen["macs"] / dense["macs"], 4), "test_miou_drop_points": drop,
            "goal_met": chosen["macs"] <= 0.5 * dense["macs"] and drop <= 2.0}


def scs_and_dense(args, work: Path, example: str, part: str, named: str, budgets: list, *, epochs: Optional[int],
                  limit: Optional[int]) -> tuple[list[dict], dict]:
    """Every SCS variant of ``example`` and the example's seed trained dense, for the same epochs on the same data."""
    base = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())["method"]
    metric = "bpc" if part == "lm" else "miou"
    rows = []
    for i, (name, method) in enumerate(_variants(base, named, budgets, args.overrides)):
        run = run_config(example, epochs=epochs, limit=limit, method=method, seed=args.seed)
        rows.append({"variant": name, "budget": method.get("budget"),
                     **_pick(train(run, work, f"{part}_scs_{i}"), metric)})
    run = run_config(example, epochs=epochs, limit=limit, method={"name": "dense"}, seed=args.seed)
    dense_name = "lm_dense_seed" if part == "lm" else "seg_dense"
    return rows, _pick(train(run, work, dense_name), metric)


def _variants(base: dict, named: str, budgets: list, overrides: dict) -> list[tuple[str, dict]]:
    """The SCS settings to run: JSON ``{"name": {setting: value}}`` over the example's method, else one per budget."""
    if named:
        return [(name, {**base, **overrides, **over}) for name, over in json.loads(named).items()]
    return [(f"scs budget={b}", {**base, "budget": b, **overrides}) for b in budgets]


def narrow_seed(seed: Path, factor: float, out: Path) -> Path:
    """``seed`` with the out_channels of every layer but the output layer times ``factor`` (rounded)."""
    spec = yaml.safe_load(seed.read_text())
    for nid, node in spec["nodes"].items():
        if "out_channels" in node and nid not in spec["outputs"]:
            node["out_channels"] = max(1, round(node["out_channels"] * factor))
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def _pick(s: dict, metric: str) -> dict:
    keys = ["params", "macs", "epochs", "steps", "growth_events", "prune_events", "bench_wall_s",
            f"val_{metric}", f"test_{metric}"]
    out = {k: s.get(k) for k in keys}
    out["final_yaml_text"] = s["final_yaml"]
    return out


def _choose(rows, ok, key, fallback=None):
    fine = [r for r in rows if ok(r)]
    pool = fine or rows
    best = min(pool, key=key if fine or fallback is None else fallback)
    return dict(best)


def markdown(res: dict) -> str:
    lm, seg = res.get("lm"), res.get("seg")
    lines = ["# SCS on the LSTM language model and on segmentation (U-Net)", "",
             f"Command: `{res['command']}` (CPU, one thread, one seed; {res['torch']}).", ""]
    if lm:
        st = lm["settings"]
        lines += [f"## LSTM LM (bundled text, {st['example']}, data.limit={st['data.limit']}, "
                  f"{st['epochs']} epochs, SCS overrides {st['overrides'] or 'none'})", "",
                  "| run | params | MACs | val bpc | test bpc | growths | prunes | wall s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in lm["scs_variants"] + [lm["dense_seed"], lm["dense_final_shape"]]:
            lines.append(f"| {r['variant']} | {r['params']} | {r['macs']} | {r['val_bpc']:.4f} | {r['test_bpc']:.4f} | "
                         f"{r['growth_events']} | {r['prune_events']} | {r['bench_wall_s']} |")
        lines += ["", f"Chosen on val: **{lm['chosen']['variant']}**: parameters {lm['params_ratio']:.1%} of the dense "
                      f"seed's, test bpc x{lm['test_bpc_ratio']:.4f} (goal <= 50% within 2%: "
                      f"{'met' if lm['goal_met'] else 'missed'}).", ""]
    if seg:
        st = seg["settings"]
        lines += [f"## Segmentation (digits_scenes 32x32, {st['example']}, data.limit={st['data.limit']}, "
                  f"{st['epochs']} epochs, SCS overrides {st['overrides'] or 'none'})", "",
                  "| run | params | MACs | val mIoU | test mIoU | growths | prunes | wall s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in seg["scs_variants"] + seg.get("baselines", [seg["dense"]]):
            lines.append(f"| {r['variant']} | {r['params']} | {r['macs']} | {r['val_miou']:.4f} | "
                         f"{r['test_miou']:.4f} | {r['growth_events']} | {r['prune_events']} | {r['bench_wall_s']} |")
        lines += ["", f"Chosen on val: **{seg['chosen']['variant']}**: MACs {seg['macs_ratio']:.1%} of the dense "
                      f"U-Net's, test mIoU {seg['test_miou_drop_points']:+.2f} points below it (goal >= 50% fewer "
                      f"MACs within two points: {'met' if seg['goal_met'] else 'missed'}).", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lm-epochs", type=int, default=16)
    p.add_argument("--lm-limit", type=int, default=3000)
    p.add_argument("--lm-budgets", type=float, nargs="+", default=[0.4, 0.3])
    p.add_argument("--lm-variants", help='SCS variants as JSON {"name": {setting: value}} over the example\'s '
                                         'method (instead of --lm-budgets)')
    p.add_argument("--seg-epochs", type=int, help="epochs of every segmentation run (default: the example's, 15)")
    p.add_argument("--seg-limit", type=int, help="training scenes (default: the example's, 2000)")
    p.add_argument("--seg-budgets", type=float, nargs="+", default=[0.4, 0.3])
    p.add_argument("--seg-variants", help='SCS variants as JSON {"name": {setting: value}} over the example\'s '
                                          'method (instead of --seg-budgets)')
    p.add_argument("--seg-narrow", type=float, default=0.7,
                   help="width factor of the narrow dense U-Net baseline (0: none)")
    p.add_argument("--penalty", type=float, help="SCS penalty for every variant (default: the example file's)")
    p.add_argument("--max-growths", type=int, help="SCS max_growths for every variant (default: the example's)")
    p.add_argument("--seed", type=int, default=0, help="schedule.seed of every run (initialisation, batches, val "
                                                        "split; default 0, the example's)")
    p.add_argument("--tag", default="", help="suffix of the result files")
    p.add_argument("--only", choices=["lm", "seg"])
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    args.overrides = {k: v for k, v in (("penalty", args.penalty), ("max_growths", args.max_growths))
                      if v is not None}
    import torch
    torch.set_num_threads(1)
    import shlex
    res = {"command": "python benchmarks/scs_lm_seg.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
           "torch": f"torch {torch.__version__}"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only in (None, "lm"):
            res["lm"] = lm_part(args, work)
        if args.only in (None, "seg"):
            res["seg"] = seg_part(args, work)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "_".join(["scs_lm_seg", *([args.only] if args.only else []), *([args.tag] if args.tag else [])])
    (args.out / f"{name}.json").write_text(json.dumps(res, indent=1))
    (args.out / f"{name}.md").write_text(markdown(res))
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
