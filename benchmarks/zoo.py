"""archgraph side by side with Torch-Pruning over three model zoos, and head pruning on three transformers.

(a) Coverage, per family, for both tools (random weights; nothing is downloaded):

  torchvision: every classification model of ``torchvision.models.list_models(module=torchvision.models)``, built
               with ``num_classes=10`` (norms randomised, and parameters left at zero, a fresh ViT's class token,
               attention biases and head, given small random values) and run at the first of --sizes (64, 96,
               128, 224 px) it runs at; models over --max-params are skipped and listed. archgraph:
               ``from_module`` (exact in float64 against the model),
               then ``archgraph.prune(ratio=0.5, criterion="l2")``; Torch-Pruning: ``MetaPruner(MagnitudeImportance(
               p=2), pruning_ratio=0.5, ignored_layers=[classifier])`` (and ``num_heads`` of every
               ``nn.MultiheadAttention``, as its torchvision example rounds ViT channels to heads); each is ok when
               the call returns and the pruned model runs with the right output shape.
  timm:        read from benchmarks/results/timm_zoo.json (benchmarks/timm_zoo.py: the same steps over a seeded
               round-robin sample of timm's list).
  HF:          GPT-2, BERT, Llama, ViT (small configs, ``archgraph.interop.hf.SMALL``): archgraph
               ``hf.from_config`` (exact in float64) then ``archgraph.prune(ratio=0.5, heads=True)``; Torch-Pruning
               as its own transformers examples do: ``BasePruner(MagnitudeImportance(p=2), pruning_ratio=0.5,
               num_heads={q, k, v: heads}, prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=0.5)`` on
               the Hugging Face module, the attention modules' head counts updated after the step.

(b) Head pruning at 50%, side by side: torchvision ViT-B/16 (224 px), BERT-base (``BertConfig()``, 16 tokens) and
    a Llama-style model with grouped-query attention (8 heads, 2 kv heads). archgraph: ``archgraph.prune(graph,
    weights, 0.5, heads=True)`` (half of every coupled channel group, then half of every attention's heads, the same
    number per kv group). Torch-Pruning: its examples' settings (prune_hf_bert.py, prune_llm.py: ``prune_num_heads``
    with ``head_pruning_ratio=0.5`` and ``pruning_ratio=0.5``; for torchvision's ViT, whose ``nn.MultiheadAttention``
    has no q/k/v linears its ``num_heads`` can read, torchvision_pruning.py's ``channel_groups`` = heads, which
    shrinks head dims, not heads). Params (``sum(p.numel())``), MACs (Torch-Pruning's
    ``tp.utils.count_ops_and_params`` on both pruned modules: linears, convs, norms, embeddings; the attention
    products are not counted by it), wall time of the pruning call, and whether the pruned model's output has the
    expected shape.

    python benchmarks/zoo.py                      # all of it -> benchmarks/results/zoo.md/.json
    python benchmarks/zoo.py --parts heads        # only (b)
    python benchmarks/zoo.py --parts tv --models resnet18,vit_b_16
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_rows import write_tables  # noqa: E402
from timm_zoo import behind, error_cell, family_counts, short, time_limit  # noqa: E402

import archgraph  # noqa: E402
from archgraph.compat import import_torchvision, import_transformers  # noqa: E402
from archgraph.fx.builder import build  # noqa: E402
from archgraph.fx.weights import load_into  # noqa: E402
from archgraph.interop.equivalence import randomize_normalization, torchvision_model  # noqa: E402
from archgraph.interop.importer import from_module  # noqa: E402

CLASSES = 10
RESULTS = Path(__file__).resolve().parent / "results"


# ---- (a) torchvision ----------------------------------------------------------------------------------------------

def _classifier(model: nn.Module, classes: int) -> list[nn.Module]:
    return [m for m in model.modules() if (isinstance(m, nn.Linear) and m.out_features == classes)
            or (isinstance(m, nn.Conv2d) and m.out_channels == classes)]


def _runs_at(model: nn.Module, sizes) -> int:
    last = None
    for s in sizes:
        try:
            with torch.no_grad():
                y = model(torch.randn(1, 3, s, s))
            if tuple(y.shape) == (1, CLASSES):
                return s
            last = RuntimeError(f"output shape {list(y.shape)}")
        except Exception as err:
            last = err
    raise RuntimeError(f"runs at none of {list(sizes)} px: {short(last, 120)}")


def _check(model: nn.Module, graph, weights, x) -> float:
    built = build(graph)
    load_into(built, weights)
    with torch.no_grad():
        want = copy.deepcopy(model).double()(x.double())
        got = built.eval().double()(x.double())
    err, scale = float((want - got).abs().max()), float(want.abs().max())
    if not err <= 1e-9 * max(1.0, scale):
        raise RuntimeError(f"not exact: max error {err:.2e} (max |y| {scale:.2e})")
    return err


def _ag_prune(graph, weights, x, heads: bool = False) -> dict:
    t = time.perf_counter()
    g2, w2 = archgraph.prune(graph, weights, ratio=0.5, criterion="l2", heads=heads)
    seconds = time.perf_counter() - t
    module = build(g2)
    load_into(module, w2)
    with torch.no_grad():
        y = module.eval()(x)
    return {"ok": True, "params": g2.params, "seconds": seconds, "shape": list(y.shape), "module": module}


def _tp_prune_image(model: nn.Module, x) -> dict:
    import torch_pruning as tp
    pruned = copy.deepcopy(model)
    heads = {m: m.num_heads for m in pruned.modules() if isinstance(m, nn.MultiheadAttention)}
    t = time.perf_counter()
    pruner = tp.pruner.MetaPruner(pruned, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
                                  ignored_layers=_classifier(pruned, CLASSES), channel_groups=heads)
    pruner.step()
    seconds = time.perf_counter() - t
    _vit_width(pruned)
    with torch.no_grad():
        y = pruned.eval()(x)
    if tuple(y.shape) != (1, CLASSES):
        raise RuntimeError(f"pruned output shape {list(y.shape)}")
    return {"ok": True, "params": sum(p.numel() for p in pruned.parameters()), "seconds": seconds}


def _vit_width(model: nn.Module) -> None:
    """torchvision's ViT reshapes its patches with ``self.hidden_dim``: set it after pruning, as Torch-Pruning's
    torchvision example does."""
    if hasattr(model, "hidden_dim") and hasattr(model, "conv_proj"):
        model.hidden_dim = model.conv_proj.out_channels


def torchvision_row(name: str, sizes, limit: int, max_params: float) -> dict:
    row: dict = {"model": name}
    try:
        with time_limit(limit):
            model = randomize_normalization(torchvision_model(name, num_classes=CLASSES), zeros=True)
            row["params"] = sum(p.numel() for p in model.parameters())
            if row["params"] > max_params:
                row.update(status="skipped", error=f"{row['params'] / 1e6:.0f}M params > {max_params / 1e6:.0f}M")
                return row
            row["size"] = s = _runs_at(model, sizes)
    except Exception as err:
        row.update(status="not run", error=short(err))
        return row
    row["status"] = "tried"
    x = torch.randn(1, 3, s, s)

    def convert():
        graph, weights = from_module(model, input_shape=(3, s, s), name=name)
        _check(model, graph, weights, torch.randn(2, 3, s, s))
        return graph, weights

    def prune(graph, weights):
        ag = _ag_prune(graph, weights, x)
        if tuple(ag["shape"]) != (1, CLASSES):
            raise RuntimeError(f"pruned output shape {ag['shape']}")
        return ag

    _archgraph_steps(row, limit, convert, prune)
    try:
        with time_limit(limit):
            row["tp"] = _tp_prune_image(model, x)
    except Exception as err:
        row["tp"] = {"ok": False, "error": short(err, 160)}
    return row


def _archgraph_steps(row: dict, limit: int, convert, prune) -> None:
    """archgraph's side of a coverage row, each step within ``limit`` seconds: ``convert()`` -> (graph, weights)
    sets ``import_ok`` (or ``error``), then ``prune(graph, weights)`` -> the pruning result sets ``ag``."""
    try:
        with time_limit(limit):
            graph, weights = convert()
        row["import_ok"] = True
        try:
            with time_limit(limit):
                ag = prune(graph, weights)
            row["ag"] = {k: v for k, v in ag.items() if k != "module"}
        except Exception as err:
            row["ag"] = {"ok": False, "error": short(err, 160)}
    except Exception as err:
        row.update(import_ok=False, error=short(err))


# ---- (a) HF and (b) head pruning: Torch-Pruning on Hugging Face modules ----------------------------------------

def _attention_layers(model: nn.Module) -> list[tuple[nn.Module, list[nn.Module], int, int]]:
    """(attention module, its q/k/v layers, query heads, kv heads) of every attention in a HF model, as
    Torch-Pruning's examples collect them (BERT/ViT ``query``/``key``/``value``, Llama ``q_proj``/..., GPT-2's
    fused ``c_attn``)."""
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head")
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    found = []
    for m in model.modules():
        if all(hasattr(m, a) for a in ("query", "key", "value")):
            found.append((m, [m.query, m.key, m.value], heads, heads))
        elif all(hasattr(m, a) for a in ("q_proj", "k_proj", "v_proj")):
            found.append((m, [m.q_proj, m.k_proj, m.v_proj], heads, kv))
        elif hasattr(m, "c_attn"):
            found.append((m, [m.c_attn], heads, heads))
    return found


def hf_model(kind_or_config):
    """(model, the layers Torch-Pruning leaves whole, its output for the pruner): a causal LM with its head (GPT-2,
    Llama: Torch-Pruning's LLM example ignores ``lm_head``), else the base model and its pooler (its BERT example
    ignores the pooler and reads ``pooler_output``)."""
    from archgraph.interop import hf
    tr = import_transformers()
    kind = kind_or_config if isinstance(kind_or_config, str) else kind_or_config.model_type
    if kind in ("gpt2", "llama"):
        config = kind_or_config
        if not isinstance(config, str):
            config = copy.deepcopy(config)
            config.tie_word_embeddings = False
        model = hf.build_model(config, lm_head=True)
        model.config.use_cache = False   # its outputs are then the logits only (as Torch-Pruning's LLM example runs)
        return model, [model.lm_head], lambda out: out.logits
    model = hf.build_model(kind_or_config)
    if isinstance(model, tr.PreTrainedModel) and getattr(model, "pooler", None) is not None:
        return model, [model.pooler], lambda out: out.pooler_output
    return model, [], lambda out: out[0]


def tp_prune_hf(model: nn.Module, inputs: dict, ignored: list[nn.Module], output) -> dict:
    """Torch-Pruning on a Hugging Face module, as in its transformers examples: 50% of the heads and 50% of the
    other channels, by L2 magnitude; afterwards each attention's head count is set from the pruner's."""
    import torch_pruning as tp
    layers = _attention_layers(model)
    num_heads = {}
    for _, qkv, h, kv in layers:
        for i, layer in enumerate(qkv):
            num_heads[layer] = h if i == 0 else kv
    t = time.perf_counter()
    example = inputs.get("input_ids", inputs)   # token ids as a tensor, as Torch-Pruning's LLM example passes them
    pruner = tp.pruner.BasePruner(model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                  global_pruning=False, pruning_ratio=0.5, num_heads=num_heads,
                                  prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=0.5,
                                  ignored_layers=ignored, output_transform=lambda out: output(out).sum())
    pruner.step()
    seconds = time.perf_counter() - t
    for m, qkv, _, _ in layers:
        q, k = pruner.num_heads[qkv[0]], pruner.num_heads[qkv[1]] if len(qkv) > 1 else None
        if hasattr(m, "num_key_value_groups") and k:
            m.num_key_value_groups = q // k
        if hasattr(m, "split_size"):   # GPT-2's fused projection
            m.num_heads, m.split_size = q, qkv[0].nf // 3
        if hasattr(m, "num_attention_heads"):
            m.num_attention_heads, m.all_head_size = q, qkv[0].out_features
    return {"seconds": seconds, "heads": [pruner.num_heads[qkv[0]] for _, qkv, _, _ in layers]}


def _same(copied: nn.Module, original: nn.Module, layers: list[nn.Module]) -> list[nn.Module]:
    """The modules of a deep copy that are ``layers`` of the original."""
    names = {id(m): n for n, m in original.named_modules()}
    return [copied.get_submodule(names[id(m)]) for m in layers]


def _count(module: nn.Module, inputs) -> tuple[int, int]:
    import torch_pruning as tp
    with torch.no_grad():
        macs, _ = tp.utils.count_ops_and_params(module, inputs)
    return sum(p.numel() for p in module.parameters()), int(macs)


def _heads_of(graph) -> list[int]:
    return [n.num_heads for n in graph.nodes.values() if getattr(n, "num_heads", None)]


HF_TYPES = ("gpt2", "bert", "llama", "vit")


def _hf_inputs(model, seq_len: int, vocab: int | None = None):
    cfg = model.config
    if cfg.model_type == "vit":
        return {"pixel_values": torch.randn(1, 3, cfg.image_size, cfg.image_size)}
    return {"input_ids": torch.randint(0, vocab or cfg.vocab_size, (1, seq_len))}


def _ag_input(model, inputs: dict):
    return next(iter(inputs.values()))


def hf_row(kind: str, limit: int, seq_len: int = 16) -> dict:
    from archgraph.interop import hf
    row: dict = {"model": kind, "status": "tried"}
    model, ignored, output = hf_model(kind)
    inputs = _hf_inputs(model, seq_len)
    row["params"] = sum(p.numel() for p in model.parameters())
    _archgraph_steps(row, limit, lambda: hf.from_model(model, seq_len),
                     lambda graph, weights: _ag_prune(graph, weights, _ag_input(model, inputs), heads=True))
    try:
        with time_limit(limit):
            pruned = copy.deepcopy(model)
            with torch.no_grad():
                before = tuple(output(pruned(**inputs)).shape)
            info = tp_prune_hf(pruned, inputs, _same(pruned, model, ignored), output)
            with torch.no_grad():
                after = tuple(output(pruned(**inputs)).shape)
            if after != before:
                raise RuntimeError(f"pruned output shape {list(after)} (was {list(before)})")
            row["tp"] = {"ok": True, "params": sum(p.numel() for p in pruned.parameters()), **info}
    except Exception as err:
        row["tp"] = {"ok": False, "error": short(err, 160)}
    return row


# ---- (b) head pruning -------------------------------------------------------------------------------------------

def head_rows(limit: int, skip_vit: bool) -> list[dict]:
    tr = import_transformers()
    from archgraph.interop import hf
    rows = []
    llama = tr.LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8,
                           num_key_value_heads=2, vocab_size=1000, max_position_embeddings=64)
    cases = [("BERT-base (BertConfig(), 16 tokens)", tr.BertConfig()),
             ("Llama-style GQA (512 wide, 4 layers, 8 heads / 2 kv, 16 tokens)", llama)]
    if not skip_vit:
        cases.insert(0, ("ViT-B/16 (torchvision vit_b_16, 224 px)", "vit_b_16"))
    for title, what in cases:
        row: dict = {"model": title}
        try:
            with time_limit(limit):
                if what == "vit_b_16":
                    model = randomize_normalization(torchvision_model("vit_b_16"))
                    x = torch.randn(1, 3, 224, 224)
                    inputs, tp_inputs = x, x
                    graph, weights = from_module(model, input_shape=(3, 224, 224), name="vit_b_16")
                else:
                    model, ignored, output = hf_model(what)
                    tp_inputs = _hf_inputs(model, 16)
                    inputs = tp_inputs["input_ids"]
                    graph, weights = hf.from_model(model, 16)
                row["base_params"], row["base_macs"] = _count(model, inputs if what == "vit_b_16" else tp_inputs)
                row["base_heads"] = _heads_of(graph)[:1]
        except Exception as err:
            row["error"] = short(err)
            rows.append(row)
            continue
        try:
            with time_limit(limit):
                ag = _ag_prune(graph, weights, inputs, heads=True)
                params, macs = _count(ag["module"], inputs)
                expected = [1, 1000] if what == "vit_b_16" else [1, 16, graph.shapes()[graph.outputs[0]][-1]]
                row["ag"] = {"ok": True, "params": params, "macs": macs, "seconds": ag["seconds"],
                             "shape_ok": ag["shape"] == expected, "shape": ag["shape"]}
        except Exception as err:
            row["ag"] = {"ok": False, "error": short(err, 160)}
        try:
            with time_limit(limit):
                pruned = copy.deepcopy(model)
                if what == "vit_b_16":
                    info = _tp_vit(pruned, tp_inputs)
                    with torch.no_grad():
                        shape = list(pruned(tp_inputs).shape)
                    shape_ok = shape == [1, 1000]
                else:
                    with torch.no_grad():
                        before = list(output(pruned(**tp_inputs)).shape)
                    info = tp_prune_hf(pruned, tp_inputs, _same(pruned, model, ignored), output)
                    with torch.no_grad():
                        shape = list(output(pruned(**tp_inputs)).shape)
                    shape_ok = shape == before
                params, macs = _count(pruned, tp_inputs)
                row["tp"] = {"ok": True, "params": params, "macs": macs, "shape_ok": shape_ok, "shape": shape,
                             **info}
        except Exception as err:
            row["tp"] = {"ok": False, "error": short(err, 160)}
        row["ag_heads"] = None
        rows.append(row)
        print(f"heads {title}: {json.dumps(row, default=str)}", file=sys.stderr, flush=True)
    return rows


def _tp_vit(model: nn.Module, x) -> dict:
    """Torch-Pruning on torchvision's ViT as its torchvision_pruning.py example does (channel groups of heads)."""
    import torch_pruning as tp
    groups = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    t = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
                                  ignored_layers=[model.heads], channel_groups=groups)
    pruner.step()
    seconds = time.perf_counter() - t
    _vit_width(model)
    for m in groups:   # the heads stay; their width shrinks
        m.head_dim = m.embed_dim // m.num_heads
    return {"seconds": seconds, "heads": [m.num_heads for m in groups][:1],
            "head_dim": [m.embed_dim // m.num_heads for m in groups][:1]}


# ---- tables -------------------------------------------------------------------------------------------------------

def _pruned(row: dict, key: str) -> bool:
    """The tool's pruning returned, its model runs with the right output shape, and it has fewer parameters."""
    q = row.get(key, {})
    before = row.get("params", row.get("graph_params"))
    return bool(q.get("ok")) and (before is None or q.get("params", 0) < before)


def _counts(rows: list[dict]) -> dict:
    tried = [r for r in rows if r.get("status") == "tried"]
    return {"tried": len(tried), "listed": len(rows),
            "skipped": sum(r.get("status") == "skipped" for r in rows),
            "not_run": sum(r.get("status") == "not run" for r in rows),
            "ag_import": sum(bool(r.get("import_ok")) for r in tried),
            "ag_prune": sum(_pruned(r, "ag") for r in tried), "tp_prune": sum(_pruned(r, "tp") for r in tried)}


def _timm_rows() -> list[dict]:
    path = RESULTS / "timm_zoo.json"
    return json.loads(path.read_text()) if path.exists() else []


def tables(tv: list[dict], hf_rows: list[dict], heads: list[dict]) -> str:
    out = []
    families = [("torchvision classification", tv), ("timm (benchmarks/timm_zoo.py sample)", _timm_rows()),
                ("Hugging Face (GPT-2, BERT, Llama, ViT)", hf_rows)]
    if any(rows for _, rows in families):
        out += ["Coverage: pruned at ratio 0.5 = the pruning call returns, the pruned model runs with the right output "
                "shape and has fewer parameters; archgraph imports (exactly in float64) first.", "",
                "| family | tried | archgraph import | archgraph pruned | Torch-Pruning pruned | skipped (too large) "
                "| not runnable |", "|---|---:|---:|---:|---:|---:|---:|"]
        for title, rows in families:
            if not rows:
                continue
            c = _counts(rows)
            out.append(f"| {title} | {c['tried']} | {c['ag_import']}/{c['tried']} | {c['ag_prune']}/{c['tried']} | "
                       f"{c['tp_prune']}/{c['tried']} | {c['skipped']} | {c['not_run']} |")
        timm_tried = [r for r in families[1][1] if r.get("status") == "tried"]
        if timm_tried:
            out += ["", f"timm: {behind(family_counts(timm_tried))} Per family: benchmarks/results/timm_zoo.md."]
    if heads:
        out += ["", "Head pruning at 50% (archgraph: archgraph.prune(..., ratio=0.5, heads=True); Torch-Pruning: its "
                    "examples' settings, see the script's docstring). Params: sum(p.numel()); MACs: Torch-Pruning's "
                    "count_ops_and_params on both pruned modules (the attention products not counted); time: the "
                    "pruning call; shape ok: the pruned model's output has the expected shape.", "",
                "| model | params | MACs | AG params | AG MACs | AG time | AG shape ok | TP params | TP MACs | TP time "
                "| TP shape ok | TP heads / head dim after |",
                "|---|---:|---:|---:|---:|---:|:---:|---:|---:|---:|:---:|---|"]
        for r in heads:
            if "error" in r:
                out.append(f"| {r['model']} | not run: {r['error'][:120]} |" + " |" * 10)
                continue
            cells = [r["model"], f"{r['base_params'] / 1e6:.2f}M", f"{r['base_macs'] / 1e9:.3f}G"]
            for key in ("ag", "tp"):
                p = r[key]
                if not p["ok"]:
                    cells += [f"failed: {p['error'][:80]}", "-", "-", "-"]
                else:
                    cells += [f"{p['params'] / 1e6:.2f}M ({p['params'] / r['base_params']:.0%})",
                              f"{p['macs'] / 1e9:.3f}G ({p['macs'] / r['base_macs']:.0%})", f"{p['seconds']:.2f}s",
                              "yes" if p["shape_ok"] else f"no {p['shape']}"]
            tp = r["tp"]
            cells.append(f"{tp.get('heads', ['-'])[0]} heads" + (f", head dim {tp['head_dim'][0]}" if "head_dim" in tp
                                                                 else "") if tp["ok"] else "-")
            out.append("| " + " | ".join(str(c) for c in cells) + " |")
    for title, rows in (("torchvision", tv), ("Hugging Face", hf_rows)):
        if not rows:
            continue
        out += ["", f"{title} per model:", "", "| model | params | size | archgraph import | AG pruned | AG params "
                "| AG time | TP pruned | TP params | TP time | error |",
                "|---|---:|---:|:---:|:---:|---:|---:|:---:|---:|---:|---|"]
        for r in rows:
            p = f"{r['params'] / 1e6:.2f}M" if "params" in r else "-"
            if r.get("status") != "tried":
                out.append(f"| {r['model']} | {p} | - | {r.get('status')} | - | - | - | - | - | - | "
                           f"{r.get('error', '')[:100].replace('|', '/')} |")
                continue
            cells = [r["model"], p, str(r.get("size", "-")), "yes" if r.get("import_ok") else "no"]
            for key in ("ag", "tp"):
                q = r.get(key, {})
                cells += ["yes" if _pruned(r, key) else ("nothing pruned" if q.get("ok") else "no" if q else "-"),
                          f"{q['params'] / 1e6:.2f}M" if q.get("ok") else "-",
                          f"{q['seconds']:.2f}s" if q.get("ok") else "-"]
            cells.append(error_cell(r))
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="tv,hf,heads", help="comma-separated: tv, hf, heads")
    p.add_argument("--models", help="torchvision models instead of the whole list")
    p.add_argument("--sizes", default="64,96,128,224")
    p.add_argument("--limit", type=int, default=180, help="seconds per model and step")
    p.add_argument("--max-params", type=float, default=150e6)
    p.add_argument("--skip-vit", action="store_true", help="leave ViT-B/16 at 224 px out of the head pruning")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="OUT.md and OUT.json (default benchmarks/results/zoo for a full run)")
    p.add_argument("--from-json", help="write the tables from an earlier run's JSON (parts merged, later wins)",
                   nargs="*")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    parts = set(args.parts.split(","))
    data: dict = {"tv": [], "hf": [], "heads": []}
    if args.from_json:
        for path in args.from_json:   # rows of a later file replace those of the same model
            for key, rows in json.loads(Path(path).read_text()).items():
                later = {r["model"] for r in rows}
                data[key] = [r for r in data.get(key, []) if r["model"] not in later] + rows
        parts = set()
    if "tv" in parts:
        tv = import_torchvision()
        names = args.models.split(",") if args.models else tv.models.list_models(module=tv.models)
        sizes = [int(s) for s in args.sizes.split(",")]
        for name in names:
            t = time.perf_counter()
            try:
                row = torchvision_row(name, sizes, args.limit, args.max_params)
            except Exception as err:
                row = {"model": name, "status": "not run", "error": f"benchmark crashed: {short(err)}"}
            data["tv"].append(row)
            print(f"tv {name}: {time.perf_counter() - t:.1f}s {json.dumps(row, default=str)}", file=sys.stderr,
                  flush=True)
    if "hf" in parts:
        for kind in HF_TYPES:
            try:
                row = hf_row(kind, args.limit)
            except Exception as err:
                row = {"model": kind, "status": "not run", "error": f"benchmark crashed: {short(err)}"}
            data["hf"].append(row)
            print(f"hf {kind}: {json.dumps(row, default=str)}", file=sys.stderr, flush=True)
    if "heads" in parts:
        data["heads"] = head_rows(args.limit, args.skip_vit)
    text = tables(data["tv"], data["hf"], data["heads"])
    full = parts == {"tv", "hf", "heads"} and not args.models
    out = Path(args.out) if args.out else (RESULTS / "zoo" if full or args.from_json else None)
    write_tables(out, text, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
