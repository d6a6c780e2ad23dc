"""Hugging Face round trip: a small model of each family from its real config class (random weights), saved with
``save_pretrained``, imported with ``from_pretrained`` (its head included), exported back with ``to_pretrained``
and loaded by ``transformers``: the logits equal the original's and the graph's, at three lengths; pruned graphs
load in the family's own class; ``archgraph import hf:DIR`` -> ``prune`` -> ``export --hf`` from the CLI."""
import json
import warnings

import pytest
import torch

pytest.importorskip("transformers")

import archgraph  # noqa: E402
from archgraph.errors import ConversionError  # noqa: E402
from archgraph.fx.apply_plan import transfer_state  # noqa: E402
from archgraph.fx.builder import build  # noqa: E402
from archgraph.fx.weights import load_into, load_weights  # noqa: E402
from archgraph.interop import hf  # noqa: E402
from archgraph.interop.equivalence import randomize_normalization  # noqa: E402
from archgraph.interop.hf_export import to_pretrained  # noqa: E402
from archgraph.rules import PruneChannels, PruneHeads  # noqa: E402

tr = hf.import_transformers()

#: Llama 3.2's rotary scaling (its three frequency bands all occur at head_dim 8 with rope_theta 500000)
LLAMA3 = {"tie_word_embeddings": True, "rope_parameters": {
    "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192}}
FAMILIES = [("llama", True, {}), ("qwen2", True, {"tie_word_embeddings": True}), ("mistral", True, {}),
            ("gpt2", True, {}), ("bert", False, {}), ("vit", False, {}),
            ("llama", False, {}), ("llama", True, LLAMA3), ("qwen3", True, {}), ("phi3", True, {}),
            ("olmo2", True, {})]


def saved(tmp_path, model_type, causal, dtype=torch.float64, **overrides):
    sizes = {**hf.SMALL[model_type], **overrides}
    if model_type == "gpt2":
        sizes["n_layer"] = 2
    config = tr.AutoConfig.for_model(model_type, **sizes)
    auto = tr.AutoModelForCausalLM if causal else tr.AutoModel
    torch.manual_seed(0)
    model = randomize_normalization(auto.from_config(config)).to(dtype).eval()
    for m in model.modules():    # Gemma's embedding scale is a buffer the randomising above also drew
        if hasattr(m, "scalar_embed_scale"):
            m.embed_scale.fill_(m.scalar_embed_scale)
    folder = tmp_path / model_type
    model.save_pretrained(folder)
    return model, folder


def run(model, x, causal, pooler=False):
    """The model's output (``pooler``: an encoder's pooler output); its RMSNorms and Gemma's softmax in the input's
    dtype (Hugging Face's cast to float32 would round float64)."""
    name = "pixel_values" if model.config.model_type == "vit" else "input_ids"
    with torch.no_grad(), hf._native_rms_norms(model), hf._native_softmax(model):
        out = model(**{name: x})
    return out.pooler_output if pooler else out.logits if causal else out.last_hidden_state


def first(y):
    """A built graph's first output (an encoder's graph has its pooler's as a second)."""
    return y[0] if isinstance(y, (tuple, list)) else y


def inputs(model_type, t, dtype=torch.float64):
    gen = torch.Generator().manual_seed(t)
    if model_type == "vit":
        return torch.randn(2, 3, 32, 32, generator=gen, dtype=dtype)
    return torch.randint(0, 100, (2, t), generator=gen)


def load(folder, causal, dtype=torch.float64, remote=False):
    """``from_pretrained`` of an exported folder; ``remote``: through its modeling file (per-layer sizes)."""
    auto = tr.AutoModelForCausalLM if causal else tr.AutoModel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if remote:
            return auto.from_pretrained(str(folder), dtype=dtype, trust_remote_code=True).eval()
        return auto.from_pretrained(str(folder), dtype=dtype).eval()


def built64(graph, weights):
    """The graph built in float64 with ``weights``, in eval mode."""
    built = build(graph, dtype=torch.float64)
    load_into(built, weights)
    return built.eval()


def assert_loads_as_built(back, built, model_type, lengths, causal=True, new_tokens=0):
    """``back`` (loaded with from_pretrained) gives the built graph's logits at each length, within 1e-9 x max|y|
    in float64; with ``new_tokens``, ``generate()`` runs with its KV cache from 4 tokens."""
    for t in lengths:
        x = inputs(model_type, t)
        with torch.no_grad():
            want = first(built(x))
            assert float((run(back, x, causal) - want).abs().max()) <= 1e-9 * max(1.0, float(want.abs().max()))
    if new_tokens:
        with torch.no_grad():
            gen = back.generate(inputs(model_type, 4), max_new_tokens=new_tokens, do_sample=False, use_cache=True)
        assert gen.shape == (2, 4 + new_tokens)


@pytest.mark.parametrize("model_type,causal,overrides", FAMILIES)
def test_round_trip_gives_the_original_logits(tmp_path, model_type, causal, overrides):
    model, folder = saved(tmp_path, model_type, causal, **overrides)
    graph, weights = hf.from_pretrained(folder)
    assert (list(graph.outputs) == ["lm_head"]) == causal
    assert {t.dtype for t in weights.values()} == {torch.float64}          # the checkpoint's dtype is kept
    out = to_pretrained(graph, weights, tmp_path / "out", json.loads((folder / "config.json").read_text()), folder)
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "generation_config.json").is_file() == causal
    back = load(out, causal)
    assert back.config.tie_word_embeddings == bool(overrides.get("tie_word_embeddings", model_type == "gpt2")
                                                   and causal)
    built = built64(graph, weights)
    for t in (1, 5, 11):
        x = inputs(model_type, t)
        want = run(model, x, causal)
        with torch.no_grad():
            assert float((run(back, x, causal) - want).abs().max()) <= 1e-12 * max(1.0, float(want.abs().max()))
            assert float((first(built(x)) - want).abs().max()) <= 1e-9 * max(1.0, float(want.abs().max()))
            if model_type in ("bert", "vit"):    # the pooler: the graph's second output, and it comes back
                pooled = run(model, x, False, pooler=True)
                assert float((run(back, x, False, pooler=True) - pooled).abs().max()) <= 1e-12
                assert float((built(x)[1] - pooled).abs().max()) <= 1e-9 and float(pooled.abs().max()) > 0.1
        if model_type == "vit":
            break


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "bert"])
def test_pruned_graph_loads_in_the_familys_class(tmp_path, model_type):
    causal = model_type != "bert"
    model, folder = saved(tmp_path, model_type, causal)
    graph, weights = hf.from_pretrained(folder)
    pruned, pw = archgraph.prune(graph, weights, ratio=0.5, heads=model_type in ("llama", "qwen2"))
    assert pruned.params < graph.params
    out = to_pretrained(pruned, pw, tmp_path / "out", json.loads((folder / "config.json").read_text()), folder)
    back = load(out, causal)
    built = built64(pruned, pw)
    assert_loads_as_built(back, built, model_type, (2, 7, 12), causal, new_tokens=5 if causal else 0)


def test_float32_and_bfloat16_keep_their_dtype(tmp_path):
    model, folder = saved(tmp_path, "qwen2", True, dtype=torch.bfloat16)
    graph, weights = hf.from_pretrained(folder, seq_len=8)
    assert {t.dtype for t in weights.values()} == {torch.bfloat16} and graph.inputs["input_ids"][0] == 8
    out = to_pretrained(graph, weights, tmp_path / "out", json.loads((folder / "config.json").read_text()))
    back = load(out, True, dtype=None)
    assert back.dtype == torch.bfloat16
    x = inputs("qwen2", 6)
    original = load(folder, True, dtype=None)   # (model.to(bfloat16) also rounded its rotary frequencies)
    assert torch.equal(run(back, x, True), run(original, x, True))
    pruned, pw = archgraph.prune(graph, weights, ratio=0.5, heads=True)    # bfloat16 through pruning and out
    assert {t.dtype for t in pw.values()} == {torch.bfloat16}
    out = to_pretrained(pruned, pw, tmp_path / "pruned", json.loads((folder / "config.json").read_text()))
    assert load(out, True, dtype=None).dtype == torch.bfloat16


def test_gpt2_with_a_narrower_stream_is_refused(tmp_path):
    # GPT-2's class ties the heads' width to the stream's: a pruned stream with whole heads cannot load natively
    model, folder = saved(tmp_path, "gpt2", True)
    graph, weights = hf.from_pretrained(folder)
    pruned, pw = archgraph.prune(graph, weights, ratio=0.5)
    with pytest.raises(ConversionError, match="GPT-2 needs head_dim x heads = hidden size"):
        to_pretrained(pruned, pw, tmp_path / "out", json.loads((folder / "config.json").read_text()))


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "phi3", "olmo2"])
def test_per_layer_sizes_load_through_the_modeling_file(tmp_path, model_type):
    model, folder = saved(tmp_path, model_type, True, num_hidden_layers=3)
    graph, weights = hf.from_pretrained(folder)
    # layer 0 loses a kv group (2 of 4 heads), layer 2 half its MLP: sizes differ from layer to layer
    rules = [PruneHeads(node="layers_0_self_attn", indices=(2, 3)),
             PruneChannels(node="layers_2_mlp_gate_proj", indices=tuple(range(0, 64, 2)))]
    w = weights
    for rule in rules:
        rw = archgraph.apply(graph, rule)
        graph, w = rw.graph, transfer_state(rw.plan, w)
    out = to_pretrained(graph, w, tmp_path / "out", json.loads((folder / "config.json").read_text()), folder)
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_archgraph.Archgraph" + {
        "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "phi3": "Phi3ForCausalLM",
        "olmo2": "Olmo2ForCausalLM"}[model_type]
    assert [layer["num_attention_heads"] for layer in config["layer_sizes"]] == [2, 4, 4]
    assert [layer["intermediate_size"] for layer in config["layer_sizes"]] == [64, 64, 32]
    back = load(out, True, remote=True)
    built = built64(graph, w)
    assert_loads_as_built(back, built, model_type, (1, 6, 13), new_tokens=4)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ConversionError, match="config.json"):
        hf.from_pretrained(tmp_path)


def test_cli_import_prune_export(tmp_path, capsys):
    from archgraph.cli import main
    model, folder = saved(tmp_path, "llama", True, dtype=torch.float32)
    (folder / "tokenizer_config.json").write_text("{}")   # a tokenizer file travels to the export
    imported, pruned, out = tmp_path / "imported", tmp_path / "pruned", tmp_path / "hf_out"
    assert main(["import", f"hf:{folder}", "-o", str(imported)]) == 0
    assert main(["prune", str(imported / "graph.yaml"), "--weights", str(imported / "weights.safetensors"),
                 "--ratio", "0.5", "--heads", "--uniform", "-q", "-o", str(pruned)]) == 0
    assert main(["export", str(pruned / "graph.yaml"), "--weights", str(pruned / "weights.safetensors"),
                 "--hf", str(out)]) == 0
    assert (out / "tokenizer_config.json").is_file() and not (out / "modeling_archgraph.py").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["num_attention_heads"] == 2 and config["intermediate_size"] == 32
    back = load(out, True, dtype=torch.float32)
    graph = archgraph.load(pruned / "graph.yaml")
    built = build(graph)
    load_into(built, load_weights(pruned / "weights.safetensors"))
    built.eval()
    x = inputs("llama", 9)
    with torch.no_grad():
        want = built(x)
        assert float((run(back, x, True) - want).abs().max()) <= 1e-5 * float(want.abs().max())
    # a graph not imported from Hugging Face has no config to write back
    assert main(["export", "examples/seeds/gpt_tiny.yaml", "--weights", str(imported / "weights.safetensors"),
                 "--hf", str(tmp_path / "x")]) == 2


def test_uniform_prune_keeps_alike_layers_alike():
    g = archgraph.loads("""
archgraph: 1
inputs: {x: [8]}
nodes:
  a: {op: linear, in: x, out_features: 8}
  a_act: {op: relu, in: a}
  b: {op: linear, in: a_act, out_features: 8}
  c: {op: linear, in: b, out_features: 4}
  c_act: {op: relu, in: c}
  d: {op: linear, in: c_act, out_features: 3}
outputs: [d]
""")
    built_ = build(g)
    # 'a' and 'b' are alike (linear, 8 channels): the default prunes 0.6 x 8 = 4 of each; 'c' (4) loses 2 either way
    counts = {r.node: len(r.indices) for r in archgraph.prune(g, built_.state_dict(), 0.6, uniform=True).rules}
    assert counts["a"] == counts["b"] == 4 and counts["c"] == 2


@pytest.mark.parametrize("tie", [False, True])
def test_big_models_are_checked_on_a_small_copy(tmp_path, monkeypatch, tie):
    model, folder = saved(tmp_path, "qwen2", True, num_hidden_layers=3, vocab_size=1500, tie_word_embeddings=tie)
    monkeypatch.setattr(hf, "CHECK_PARAMS", 0)       # as for a model above 50M parameters
    small = hf.check_copy(model)
    assert len(small.model.layers) == 2 and small.config.vocab_size == hf.CHECK_VOCAB
    assert small.model.layers[1].mlp.up_proj.weight.data_ptr() == \
        model.model.layers[1].mlp.up_proj.weight.data_ptr()                                      # no copy
    err, scale = hf.max_error(small, 6)
    assert err <= 1e-9 * max(1.0, scale) and scale > 0.1
    graph, _ = hf.from_pretrained(folder, seq_len=8)   # checks on the copy
    assert graph.nodes["lm_head"].out_features == 1500


def test_shards_with_an_index_load(tmp_path):
    model, folder = saved(tmp_path, "llama", True)
    graph, weights = hf.from_pretrained(folder)
    out = to_pretrained(graph, weights, tmp_path / "out", json.loads((folder / "config.json").read_text()),
                        max_shard_bytes=40_000)      # as a model past 5 GB is written
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (out / "model.safetensors").exists()
    back = load(out, True)
    graph2, _ = hf.from_pretrained(out)              # and archgraph reads the shards back
    assert graph2.params == graph.params
    x = inputs("llama", 7)
    assert float((run(back, x, True) - run(model, x, True)).abs().max()) <= 1e-12


def test_olmo2_norms_over_all_heads_follow_the_head_rules():
    from archgraph.rules import AddHeads
    graph, weights = hf.from_config("olmo2", seq_len=6, lm_head=True)
    attn = graph.nodes["layers_0_self_attn"]
    assert attn.qk_norm and attn.qk_norm_span == "all" and "layers_0_input_layernorm" not in graph.nodes
    rw = archgraph.apply(graph, PruneHeads(node="layers_0_self_attn", indices=(2, 3)))     # a whole kv group
    w = transfer_state(rw.plan, weights)
    assert w["layers_0_self_attn.q_norm.weight"].shape == (16,) and w["layers_0_self_attn.k_norm.weight"].shape == (8,)
    assert torch.equal(w["layers_0_self_attn.q_norm.weight"], weights["layers_0_self_attn.q_norm.weight"][:16])
    grown = archgraph.apply(graph, AddHeads(node="layers_0_self_attn", count=2))
    assert not grown.exact and "normalised over all heads" in grown.plan.note


#: mixtures of experts: (model type, config overrides, the moe nodes' ``normalize``, the layers read as dense MLPs)
MOE_FAMILIES = [("qwen3_moe", {}, True, []),
                ("qwen3_moe", {"norm_topk_prob": False, "mlp_only_layers": [0]}, False, [0]),
                ("qwen3_moe", {"decoder_sparse_step": 2, "num_hidden_layers": 3}, True, [0, 2]),
                ("olmoe", {}, False, []),
                ("olmoe", {"norm_topk_prob": True}, True, [])]


@pytest.mark.parametrize("model_type,overrides,normalize,dense", MOE_FAMILIES)
def test_moe_families_import_with_the_original_logits(tmp_path, model_type, overrides, normalize, dense):
    """Qwen3-MoE and OLMoE from ``save_pretrained``: each sparse layer one ``moe`` node (``normalize`` from
    ``norm_topk_prob``), the dense layers Llama's MLP; the graph's logits equal the model's in float64."""
    model, folder = saved(tmp_path, model_type, True, **overrides)
    graph, weights = hf.from_pretrained(folder)
    layers = model.config.num_hidden_layers
    for i in range(layers):
        node = graph.nodes.get(f"layers_{i}_mlp")
        if i in dense:
            assert node is None and graph.nodes[f"layers_{i}_mlp_gate_proj"].op == "linear"
        else:
            assert (node.op, node.num_experts, node.top_k, node.normalize) == ("moe", 4, 2, normalize)
    att = graph.nodes["layers_0_self_attn"]
    assert att.qk_norm and (getattr(att, "qk_norm_span", None) == "all") == (model_type == "olmoe")
    built = built64(graph, weights)
    for t in (1, 5, 11):
        x = inputs(model_type, t)
        with hf._native_routers(model):
            want = run(model, x, True)
        with torch.no_grad():
            assert float((built(x) - want).abs().max()) <= 1e-9 * max(1.0, float(want.abs().max()))


@pytest.mark.parametrize("model_type,overrides,normalize,dense", MOE_FAMILIES + [("mixtral", {}, True, [])])
def test_moe_families_round_trip(tmp_path, model_type, overrides, normalize, dense):
    """import -> export --hf -> from_pretrained in the family's own class (its fused expert tensors), the logits
    the original's in float64; with two more experts in every layer (add_experts: never picked until trained) the
    export says why it cannot be written yet."""
    from archgraph.rules import AddExperts, PruneExperts
    model, folder = saved(tmp_path, model_type, True, **overrides)
    graph, weights = hf.from_pretrained(folder)
    out = to_pretrained(graph, weights, tmp_path / "out", json.loads((folder / "config.json").read_text()), folder)
    back = load(out, True)
    assert type(back) is type(model) and back.config.num_experts_per_tok == 2
    for t in (1, 5, 11):
        x = inputs(model_type, t)
        with hf._native_routers(model), hf._native_routers(back):
            want, got = run(model, x, True), run(back, x, True)
        assert float((got - want).abs().max()) <= 1e-12 * max(1.0, float(want.abs().max()))
    # one expert fewer in every sparse layer: the family's class with 3 experts, the graph's logits
    sparse = [f"layers_{i}_mlp" for i in range(model.config.num_hidden_layers) if i not in dense]
    w = weights
    for nid in sparse:
        rw = archgraph.apply(graph, PruneExperts(node=nid, indices=(1,)))
        graph, w = rw.graph, transfer_state(rw.plan, w)
    out = to_pretrained(graph, w, tmp_path / "pruned", json.loads((folder / "config.json").read_text()), folder)
    back = load(out, True)
    assert (back.config.num_local_experts if model_type == "mixtral" else back.config.num_experts) == 3
    built = built64(graph, w)
    x = inputs(model_type, 7)
    with torch.no_grad(), hf._native_routers(back):
        want = built(x)
        assert float((run(back, x, True) - want).abs().max()) <= 1e-9 * max(1.0, float(want.abs().max()))
    grown = archgraph.apply(graph, AddExperts(node=sparse[0], count=1))
    with pytest.raises(ConversionError, match="expert_ramp"):
        to_pretrained(grown.graph, transfer_state(grown.plan, w, build(grown.graph, dtype=torch.float64).state_dict()),
                      tmp_path / "grown", json.loads((folder / "config.json").read_text()))


def test_olmoe_clip_qkv_is_refused(tmp_path):
    model, folder = saved(tmp_path, "olmoe", True, clip_qkv=8.0)
    with pytest.raises(ConversionError, match="clip_qkv"):
        hf.from_pretrained(folder)


# ---- Gemma 2 and 3 ------------------------------------------------------------------------------------------------

#: small soft-caps, so that they change the function; a window of 4 tokens (the lengths 3, 9 and 13 cross it);
#: Gemma 3's global layers with linear rope scaling, its local ones with their own base (rope_local_base_freq)
GEMMA3_ROPE = {"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1_000_000.0},
               "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}
GEMMA = [("gemma2", {"attn_logit_softcapping": 1.5, "final_logit_softcapping": 2.0}),
         ("gemma2", {"tie_word_embeddings": False}),
         ("gemma3_text", {"final_logit_softcapping": 2.0, "rope_parameters": GEMMA3_ROPE}),
         ("gemma3_text", {"tie_word_embeddings": False, "num_hidden_layers": 3,
                          "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]})]


@pytest.mark.parametrize("model_type,overrides", GEMMA)
def test_gemma_round_trip_gives_the_original_logits(tmp_path, model_type, overrides):
    model, folder = saved(tmp_path, model_type, True, **overrides)
    cfg = model.config
    graph, weights = hf.from_pretrained(folder)
    assert graph.nodes["embed_tokens"].scale == pytest.approx(32 ** 0.5)
    assert graph.nodes["layers_0_pre_feedforward_layernorm"].offset == 1.0
    for i, kind in enumerate(cfg.layer_types):
        att = graph.nodes[f"layers_{i}_self_attn"]
        assert att.window == (4 if kind == "sliding_attention" else None)
        assert att.scale == 16 ** -0.5 and att.softcap == cfg.attn_logit_softcapping
        assert att.qk_norm == (model_type == "gemma3_text")
    if model_type == "gemma3_text":
        assert graph.nodes["layers_0_self_attn"].rope_theta == 10_000.0 != graph.nodes["layers_1_self_attn"].rope_theta
    cap = cfg.final_logit_softcapping
    assert (graph.outputs[0] == "lm_head_softcap") == (cap is not None)
    assert (graph.nodes["lm_head"].tied_to == "embed_tokens") == cfg.tie_word_embeddings
    out = to_pretrained(graph, weights, tmp_path / "out", json.loads((folder / "config.json").read_text()), folder)
    back = load(out, True)
    assert back.config.tie_word_embeddings == cfg.tie_word_embeddings and type(back) is type(model)
    built = built64(graph, weights)
    for t in (3, 9, 13):
        x = inputs(model_type, t)
        want = run(model, x, True)
        with torch.no_grad():
            assert float((run(back, x, True) - want).abs().max()) <= 1e-12 * max(1.0, float(want.abs().max()))
            assert float((built(x) - want).abs().max()) <= 1e-9 * max(1.0, float(want.abs().max()))
        if cap is not None:
            assert float(want.abs().max()) < cap
    # the window matters at 13 tokens: the same weights with a window past the length give other logits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wide = tr.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float64, sliding_window=64).eval()
    x = inputs(model_type, 13)
    assert float((run(wide, x, True) - run(model, x, True)).abs().max()) > 1e-4


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3_text"])
def test_pruned_gemma_loads_in_its_class(tmp_path, model_type):
    # half the heads, MLP and stream channels: the embedding's sqrt(hidden) scale of the import is folded into the
    # table (and, tied, into the final norm), as Gemma's class scales by the new width's
    model, folder = saved(tmp_path, model_type, True, final_logit_softcapping=2.0)
    graph, weights = hf.from_pretrained(folder)
    pruned, pw = archgraph.prune(graph, weights, ratio=0.5, heads=True, uniform=True)
    out = to_pretrained(pruned, pw, tmp_path / "out", json.loads((folder / "config.json").read_text()), folder)
    back = load(out, True)
    assert (back.config.hidden_size, back.config.num_attention_heads, back.config.intermediate_size) == (16, 2, 32)
    built = built64(pruned, pw)
    assert_loads_as_built(back, built, model_type, (2, 7, 12), new_tokens=5)


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3_text"])
def test_gemma_with_per_layer_sizes_loads_through_the_modeling_file(tmp_path, model_type):
    model, folder = saved(tmp_path, model_type, True, num_hidden_layers=3, final_logit_softcapping=2.0,
                          layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    graph, w = hf.from_pretrained(folder)
    for rule in [PruneHeads(node="layers_0_self_attn", indices=(2, 3)),
                 PruneChannels(node="layers_2_mlp_gate_proj", indices=tuple(range(0, 64, 2)))]:
        rw = archgraph.apply(graph, rule)
        graph, w = rw.graph, transfer_state(rw.plan, w)
    out = to_pretrained(graph, w, tmp_path / "out", json.loads((folder / "config.json").read_text()), folder)
    config = json.loads((out / "config.json").read_text())
    assert [layer["num_attention_heads"] for layer in config["layer_sizes"]] == [2, 4, 4]
    assert [layer["intermediate_size"] for layer in config["layer_sizes"]] == [64, 64, 32]
    back = load(out, True, remote=True)
    built = built64(graph, w)
    assert_loads_as_built(back, built, model_type, (3, 9), new_tokens=4)


def test_gemma_exports_to_onnx_and_runs_past_its_window(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    g, w = hf.from_config("gemma2", seq_len=8, lm_head=True, attn_logit_softcapping=1.5, final_logit_softcapping=2.0)
    path = tmp_path / "gemma2.onnx"
    assert archgraph.export_onnx(g, w, path) <= 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    m = build(g)
    load_into(m, w)
    m.eval()
    x = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        full = m(x)
    for t in (3, 12):     # within the window of 4 and past it
        y = session.run(None, {"input_ids": x[:, :t].numpy()})[0]
        assert float((torch.from_numpy(y) - full[:, :t]).abs().max()) <= 1e-4 * max(1.0, float(full.abs().max()))


def test_mistral_sliding_window_is_an_attention_window(tmp_path):
    model, folder = saved(tmp_path, "mistral", True, sliding_window=4)
    graph, weights = hf.from_pretrained(folder)
    assert {graph.nodes[f"layers_{i}_self_attn"].window for i in range(2)} == {4}
    built = built64(graph, weights)
    x = inputs("mistral", 11)
    want = run(model, x, True)
    with torch.no_grad():
        assert float((built(x) - want).abs().max()) <= 1e-9 * max(1.0, float(want.abs().max()))
