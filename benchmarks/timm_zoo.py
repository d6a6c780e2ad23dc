"""timm coverage: import, check, and prune a seeded sample of timm's architectures, side by side with Torch-Pruning.

The sample: ``timm.list_models()`` shuffled with ``random.Random(seed)``, then taken round-robin over timm's model
families (the module that defines each architecture: ``resnet``, ``efficientnet``, ``vision_transformer``, ...), so
every family is in it before any family has two. Each model is built with random weights
(``timm.create_model(name, pretrained=False, num_classes=10)``; nothing is downloaded), its norms and scales
randomised so every layer shows in the output, and then, within a per-model time limit:

  import:      archgraph.from_module at 3xSxS (S = --size; a model that does not run at S is tried with
               ``img_size=S``, then at its own default input size), and the error when it fails
  equivalence: the converted graph built and run in float64 against the original in float64 (max abs error,
               relative to the largest output; exact when it is at most 1e-9)
  pruning:     archgraph.prune(graph, weights, ratio=0.5, criterion="l2") and Torch-Pruning's
               MetaPruner(MagnitudeImportance(p=2), pruning_ratio=0.5, ignored_layers=[model.get_classifier()])
               on the original; each is ok when it returns and the pruned model runs with the right output shape
               (params after, wall time of the pruning call)

Models over --max-params are skipped (listed as skipped, not counted as failures).

    python benchmarks/timm_zoo.py                        # 160 models at 64x64 -> benchmarks/results/timm_zoo.*
    python benchmarks/timm_zoo.py --models resnet18,efficientnet_b0 --no-prune
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import json
import random
import re
import signal
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from run_rows import write_tables  # noqa: E402

import archgraph  # noqa: E402
from archgraph.compat import import_timm  # noqa: E402
from archgraph.fx.builder import build  # noqa: E402
from archgraph.fx.weights import load_into  # noqa: E402
from archgraph.interop.equivalence import randomize_normalization  # noqa: E402
from archgraph.interop.importer import from_module  # noqa: E402

CLASSES = 10


def family(name: str) -> str:
    timm = import_timm()
    return timm.models.model_entrypoint(name).__module__.rpartition(".")[2]


def meta_params(name: str) -> int:
    """The parameter count of ``name``, built on the meta device (no memory, no initialisation); -1 if that fails."""
    timm = import_timm()
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = timm.create_model(name, pretrained=False, num_classes=CLASSES)
        return sum(p.numel() for p in model.parameters())
    except Exception:
        return -1


def sample(count: int, seed: int, max_params: float) -> tuple[list[str], list[str]]:
    """(``count`` names of at most ``max_params`` parameters, the larger ones passed over on the way): a seeded
    shuffle of timm's list, taken round-robin over the families."""
    timm = import_timm()
    names = timm.list_models()
    random.Random(seed).shuffle(names)
    by_family: dict[str, list[str]] = collections.defaultdict(list)
    for n in names:
        by_family[family(n)].append(n)
    queues = list(by_family.values())
    chosen: list[str] = []
    large: list[str] = []
    while len(chosen) < count and any(queues):
        for q in queues:
            if q and len(chosen) < count:
                name = q.pop(0)
                (chosen if meta_params(name) <= max_params else large).append(name)
    return chosen, large


class Timeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int):
    def handler(signum, frame):
        raise Timeout(f"over the {seconds}s time limit")
    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def short(err: BaseException, n: int = 300) -> str:
    text = str(err).replace("\n", " ")
    return f"{type(err).__name__}: {text[:n]}"


def create(name: str, size: int):
    """(model, input size it runs at), or raises."""
    timm = import_timm()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model(name, pretrained=False, num_classes=CLASSES).eval()
        default = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))[-1]
        attempts = [(lambda: model, size),
                    (lambda: timm.create_model(name, pretrained=False, num_classes=CLASSES, img_size=size).eval(),
                     size),
                    (lambda: model, default)]
        last = None
        for factory, s in attempts:
            try:
                m = factory()
                with torch.no_grad():
                    y = m(torch.randn(1, 3, s, s))
                if tuple(y.shape) == (1, CLASSES):
                    return m, s
                last = RuntimeError(f"output shape {list(y.shape)}")
            except Exception as err:
                last = err
        raise RuntimeError(f"the model does not run at {size}x{size} nor its default size: {short(last, 160)}")


def prune_ag(graph, weights, x) -> dict:
    t = time.perf_counter()
    g2, w2 = archgraph.prune(graph, weights, ratio=0.5, criterion="l2")
    seconds = time.perf_counter() - t
    module = build(g2)
    load_into(module, w2)
    with torch.no_grad():
        y = module.eval()(x)
    if tuple(y.shape) != (x.shape[0], CLASSES):
        raise RuntimeError(f"pruned output shape {list(y.shape)}")
    return {"ok": True, "params": g2.params, "seconds": seconds}


def prune_tp(model, x) -> dict:
    import torch_pruning as tp
    pruned = copy.deepcopy(model)
    head = pruned.get_classifier() if hasattr(pruned, "get_classifier") else None
    ignored = [m for m in ([head] if isinstance(head, torch.nn.Module) else []) if any(True for _ in m.parameters())]
    t = time.perf_counter()
    pruner = tp.pruner.MetaPruner(pruned, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
                                  ignored_layers=ignored)
    pruner.step()
    seconds = time.perf_counter() - t
    with torch.no_grad():
        y = pruned.eval()(x)
    if tuple(y.shape) != (x.shape[0], CLASSES):
        raise RuntimeError(f"pruned output shape {list(y.shape)}")
    return {"ok": True, "params": sum(p.numel() for p in pruned.parameters()), "seconds": seconds}


def bench(name: str, size: int, limit: int, max_params: float, prune: bool) -> dict:
    row: dict = {"model": name, "family": family(name)}
    try:
        with time_limit(limit):
            model, s = create(name, size)
    except Exception as err:
        row.update(status="not run", error=short(err))
        return row
    params = sum(p.numel() for p in model.parameters())
    row.update(params=params, size=s)
    if params > max_params:
        row.update(status="skipped", error=f"{params / 1e6:.1f}M params > {max_params / 1e6:.0f}M")
        return row
    randomize_normalization(model)
    x = torch.randn(2, 3, s, s)
    t = time.perf_counter()
    try:
        with time_limit(limit):
            graph, weights = from_module(model, input_shape=(3, s, s), name=name)
    except Exception as err:
        row.update(status="tried", import_ok=False, error=short(err))
    else:
        row.update(status="tried", import_ok=True, import_s=time.perf_counter() - t, nodes=len(graph.nodes),
                   graph_params=graph.params)
        try:
            with time_limit(limit):
                built = build(graph)
                load_into(built, weights)
                built = built.eval().double()
                reference = copy.deepcopy(model).double()
                with torch.no_grad():
                    want, got = reference(x.double()), built(x.double())
            err = float((want - got).abs().max())
            scale = float(want.abs().max())
            row.update(max_error=err, output_scale=scale, exact=err <= 1e-9 * max(1.0, scale))
        except Exception as err:
            row.update(exact=False, check_error=short(err))
        if prune:
            try:
                with time_limit(limit):
                    row["ag"] = prune_ag(graph, weights, x[:1])
            except Exception as err:
                row["ag"] = {"ok": False, "error": short(err, 160)}
    if prune:
        try:
            with time_limit(limit):
                row["tp"] = prune_tp(model, x[:1])
        except Exception as err:
            row["tp"] = {"ok": False, "error": short(err, 160)}
    return row


def error_kind(text: str) -> str:
    """A short label for an error message, for the tally."""
    text = text or ""
    for marker in ("cannot convert ", "torch.fx cannot trace", "torch.export"):
        if marker in text:
            rest = text.split(marker, 1)[1]
            return (marker + rest.split(":")[0])[:90]
    return text[:90]


def tables(rows: list[dict], args, large: list[str]) -> str:
    tried = [r for r in rows if r["status"] == "tried"]
    imported = [r for r in tried if r.get("import_ok")]
    exact = [r for r in imported if r.get("exact")]
    ag = [r for r in tried if r.get("ag", {}).get("ok")]
    tp = [r for r in tried if r.get("tp", {}).get("ok")]
    skipped = [r for r in rows if r["status"] == "skipped"]
    not_run = [r for r in rows if r["status"] == "not run"]
    fams = sorted({r["family"] for r in rows})
    fams_ok = sorted({r["family"] for r in imported})
    out = [f"timm {import_timm().__version__}, {len(rows)} architectures from {len(fams)} families (seed "
           f"{args.seed}, round-robin over families), random weights, {args.size}x{args.size} input where the model "
           f"runs at it, time limit {args.limit}s per step.", "",
           f"- passed over while sampling (over {args.max_params / 1e6:.0f}M params, or not buildable): "
           f"{len(large)}",
           f"- tried: {len(tried)} (skipped over {args.max_params / 1e6:.0f}M params: {len(skipped)}; not runnable "
           f"at {args.size}x{args.size} or their default size: {len(not_run)})",
           f"- archgraph imported: {len(imported)}/{len(tried)} ({len(fams_ok)} families); exact in float64 "
           f"(max error <= 1e-9 x max(1, max |y|)): {len(exact)}/{len(imported)}"]
    if not args.no_prune:
        out += [f"- pruned at ratio 0.5: archgraph {len(ag)}/{len(tried)}, Torch-Pruning {len(tp)}/{len(tried)}",
                f"- both: {sum(1 for r in tried if r.get('ag', {}).get('ok') and r.get('tp', {}).get('ok'))}; "
                f"archgraph only: {sum(1 for r in ag if not r.get('tp', {}).get('ok'))}; Torch-Pruning only: "
                f"{sum(1 for r in tp if not r.get('ag', {}).get('ok'))}"]
    if not args.no_prune:
        out += ["", *family_table(tried)]
    tally = collections.Counter(error_kind(r.get("error", "")) for r in tried if not r.get("import_ok"))
    out += ["", "Import failures by first error:", "", "| count | error |", "|---:|---|"]
    out += [f"| {n} | {k.replace('|', '/')} |" for k, n in tally.most_common()]
    out += ["", "| model | family | params | size | import | max error | AG prune | AG params | TP prune | TP params "
                "| error |", "|---|---|---:|---:|:---:|---:|:---:|---:|:---:|---:|---|"]
    for r in rows:
        p = f"{r['params'] / 1e6:.2f}M" if "params" in r else "-"
        if r["status"] != "tried":
            out.append(f"| {r['model']} | {r['family']} | {p} | {r.get('size', '-')} | {r['status']} | - | - | - | - "
                       f"| - | {r.get('error', '')[:100].replace('|', '/')} |")
            continue
        cells = [r["model"], r["family"], p, str(r["size"]), "yes" if r.get("import_ok") else "no",
                 f"{r['max_error']:.1e}" if "max_error" in r else "-"]
        for key in ("ag", "tp"):
            q = r.get(key, {})
            cells += ["yes" if q.get("ok") else ("no" if q else "-"),
                      f"{q['params'] / 1e6:.2f}M" if q.get("ok") else "-"]
        cells.append(error_cell(r))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def family_counts(tried: list[dict]) -> dict[str, tuple[int, int, int]]:
    """Per family: (models tried, pruned by archgraph, pruned by Torch-Pruning)."""
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for r in tried:
        c = counts[r["family"]]
        c[0] += 1
        c[1] += bool(r.get("ag", {}).get("ok"))
        c[2] += bool(r.get("tp", {}).get("ok"))
    return {f: tuple(c) for f, c in counts.items()}


def behind(counts: dict[str, tuple[int, int, int]]) -> str:
    """The sentence naming the families where Torch-Pruning prunes more models than archgraph."""
    names = sorted(f for f, (_, ag, tp) in counts.items() if tp > ag)
    return f"families where Torch-Pruning prunes more models than archgraph: {', '.join(names) or 'none'} " \
           f"(of {len(counts)})."


def family_table(tried: list[dict]) -> list[str]:
    """Per family: the models tried and how many each tool pruned, the families where Torch-Pruning prunes more
    first (then by name)."""
    counts = family_counts(tried)
    sentence = behind(counts)
    order = sorted(counts, key=lambda f: (counts[f][2] <= counts[f][1], f))
    return [sentence[0].upper() + sentence[1:], "", "| family | tried | archgraph pruned | Torch-Pruning pruned |",
            "|---|---:|---:|---:|", *(f"| {f} | {' | '.join(map(str, counts[f]))} |" for f in order)]


def merge_rows(old: list[dict], new: list[dict], key=lambda r: r["model"]) -> list[dict]:
    """``old`` with each row of ``new`` in the place of the row of the same ``key`` (appended when it is new)."""
    fresh = {key(r): r for r in new}
    merged = [fresh.pop(key(r), r) for r in old]
    return merged + [r for r in new if key(r) in fresh]


def passed_over(md: Path) -> int:
    """The count of models passed over while sampling, as an earlier run's tables state it (0 if they do not)."""
    if md.exists():
        for line in md.read_text().splitlines():
            if line.startswith("- passed over while sampling"):
                return int(line.rsplit(" ", 1)[1])
    return 0


def earlier_limit(md: Path, default: int) -> int:
    """The time limit an earlier run's tables state (``default`` if they do not)."""
    found = re.search(r"time limit (\d+)s per step", md.read_text()) if md.exists() else None
    return int(found.group(1)) if found else default


def error_cell(row: dict) -> str:
    """A table cell with a row's import error and each tool's pruning error (shortened, no '|')."""
    errs = [row.get("error", "")] + [f"{k.upper()}: {row[k]['error']}" for k in ("ag", "tp")
                                     if row.get(k, {}).get("error")]
    return "; ".join(e for e in errs if e)[:160].replace("|", "/")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", help="comma-separated names instead of the sample")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--limit", type=int, default=120, help="seconds per model and step")
    p.add_argument("--max-params", type=float, default=30e6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-prune", action="store_true")
    p.add_argument("--from-log", metavar="LOG", help="write the tables from the rows of an earlier run's stderr log "
                                                   "(a partial run included) instead of running")
    p.add_argument("--update", metavar="JSON", help="run --models and put their rows in place of the same models' "
                                                    "rows of an earlier run's JSON, then rewrite it and its .md")
    p.add_argument("--out", help="OUT.md and OUT.json (default benchmarks/results/timm_zoo for the full sample)")
    args = p.parse_args(argv)
    if args.update and not args.models:
        p.error("--update needs --models (the models to run again)")
    torch.set_num_threads(args.threads)
    if args.from_log:
        rows = [json.loads(line.split(" ", 2)[2]) for line in Path(args.from_log).read_text().splitlines()
                if line.split(" ", 2)[1:2] and line.split(" ", 2)[1].endswith("s") and line.endswith("}")
                and line.split(" ", 2)[0].endswith(":")]
        large = []
        for line in Path(args.from_log).read_text().splitlines():
            if line.startswith("sample: "):
                large = ["?"] * int(line.rsplit(" ", 1)[1])
        text = (f"From the log {Path(args.from_log).name}: {len(rows)} models (a run stopped or still running "
                f"shows only those it finished).\n\n" + tables(rows, args, large))
        if args.out:
            Path(args.out).with_suffix(".md").write_text(text)
            Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1, default=str))
        print(text)
        return 0
    if args.models:
        names, large = args.models.split(","), []
    else:
        names, large = sample(args.count, args.seed, args.max_params)
    print(f"sample: {len(names)} models; passed over (> {args.max_params / 1e6:.0f}M params or not buildable): "
          f"{len(large)}", file=sys.stderr, flush=True)
    rows = []
    for name in names:
        t = time.perf_counter()
        try:
            row = bench(name, args.size, args.limit, args.max_params, not args.no_prune)
        except Exception as err:  # the benchmark itself must go on
            row = {"model": name, "family": "?", "status": "not run", "error": f"benchmark crashed: {short(err)}"}
        rows.append(row)
        print(f"{name}: {time.perf_counter() - t:.1f}s {json.dumps(row, default=str)}", file=sys.stderr, flush=True)
    if args.update:
        rows = merge_rows(json.loads(Path(args.update).read_text()), rows)
        args.out = args.out or str(Path(args.update).with_suffix(""))
        large = ["?"] * passed_over(Path(args.update).with_suffix(".md"))
        rerun_limit, args.limit = args.limit, earlier_limit(Path(args.update).with_suffix(".md"), args.limit)
    text = tables(rows, args, large)
    if args.update:
        text = (f"Rows of an earlier run, with those of {', '.join(names)} replaced by a rerun (`--update`, time "
                f"limit {rerun_limit}s per step).\n\n" + text)
    out = Path(args.out) if args.out else (Path("benchmarks/results/timm_zoo") if not args.models else None)
    write_tables(out, text, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
