"""The ``moe`` op (a routed mixture of SwiGLU experts) against the transformers blocks of Mixtral, Qwen3-MoE and
OLMoE, and its rules: ``add_experts`` (exact), ``prune_experts`` (exact only for experts never picked), widening
the stream through it and stacking a block holding it (float64)."""
from __future__ import annotations

import importlib

import pytest
import torch

import archgraph
from archgraph import rules
from archgraph.errors import RuleError
from archgraph.fx.apply_plan import transfer
from archgraph.fx.layers import MoE

TOL = 1e-9


def moe_graph(norm="rmsnorm", experts=4, top_k=2, normalize=True, d=8, t=5) -> archgraph.Graph:
    """A pre-norm block with a mixture of experts as its MLP, between an embedding and a head."""
    return archgraph.Graph.model_validate({"archgraph": 1, "name": "moe", "inputs": {"tokens": {"shape": [t],
                                                                                                "vocab": 11}},
        "nodes": {"wte": {"op": "embedding", "in": "tokens", "embedding_dim": d},
                  "b0_ln": {"op": norm, "in": "wte"},
                  "b0_moe": {"op": "moe", "in": "b0_ln", "num_experts": experts, "top_k": top_k, "hidden": 6,
                             "normalize": normalize},
                  "b0_res": {"op": "add", "in": ["wte", "b0_moe"]},
                  "ln_f": {"op": norm, "in": "b0_res"},
                  "head": {"op": "linear", "in": "ln_f", "out_features": 11}},
        "outputs": ["head"]})


def random_module(graph, seed=0):
    m = archgraph.build(graph, dtype=torch.float64, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if t.is_floating_point() and not name.endswith("mask"):
                t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype) * 0.5)
    return m


def tokens(graph, n=3):
    return torch.randint(0, 11, (n, graph.inputs["tokens"][0]), generator=torch.Generator().manual_seed(2))


def grown(graph, rule, old, seed=1):
    rw = archgraph.apply(graph, rule)
    new = archgraph.build(rw.graph, dtype=torch.float64, seed=seed).eval()
    transfer(rw.plan, old, new)
    return rw, new


def error(graph, old, new) -> float:
    x = tokens(graph)
    with torch.no_grad():
        return float((old(x) - new(x)).abs().max())


# ---- the op against transformers' blocks ---------------------------------------------------------------------------

FAMILIES = [("mixtral", "MixtralConfig", "MixtralSparseMoeBlock", dict(num_local_experts=4), True),
            ("qwen3_moe", "Qwen3MoeConfig", "Qwen3MoeSparseMoeBlock", dict(num_experts=4, norm_topk_prob=True), True),
            ("qwen3_moe", "Qwen3MoeConfig", "Qwen3MoeSparseMoeBlock", dict(num_experts=4, norm_topk_prob=False),
             False),
            ("olmoe", "OlmoeConfig", "OlmoeSparseMoeBlock", dict(num_experts=4), False)]


@pytest.mark.parametrize("family,config,block,sizes,normalize", FAMILIES)
def test_moe_equals_the_transformers_block(family, config, block, sizes, normalize):
    from archgraph.compat import import_transformers
    tr = import_transformers()
    module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    cfg = getattr(tr, config)(hidden_size=8, intermediate_size=6, moe_intermediate_size=6, num_experts_per_tok=2,
                              **sizes)
    ref = getattr(module, block)(cfg).double().eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
    ours = MoE(8, 4, 6, 2, normalize=normalize).double().eval()
    with torch.no_grad():
        ours.router.weight.copy_(ref.gate.weight)
        ours.gate_proj.copy_(ref.experts.gate_up_proj[:, :6])
        ours.up_proj.copy_(ref.experts.gate_up_proj[:, 6:])
        ours.down_proj.copy_(ref.experts.down_proj)
        x = torch.randn(2, 5, 8, generator=gen, dtype=torch.float64)
        want = ref(x)
        want = want[0] if isinstance(want, tuple) else want
        # transformers takes the router's softmax in float32 whatever the dtype: agreement to float32 rounding
        assert float((ours(x) - want).abs().max()) <= 1e-6 * float(want.abs().max())


def test_moe_sizes_and_routing():
    g = moe_graph()
    node = g.nodes["b0_moe"]
    assert archgraph.graph.summary(g)["params"] > 0
    from archgraph.shapes import node_macs
    assert node_macs(g, "b0_moe") == 5 * (4 * 8 + 2 * 3 * 8 * 6)
    m = MoE(8, 4, 6, 2).double()
    x = torch.randn(1, 3, 8, dtype=torch.float64)
    probs = torch.softmax(m.router(x), -1)
    assert ((probs >= probs.topk(2, -1).values[..., -1:]).sum(-1) == 2).all()
    with pytest.raises(archgraph.GraphError, match="top_k"):
        archgraph.Graph.model_validate({**g.to_dict(), "nodes": {**g.to_dict()["nodes"], "b0_moe": {
            **g.to_dict()["nodes"]["b0_moe"], "top_k": 5}}}).shapes()
    assert node.normalize


# ---- rules -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("normalize", [True, False])
def test_add_experts_is_exact_and_ramps(normalize):
    g = moe_graph(normalize=normalize)
    old = random_module(g)
    rw, new = grown(g, rules.AddExperts(node="b0_moe", count=2, ramp=4), old)
    assert rw.exact and rw.graph.nodes["b0_moe"].num_experts == 6 and error(g, old, new) <= TOL
    assert new.b0_moe.expert_mask.tolist() == [1, 1, 1, 1, 0, 0]
    assert torch.equal(new.b0_moe.gate_proj[:4], old.b0_moe.gate_proj)
    new.train()
    new(tokens(g))
    assert new.b0_moe.expert_mask.tolist()[4:] == [0.25, 0.25]
    new.eval()
    rw2, newer = grown(rw.graph, rules.AddExperts(node="b0_moe", count=1, ramp=8), new)
    assert rw2.exact and error(g, new, newer) <= TOL and newer.b0_moe.expert_mask.tolist()[4:] == [0.25, 0.25, 0]


def test_prune_experts_exact_only_for_experts_never_picked():
    g = moe_graph()
    old = random_module(g)
    rw, grown_m = grown(g, rules.AddExperts(node="b0_moe", count=2), old)
    # the two new experts' mask is 0: the router never picks them, and removing them gives the old network back
    rw2, back = grown(rw.graph, rules.PruneExperts(node="b0_moe", indices=[4, 5]), grown_m)
    assert not rw2.exact and "never picks" in rw2.plan.note
    assert error(g, old, back) <= TOL and back.b0_moe.expert_mask.tolist() == [1, 1, 1, 1]
    rw3, pruned = grown(g, rules.PruneExperts(node="b0_moe", indices=[0]), old)
    assert rw3.graph.nodes["b0_moe"].num_experts == 3 and error(g, old, pruned) > 1e-3   # expert 0 was picked
    assert torch.equal(pruned.b0_moe.down_proj, old.b0_moe.down_proj[1:])
    with pytest.raises(RuleError, match="top_k"):
        archgraph.apply(g, rules.PruneExperts(node="b0_moe", indices=[0, 1, 2]))
    with pytest.raises(RuleError, match="does not exist"):
        archgraph.apply(g, rules.PruneExperts(node="b0_moe", indices=[7]))
    with pytest.raises(RuleError, match="mixture of experts"):
        archgraph.apply(g, rules.AddExperts(node="head"))


def test_widening_the_stream_through_experts_is_exact():
    g = moe_graph(norm="rmsnorm")
    old = random_module(g)
    rw, new = grown(g, rules.AddFilters(node="wte", count=3), old)
    assert rw.exact and new.b0_moe.gate_proj.shape == (4, 6, 11) and error(g, old, new) <= TOL
    ln = moe_graph(norm="layernorm")
    old = random_module(ln)
    for init, count in (("masked", 3), ("clone", 8)):
        rw, new = grown(ln, rules.AddFilters(node="wte", count=count, init=init), old)
        assert rw.exact and error(ln, old, new) <= TOL, init


def test_stacking_a_moe_block_with_zeroed_writers_is_exact():
    g = moe_graph()
    old = random_module(g)
    rw, new = grown(g, rules.StackBlock(start="wte", end="b0_res", init="zero", prefix="b1_"), old)
    assert rw.exact and error(g, old, new) <= TOL
    assert float(new.b1_moe.down_proj.detach().abs().sum()) == 0
    assert torch.equal(new.b1_moe.gate_proj, old.b0_moe.gate_proj)


def test_moe_graph_exports_and_replays():
    from archgraph.interop.export import python_source
    g = moe_graph()
    rw = archgraph.apply(g, rules.AddExperts(node="b0_moe", count=1, ramp=3))
    assert "MoE(8, 5, 6, 2, normalize=True, activation='silu', ramp=3)" in python_source(rw.graph)
    assert archgraph.loads(archgraph.dumps(rw.graph)) == rw.graph
    assert archgraph.apply(g, rules.decode(rules.encode(rw.rule))).graph == rw.graph


def test_add_filters_and_prune_channels_inside_the_experts():
    g = moe_graph()
    old = random_module(g)
    rw, new = grown(g, rules.AddFilters(node="b0_moe.experts", count=3), old)
    assert rw.exact and rw.graph.nodes["b0_moe"].hidden == 9 and error(g, old, new) <= TOL
    assert new.b0_moe.gate_proj.shape == (4, 9, 8) and float(new.b0_moe.down_proj.detach()[:, :, 6:].abs().sum()) == 0
    assert float(new.b0_moe.up_proj.detach()[:, 6:].abs().sum()) > 0
    assert not archgraph.apply(g, rules.AddFilters(node="b0_moe.experts", count=1, init="random")).exact
    with torch.no_grad():    # units whose down_proj columns are zero in every expert go exactly
        old.b0_moe.down_proj[:, :, [1, 4]] = 0
    rw, pruned = grown(g, rules.PruneChannels(node="b0_moe.experts", indices=[1, 4]), old)
    assert rw.graph.nodes["b0_moe"].hidden == 4 and "down_proj" in rw.plan.note and error(g, old, pruned) <= TOL
    assert torch.equal(pruned.b0_moe.gate_proj, old.b0_moe.gate_proj[:, [0, 2, 3, 5]])
    with pytest.raises(RuleError, match="mixture of experts"):
        archgraph.apply(g, rules.AddFilters(node="head.experts"))
    with pytest.raises(RuleError, match="every one"):
        archgraph.apply(g, rules.PruneChannels(node="b0_moe.experts", indices=list(range(6))))
    with pytest.raises(RuleError, match="preserve, zero or random"):
        archgraph.apply(g, rules.AddFilters(node="b0_moe.experts", init="clone"))


def test_mixtral_imports_exactly_and_grows_exactly():
    pytest.importorskip("transformers")
    import copy

    from archgraph.fx.builder import build
    from archgraph.fx.weights import load_into
    from archgraph.interop import hf
    from archgraph.interop.equivalence import randomize_normalization
    m = randomize_normalization(hf.build_model("mixtral", lm_head=True))
    graph, weights = hf.from_model(m, 6)     # checks the logits in float64 (raises above 1e-9)
    moe = graph.nodes["layers_0_mlp"]
    assert (moe.op, moe.num_experts, moe.top_k, moe.hidden, moe.normalize) == ("moe", 4, 2, 48, True)
    ref = copy.deepcopy(m).double().eval()
    x = torch.randint(0, 100, (2, 6), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), hf._native_rms_norms(ref), hf._native_routers(ref):
        logits = ref(input_ids=x).logits
    built = build(graph, dtype=torch.float64)
    load_into(built, {k: v.double() for k, v in weights.items()})
    built.eval()
    for rule in (rules.AddExperts(node="layers_0_mlp", count=2), rules.AddFilters(node="layers_1_mlp.experts", count=8),
                 rules.AddFilters(node="embed_tokens", count=32, init="clone"),
                 rules.StackBlock(start="layers_0_add_2", end="layers_1_add_2", init="zero", prefix="layers_2_")):
        rw = archgraph.apply(graph, rule)
        new = build(rw.graph, dtype=torch.float64, seed=1).eval()
        transfer(rw.plan, built, new)
        assert rw.exact, rule
        graph, built = rw.graph, new
        with torch.no_grad():
            assert float((built(x) - logits).abs().max()) <= TOL, rule
