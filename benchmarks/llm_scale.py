"""Memory and time of archgraph on language models of real size, against Torch-Pruning on the same model.

Each row runs in its own process (its peak resident memory, ``ru_maxrss``, is that step's alone) on a model built
from a real config with random bfloat16 weights and saved locally first (nothing is downloaded):

    baseline       torch, transformers and archgraph imported, no model: the memory every row starts from
    setup          the Hugging Face model saved with save_pretrained (not timed against anything)
    import         archgraph import hf:DIR
    prune_heads    archgraph prune --ratio 0.5 --heads        (half the heads, MLP and stream channels)
    prune_uniform  archgraph prune --ratio 0.5 --heads --uniform
    export_hf      archgraph export --hf (of prune_heads' result)
    torch_pruning  Torch-Pruning's MetaPruner on the Hugging Face model, the same ratio with its heads
                   (run with a time limit: it may not finish)

Each row reports its wall ``seconds`` and ``cpu_seconds`` (user + system, all threads: on a shared machine the
wall time also measures the others' load). Peak RSS is reported as a ratio to the weights' bytes (the
checkpoint's safetensors size), whole and above the baseline row's (the libraries' own memory, which a small
model's ratio would otherwise mostly measure).

    python benchmarks/llm_scale.py --model qwen2.5-0.5b --work /tmp/llm_scale [--rows import,prune_heads]
    python benchmarks/llm_scale.py --model llama-3.2-1b --work /tmp/llm_scale --tp-limit 1500
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: the real configs' sizes (Llama-3.2-1B's and Qwen2.5-0.5B's config.json)
CONFIGS = {
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                         max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         bos_token_id=128000, eos_token_id=128001, hidden_act="silu",
                         rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 8192}),
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                         max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
                         bos_token_id=151643, eos_token_id=151643, hidden_act="silu",
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
}
ROWS = ("baseline", "setup", "import", "prune_heads", "prune_uniform", "export_hf", "torch_pruning")
SEQ_LEN = 256


def cpu_seconds() -> float:
    """User plus system CPU seconds of this process, all its threads: on a shared machine the wall time also
    counts the other processes' load; this does not."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 1)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: KiB


def weights_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def run_row(row: str, model: str, work: Path, ratio: float) -> dict:
    """One step in this process; returns its seconds (and what it produced)."""
    import torch

    from archgraph.cli import main
    hf_dir, imported, pruned, uniform, exported = (work / model / n for n in
                                                  ("hf", "imported", "pruned", "uniform", "exported"))
    start = time.perf_counter()
    if row == "baseline":   # the libraries alone: what every row's peak includes before any weight
        from archgraph.compat import import_transformers
        import_transformers().AutoConfig
        import archgraph.interop.hf  # noqa: F401
        return {"seconds": time.perf_counter() - start}
    if row == "setup":
        from archgraph.compat import import_transformers
        tr = import_transformers()
        config = tr.AutoConfig.for_model(**CONFIGS[model])
        config.architectures = [f"{type(config).__name__.removesuffix('Config')}ForCausalLM"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            m = tr.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        m.save_pretrained(hf_dir)
        return {"seconds": time.perf_counter() - start, "params": sum(p.numel() for p in m.parameters())}
    if row == "import":
        code = main(["import", f"hf:{hf_dir}", "--seq-len", str(SEQ_LEN), "--force", "-o", str(imported)])
    elif row in ("prune_heads", "prune_uniform"):
        out = pruned if row == "prune_heads" else uniform
        code = main(["prune", str(imported / "graph.yaml"), "--weights", str(imported / "weights.safetensors"),
                     "--ratio", str(ratio), "--heads", "-q", "--force", "-o", str(out)]
                    + (["--uniform"] if row == "prune_uniform" else []))
    elif row == "export_hf":
        import shutil
        shutil.rmtree(exported, ignore_errors=True)
        code = main(["export", str(pruned / "graph.yaml"), "--weights", str(pruned / "weights.safetensors"),
                     "--hf", str(exported)])
    elif row == "torch_pruning":
        return torch_pruning_row(hf_dir, ratio, start)
    else:
        raise SystemExit(f"unknown row {row}")
    return {"seconds": time.perf_counter() - start, "exit": code}


def torch_pruning_row(hf_dir: Path, ratio: float, start: float) -> dict:
    """Torch-Pruning's documented recipe for Hugging Face LLMs (its examples/LLMs): MetaPruner with the attention
    heads as head groups, the same ratio, magnitude importance, the LM head left out."""
    import torch
    import torch_pruning as tp

    from archgraph.compat import import_transformers
    tr = import_transformers()
    model = tr.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.bfloat16).eval()
    model.config.use_cache = False
    cfg = model.config
    heads = {m.q_proj: cfg.num_attention_heads for m in model.modules() if hasattr(m, "q_proj")}
    heads.update({m.k_proj: cfg.num_key_value_heads for m in model.modules() if hasattr(m, "k_proj")})
    heads.update({m.v_proj: cfg.num_key_value_heads for m in model.modules() if hasattr(m, "v_proj")})
    example = torch.randint(0, cfg.vocab_size, (1, 16))
    result = {}
    for with_heads in (True, False):   # Torch-Pruning 1.6.0 fails on grouped-query heads: then channels only
        try:
            pruner = tp.pruner.MetaPruner(
                model, example_inputs=example, importance=tp.importance.MagnitudeImportance(p=2),
                global_pruning=False, pruning_ratio=ratio, ignored_layers=[model.lm_head],
                num_heads=heads if with_heads else {}, prune_num_heads=with_heads, prune_head_dims=False,
                head_pruning_ratio=ratio if with_heads else 0.0, output_transform=lambda out: out.logits)
            pruner.step()
            result["heads"] = with_heads
            break
        except Exception as err:   # noqa: BLE001 - reported in the row
            result[f"error_{'heads' if with_heads else 'channels'}"] = f"{type(err).__name__}: {err}"[:200]
            if not with_heads:
                raise
    return {**result, "seconds": time.perf_counter() - start,
            "params_after": sum(p.numel() for p in model.parameters())}


def drive(args) -> None:
    work = Path(args.work)
    (work / args.model).mkdir(parents=True, exist_ok=True)
    rows = args.rows.split(",") if args.rows else list(ROWS)
    results = []
    for row in rows:
        limit = args.tp_limit if row == "torch_pruning" else args.limit
        cmd = [sys.executable, __file__, "--model", args.model, "--work", str(work), "--ratio", str(args.ratio),
               "--one", row]
        t0 = time.perf_counter()
        try:
            # a billion-parameter graph is over archgraph's default sanity limit on parameters: raised here
            env = {"ARCHGRAPH_MAX_PARAMS": str(10 ** 11), **os.environ, "PYTHONPATH": str(ROOT)}
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
            result = json.loads(lines[-1]) if lines else {"error": done.stderr.strip().splitlines()[-1:]}
            if result.get("exit") not in (None, 0):   # the CLI's one-line error says why
                result["error"] = [ln for ln in done.stderr.splitlines() if "error" in ln][-1:]
        except subprocess.TimeoutExpired:
            result = {"row": row, "timeout_s": limit, "seconds": time.perf_counter() - t0}
        wb = weights_bytes(work / args.model / "hf")
        if "peak_rss" in result and wb:
            result["rss_over_weights"] = round(result["peak_rss"] / wb, 2)
            base = next((r["peak_rss"] for r in results if r.get("row") == "baseline" and "peak_rss" in r), None)
            if base is not None:
                result["above_baseline_over_weights"] = round((result["peak_rss"] - base) / wb, 2)
        result.update(row=row, model=args.model, weights_bytes=wb)
        results.append(result)
        print(json.dumps(result), flush=True)
    out = ROOT / "benchmarks" / "results" / f"llm_scale_{args.model}.json"
    kept = json.loads(out.read_text()) if out.exists() else []       # rows run earlier stay unless run again
    ran = {r["row"] for r in results}
    results = [r for r in kept if r.get("row") not in ran] + results
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(CONFIGS), default="qwen2.5-0.5b")
    p.add_argument("--work", default="/tmp/llm_scale")
    p.add_argument("--rows", default=None, help=f"comma-separated, of {', '.join(ROWS)} (default all)")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--limit", type=float, default=3600, help="seconds per archgraph row")
    p.add_argument("--tp-limit", type=float, default=1500, help="seconds for Torch-Pruning (default 25 min)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        result = run_row(args.one, args.model, Path(args.work), args.ratio)
        print(json.dumps({**result, "peak_rss": peak_rss(), "cpu_seconds": cpu_seconds()}), flush=True)
        return
    drive(args)


if __name__ == "__main__":
    main()
