"""Tied LM heads widened by HyperCloning, exported back and loaded: the float64 errors of
``tests/test_growth_hf.py``'s tied checks, printed.

Small GPT-2 and Llama configs with ``tie_word_embeddings: true`` (random weights, ``save_pretrained`` to a temporary
folder) go through the CLI: ``import hf:DIR``, ``apply add_filters init=clone`` doubling the stream (GPT-2's heads
doubled with it: its class needs head_dim x heads = hidden), ``export --hf``; a tied Gemma 2 grows as in the test
(2x stream, two more kv groups and 16 more MLP channels per layer). Each loaded model's logits against the original
model's, as max|diff| / max(1, max|y|), and whether the loaded head is the embedding's tensor.

    PYTHONPATH=. python benchmarks/tied_growth_errors.py
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_hf_roundtrip import inputs, load, run, saved  # noqa: E402

import archgraph  # noqa: E402
from archgraph import rules  # noqa: E402
from archgraph.cli import main  # noqa: E402
from archgraph.fx.apply_plan import transfer_state  # noqa: E402
from archgraph.fx.builder import build  # noqa: E402
from archgraph.interop import hf  # noqa: E402
from archgraph.interop.hf_export import to_pretrained  # noqa: E402


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max()) / max(1.0, float(want.abs().max()))


def cli_grown(model_type: str, tmp: Path) -> None:
    model, folder = saved(tmp, model_type, True, tie_word_embeddings=True)
    table = "wte" if model_type == "gpt2" else "embed_tokens"
    a, b, out = tmp / "a", tmp / "b", tmp / "o"
    with contextlib.redirect_stdout(io.StringIO()):
        main(["import", f"hf:{folder}", "-o", str(a)])
        width = archgraph.load(a / "graph.yaml").nodes[table].embedding_dim
        main(["apply", str(a / "graph.yaml"), "add_filters", f"node={table}", f"count={width}", "init=clone",
              "--weights", str(a / "weights.safetensors"), "-o", str(b)])
        for i in range(2 if model_type == "gpt2" else 0):
            step = tmp / f"heads_{i}"
            main(["apply", str(b / "graph.yaml"), "add_heads", f"node=h_{i}_attn", "count=4", "--weights",
                  str(b / "weights.safetensors"), "-o", str(step)])
            b = step
        main(["export", str(b / "graph.yaml"), "--weights", str(b / "weights.safetensors"), "--hf", str(out)])
    back = load(out, True)
    tied = back.get_output_embeddings().weight is back.get_input_embeddings().weight
    for t in (1, 7):
        x = inputs(model_type, t)
        print(f"{model_type}: hidden {width} -> {back.config.hidden_size}, tied {tied}, T={t}: "
              f"{rel(run(back, x, True), run(model, x, True)):.2e}")


def gemma_grown(tmp: Path) -> None:
    model, folder = saved(tmp, "gemma2", True, tie_word_embeddings=True, attn_logit_softcapping=1.5,
                          final_logit_softcapping=2.0)
    graph, weights = hf.from_pretrained(folder)
    for rule in [rules.AddFilters(node="embed_tokens", count=32, init="clone"),
                 *(rules.AddHeads(node=f"layers_{i}_self_attn", count=4) for i in range(2)),
                 *(rules.AddFilters(node=f"layers_{i}_mlp_gate_proj", count=16) for i in range(2))]:
        rw = archgraph.apply(graph, rule)
        fresh = build(rw.graph, dtype=torch.float64, seed=1).state_dict()
        graph, weights = rw.graph, transfer_state(rw.plan, weights, fresh)
    with contextlib.redirect_stdout(io.StringIO()):
        out = to_pretrained(graph, weights, tmp / "out", json.loads((folder / "config.json").read_text()), folder)
    back = load(out, True)
    tied = back.get_output_embeddings().weight is back.get_input_embeddings().weight
    for t in (3, 9):
        x = inputs("gemma2", t)
        print(f"gemma2: hidden 32 -> {back.config.hidden_size}, tied {tied}, T={t}: "
              f"{rel(run(back, x, True), run(model, x, True)):.2e}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    for family in ("gpt2", "llama"):
        cli_grown(family, Path(tempfile.mkdtemp()))
    gemma_grown(Path(tempfile.mkdtemp()))
