"""Growing imported Hugging Face language models (small GPT-2 and Llama configs, random weights, nothing
downloaded) every exact way, checked in float64 against the original transformers model's logits: a wider stream
(GPT-2's layer norms: ``masked`` and ``clone``; Llama's RMS norms: ``preserve`` and ``clone``), more heads / kv
groups, a wider MLP, a new block after a block, and a copied block with zeroed residual writers; and a tied LM head
(GPT-2, Llama, Gemma 2 with ``tie_word_embeddings``) cloned 2x, exported and loaded still tied."""
import copy
import functools

import pytest
import torch

pytest.importorskip("transformers")

import archgraph  # noqa: E402
from archgraph import rules  # noqa: E402
from archgraph.fx.apply_plan import transfer  # noqa: E402
from archgraph.fx.builder import build  # noqa: E402
from archgraph.fx.weights import load_into  # noqa: E402
from archgraph.interop import hf  # noqa: E402
from archgraph.interop.equivalence import randomize_normalization  # noqa: E402

TOL = 1e-9
T = 6

GROWTHS = {
    "gpt2": [rules.AddFilters(node="wte", count=32, init="clone", eps=0.05),   # 2x (first: later widths differ)
             rules.AddFilters(node="wte", count=8, init="masked", ramp=10),
             rules.AddHeads(node="h_0_attn", count=2),
             rules.AddFilters(node="h_1_mlp_c_fc", count=16),
             rules.InsertBlock(after="h_0_add_2", norm="layernorm", activation="gelu", mlp_ratio=2),
             rules.StackBlock(start="h_0_add_2", end="h_1_add_2", init="zero", prefix="h_2_")],
    "llama": [rules.AddFilters(node="embed_tokens", count=64, init="clone"),   # 3x
              rules.AddFilters(node="embed_tokens", count=8),
              rules.AddHeads(node="layers_0_self_attn", count=2),       # one more kv group (2 heads per group)
              rules.AddHeads(node="layers_1_self_attn", count=2, mode="spread"),
              rules.AddFilters(node="layers_0_mlp_gate_proj", count=16),
              rules.InsertBlock(after="layers_0_add_2", norm="rmsnorm", activation="gelu"),
              rules.StackBlock(start="layers_0_add_2", end="layers_1_add_2", init="zero", prefix="layers_2_")],
}


@functools.lru_cache(maxsize=None)
def imported(model_type: str):
    """(the transformers model's logits in float64 on a fixed input, graph, built graph, input)."""
    m = randomize_normalization(hf.build_model(model_type, lm_head=True))
    ref = copy.deepcopy(m).double().eval()
    graph, weights = hf.from_model(m, T)
    x = torch.randint(0, 100, (2, T), generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), hf._native_rms_norms(ref):
        logits = ref(input_ids=x).logits
    built = build(graph, dtype=torch.float64)
    load_into(built, {k: v.double() for k, v in weights.items()})
    return logits, graph, built.eval(), x


@pytest.mark.parametrize("model_type,k", [(t, k) for t, growths in GROWTHS.items() for k in range(len(growths))])
def test_each_growth_keeps_the_transformers_logits(model_type, k):
    logits, graph, built, x = imported(model_type)
    rule = GROWTHS[model_type][k]
    rw = archgraph.apply(graph, rule)
    assert rw.exact, (rule, rw.plan.note)
    new = build(rw.graph, dtype=torch.float64, seed=1).eval()
    transfer(rw.plan, built, new)
    with torch.no_grad():
        assert float((new(x) - logits).abs().max()) <= TOL * max(1.0, float(logits.abs().max()))


@pytest.mark.parametrize("model_type", list(GROWTHS))
def test_growths_compose(model_type):
    logits, graph, built, x = imported(model_type)
    m = built
    for rule in GROWTHS[model_type]:
        rw = archgraph.apply(graph, rule)
        new = build(rw.graph, dtype=torch.float64, seed=2).eval()
        transfer(rw.plan, m, new)
        graph, m = rw.graph, new
    with torch.no_grad():
        assert float((m(x) - logits).abs().max()) <= TOL * max(1.0, float(logits.abs().max()))


# ---- grown, exported back with export --hf, loaded with from_pretrained ------------------------------------------

EXPORTED = {
    "gpt2": [rules.AddFilters(node="wte", count=32, init="clone", eps=0.05),
             rules.AddHeads(node="h_0_attn", count=4), rules.AddHeads(node="h_1_attn", count=4),   # heads x 8 = 64
             rules.AddFilters(node="h_0_mlp_c_fc", count=16), rules.AddFilters(node="h_1_mlp_c_fc", count=16),
             rules.StackBlock(start="h_0_add_2", end="h_1_add_2", init="zero", prefix="h_2_")],
    "llama": [rules.AddFilters(node="embed_tokens", count=32, init="clone"),
              rules.AddFilters(node="layers_0_mlp_gate_proj", count=16),
              rules.AddFilters(node="layers_1_mlp_gate_proj", count=16),
              rules.StackBlock(start="layers_0_add_2", end="layers_1_add_2", init="zero", prefix="layers_2_")],
}


@pytest.mark.parametrize("model_type", list(EXPORTED))
def test_grown_model_exports_and_loads_with_the_original_logits(tmp_path, model_type):
    import json

    from test_hf_roundtrip import inputs, load, run, saved

    from archgraph.interop.hf_export import to_pretrained
    model, folder = saved(tmp_path, model_type, True, tie_word_embeddings=False)
    graph, weights = hf.from_pretrained(folder)
    m = build(graph, dtype=torch.float64)
    load_into(m, weights)
    m.eval()
    for rule in EXPORTED[model_type]:
        rw = archgraph.apply(graph, rule)
        assert rw.exact, (rule, rw.plan.note)
        new = build(rw.graph, dtype=torch.float64, seed=1).eval()
        transfer(rw.plan, m, new)
        graph, m = rw.graph, new
    out = to_pretrained(graph, m.state_dict(), tmp_path / "out", json.loads((folder / "config.json").read_text()),
                        folder)
    back = load(out, True)
    assert back.config.num_hidden_layers == 3
    for t in (1, 6):
        x = inputs(model_type, t)
        want = run(model, x, True)
        with torch.no_grad():
            assert float((run(back, x, True) - want).abs().max()) <= TOL * max(1.0, float(want.abs().max()))


@pytest.mark.parametrize("model_type,eps", [("gpt2", 0.05), ("llama", 0.0)])
def test_cloned_tied_stream_exports_tied_with_the_original_logits(tmp_path, model_type, eps):
    """A tied LM head (``tie_word_embeddings: true``) through the CLI: import hf:DIR, a 2x stream by HyperCloning
    (the head is the widened table [E, E]; the final norm's gain and bias are halved instead of the head), GPT-2's
    heads doubled with it, export --hf, from_pretrained: still tied, and the original logits in float64. The
    Python path (build, ``transfer`` into a module whose head shares the table) gives the same logits."""
    import json

    from test_hf_roundtrip import inputs, load, run, saved

    from archgraph.cli import main
    from archgraph.fx.weights import load_weights
    model, folder = saved(tmp_path, model_type, True, tie_word_embeddings=True)
    table = "wte" if model_type == "gpt2" else "embed_tokens"
    a, b, out = tmp_path / "imported", tmp_path / "grown", tmp_path / "hf_out"
    assert main(["import", f"hf:{folder}", "-o", str(a)]) == 0
    graph = archgraph.load(a / "graph.yaml")
    width = graph.nodes[table].embedding_dim
    assert graph.nodes["lm_head"].tied_to == table
    rule = rules.AddFilters(node=table, count=width, init="clone", eps=eps)
    rw = archgraph.apply(graph, rule)
    assert rw.exact, rw.plan.note
    assert main(["apply", str(a / "graph.yaml"), "add_filters", f"node={table}", f"count={width}", "init=clone",
                 f"eps={eps}", "--weights", str(a / "weights.safetensors"), "-o", str(b)]) == 0
    for i in range(2 if model_type == "gpt2" else 0):   # GPT-2's class: head_dim x heads = the stream (8 x 8)
        step = tmp_path / f"heads_{i}"
        assert main(["apply", str(b / "graph.yaml"), "add_heads", f"node=h_{i}_attn", "count=4", "--weights",
                     str(b / "weights.safetensors"), "-o", str(step)]) == 0
        b = step
    grown = archgraph.load(b / "graph.yaml")
    state = load_weights(b / "weights.safetensors")
    assert grown.nodes["lm_head"].tied_to == table and torch.equal(state["lm_head.weight"], state[f"{table}.weight"])
    assert main(["export", str(b / "graph.yaml"), "--weights", str(b / "weights.safetensors"), "--hf", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    back = load(out, True)
    assert back.config.tie_word_embeddings and back.get_output_embeddings().weight is \
        back.get_input_embeddings().weight
    assert back.get_input_embeddings().weight.shape[1] == 2 * width
    old = build(graph, dtype=torch.float64).eval()
    load_into(old, load_weights(a / "weights.safetensors"))
    new = build(rw.graph, dtype=torch.float64, seed=1).eval()
    assert new.lm_head.weight is getattr(new, table).weight
    transfer(rw.plan, old, new)
    for t in (1, 7):
        x = inputs(model_type, t)
        want = run(model, x, True)
        with torch.no_grad():
            assert float((run(back, x, True) - want).abs().max()) <= TOL * max(1.0, float(want.abs().max()))
            assert float((new(x) - want).abs().max()) <= TOL * max(1.0, float(want.abs().max()))


@pytest.mark.parametrize("tie", [False, True])
def test_gemma_grows_exactly_and_loads_back_in_its_class(tmp_path, tie):
    """Gemma 2 (norms with a gain of 1 + weight, soft-capping, a sliding window): a 2x stream by HyperCloning,
    two more kv groups and a wider MLP in every layer, exported and loaded in Gemma's own class with the original
    logits (its embedding's sqrt(hidden) scale folded for the new width); widening with zeros is not exact over
    those norms and says so."""
    import json

    from test_hf_roundtrip import inputs, load, run, saved

    from archgraph.fx.apply_plan import transfer_state
    from archgraph.interop.hf_export import to_pretrained
    model, folder = saved(tmp_path, "gemma2", True, tie_word_embeddings=tie, attn_logit_softcapping=1.5,
                          final_logit_softcapping=2.0)
    graph, weights = hf.from_pretrained(folder)
    preserve = archgraph.apply(graph, rules.AddFilters(node="embed_tokens", count=8))
    assert not preserve.exact and "normalises over these channels" in preserve.plan.note
    w = weights
    for rule in [rules.AddFilters(node="embed_tokens", count=32, init="clone"),
                 *(rules.AddHeads(node=f"layers_{i}_self_attn", count=4) for i in range(2)),
                 *(rules.AddFilters(node=f"layers_{i}_mlp_gate_proj", count=16) for i in range(2))]:
        rw = archgraph.apply(graph, rule)
        assert rw.exact, (rule, rw.plan.note)
        fresh = build(rw.graph, dtype=torch.float64, seed=1).state_dict()
        graph, w = rw.graph, transfer_state(rw.plan, w, fresh)
    assert (graph.nodes["lm_head"].tied_to == "embed_tokens") == tie
    out = to_pretrained(graph, w, tmp_path / "out", json.loads((folder / "config.json").read_text()), folder)
    back = load(out, True)
    assert (back.config.hidden_size, back.config.num_attention_heads, back.config.intermediate_size) == (64, 8, 80)
    assert back.config.tie_word_embeddings == tie
    for t in (3, 9):
        x = inputs("gemma2", t)
        want = run(model, x, True)
        with torch.no_grad():
            assert float((run(back, x, True) - want).abs().max()) <= TOL * max(1.0, float(want.abs().max()))
