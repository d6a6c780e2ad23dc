"""Exact growth of layer-norm transformers: MSG's masked widening (``add_filters init=masked``), HyperCloning's
duplication (``init=clone``), deeper by copying blocks (``stack_block``), each checked in float64 on random
weights, and the mask's ramp."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformer_helpers import example, gpt_graph

import archgraph
from archgraph import rules
from archgraph.errors import RuleError
from archgraph.fx.apply_plan import transfer

TOL = 1e-9


def random_module(graph, seed: int = 0) -> torch.nn.Module:
    """``graph`` built in float64, eval mode, every parameter random and every norm's mask random in [0.1, 1]."""
    m = archgraph.build(graph, dtype=torch.float64, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if name.endswith(".mask"):
                t.copy_(0.1 + 0.9 * torch.rand(t.shape, generator=gen, dtype=t.dtype))
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype) * 0.5)
    return m


def grown(graph, rule, old: torch.nn.Module, seed: int = 1):
    """(rewrite, the new graph's module with the old module's weights carried)."""
    rw = archgraph.apply(graph, rule)
    new = archgraph.build(rw.graph, dtype=torch.float64, seed=seed).eval()
    transfer(rw.plan, old, new)
    return rw, new


def error(graph, old, new) -> float:
    x = example(graph)
    with torch.no_grad():
        return float((old(*x) - new(*x)).abs().max())


# ---- masked widening (MSG) ---------------------------------------------------------------------------------------

def test_masked_widening_of_a_layernorm_stream_is_exact_and_ramps():
    g = gpt_graph(depth=2, d=8, norm="layernorm")
    old = random_module(g)
    rw, new = grown(g, rules.AddFilters(node="wte", count=4, init="masked", ramp=4), old)
    assert rw.exact and "mask" in rw.plan.note
    assert all(rw.graph.nodes[n].mask_ramp == 4 for n in ("b0_ln1", "b0_ln2", "b1_ln1", "b1_ln2", "ln_f"))
    assert error(g, old, new) <= TOL
    mask = new.b0_ln1.mask
    assert mask.shape == (12,) and bool((mask[8:] == 0).all())
    # the new channels' weights are not zero: the mask alone keeps the function
    assert float(new.b0_attn.q_proj.weight.detach()[:, 8:].abs().sum()) > 0
    assert float(new.wte.weight.detach()[:, 8:].abs().sum()) > 0
    new.train()
    x = example(g)
    for step in range(1, 5):
        new(*x)
        assert torch.allclose(new.b0_ln1.mask[8:], torch.full((4,), min(1.0, step / 4), dtype=torch.float64))
    assert bool((new.b0_ln1.mask == 1).all())


def test_a_fully_ramped_masked_norm_is_a_layer_norm():
    g = gpt_graph(depth=1, d=8, norm="layernorm")
    rw = archgraph.apply(g, rules.AddFilters(node="wte", count=4, init="masked"))
    m = archgraph.build(rw.graph, dtype=torch.float64).eval()
    x = torch.randn(2, 3, 12, dtype=torch.float64)
    ref = torch.nn.functional.layer_norm(x, (12,), m.b0_ln1.weight, m.b0_ln1.bias, 1e-5)
    assert torch.allclose(m.b0_ln1(x), ref, atol=1e-12)


def test_masked_widening_twice_and_other_readers_start_at_zero():
    g = gpt_graph(depth=1, d=8, norm="layernorm")
    old = random_module(g)
    rw, mid = grown(g, rules.AddFilters(node="wte", count=2, init="masked", ramp=3), old)
    mid.train()
    mid(*example(g))          # the first new channels part-way in
    mid.eval()
    rw2, new = grown(rw.graph, rules.AddFilters(node="b0_proj", count=3, init="masked", ramp=5), mid, seed=2)
    assert rw2.exact and rw2.graph.nodes["ln_f"].mask_ramp == 5
    assert error(g, mid, new) <= TOL
    assert torch.allclose(new.b0_ln1.mask[8:10], torch.full((2,), 1 / 3, dtype=torch.float64))
    assert bool((new.b0_ln1.mask[10:] == 0).all())


def test_masked_needs_layer_norms():
    with pytest.raises(RuleError, match="rmsnorm"):
        archgraph.apply(gpt_graph(norm="rmsnorm"), rules.AddFilters(node="wte", count=2, init="masked"))
    with pytest.raises(RuleError, match="no layer norm"):
        archgraph.apply(gpt_graph(), rules.AddFilters(node="b0_fc", count=2, init="masked"))


def test_masked_norm_exports_and_replays(tmp_path):
    from archgraph.interop.export import python_source
    g = gpt_graph(depth=1, d=8)
    rw = archgraph.apply(g, rules.AddFilters(node="wte", count=4, init="masked", ramp=7))
    assert "MaskedLayerNorm(12, 7" in python_source(rw.graph)
    again = archgraph.apply(g, rules.decode(rules.encode(rw.rule)))
    assert archgraph.graph.content_hash(again.graph) == archgraph.graph.content_hash(rw.graph)
    text = archgraph.dumps(rw.graph)
    assert "mask_ramp: 7" in text and archgraph.loads(text) == rw.graph
    from archgraph.interop.importer import from_module  # the built module imports back with its masks
    back, weights = from_module(archgraph.build(rw.graph), input_shape=[6], vocab=13)
    assert [n.mask_ramp for n in back.nodes.values() if n.op == "layernorm"] == [7, 7, 7]
    assert any(k.endswith(".mask") for k in weights)


# ---- HyperCloning --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("factor", [2, 3])
def test_cloning_the_stream_is_exact(norm, factor):
    g = gpt_graph(depth=2, d=8, norm=norm)
    old = random_module(g)
    rw, new = grown(g, rules.AddFilters(node="wte", count=8 * (factor - 1), init="clone"), old)
    assert rw.exact and rw.graph.nodes["wte"].embedding_dim == 8 * factor
    assert error(g, old, new) <= TOL
    assert torch.equal(new.wte.weight[:, 8:16], new.wte.weight[:, :8])


def test_cloning_with_noise_on_the_readers_stays_exact_and_breaks_symmetry():
    g = gpt_graph(depth=2, d=8)
    old = random_module(g)
    rw, new = grown(g, rules.AddFilters(node="wte", count=16, init="clone", eps=0.1, seed=3), old)
    assert rw.exact and error(g, old, new) <= TOL
    q = new.b0_attn.q_proj.weight.detach()
    assert not torch.allclose(q[:, :8], q[:, 8:16]) and torch.allclose(q[:, :8] + q[:, 8:16] + q[:, 16:],
                                                                       old.b0_attn.q_proj.weight, atol=1e-12)
    assert torch.equal(new.wte.weight[:, 8:16], new.wte.weight[:, :8])   # the copies' values stay equal


def test_cloning_needs_a_multiple_of_the_width():
    with pytest.raises(RuleError, match="multiple"):
        archgraph.apply(gpt_graph(d=8), rules.AddFilters(node="wte", count=3, init="clone"))


def test_cloning_an_mlp_is_exact():
    g = gpt_graph(depth=1, d=8, mlp=6)
    old = random_module(g)
    rw, new = grown(g, rules.AddFilters(node="b0_fc", count=6, init="clone"), old)
    assert rw.exact and rw.graph.nodes["b0_fc"].out_features == 12 and error(g, old, new) <= TOL


# ---- deeper: stacking copies of blocks (G_stack) -------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_stacking_a_block_with_zeroed_residual_writers_is_exact(norm):
    g = gpt_graph(depth=2, d=8, norm=norm)
    old = random_module(g)
    rw, new = grown(g, rules.StackBlock(start="b0_res2", end="b1_res2", init="zero", prefix="b2_"), old)
    assert rw.exact and error(g, old, new) <= TOL
    assert rw.graph.nodes["ln_f"].inputs == ("b2_res2",) and rw.graph.nodes["b2_ln1"].inputs == ("b1_res2",)
    assert torch.equal(new.b2_fc.weight, old.b1_fc.weight) and torch.equal(new.b2_attn.q_proj.weight,
                                                                            old.b1_attn.q_proj.weight)
    assert float(new.b2_proj.weight.detach().abs().sum()) == 0
    assert float(new.b2_attn.o_proj.weight.detach().abs().sum()) == 0


def test_stacking_copies_g_stack_style_is_not_exact_and_says_why():
    g = gpt_graph(depth=1, d=8)
    old = random_module(g)
    rw, new = grown(g, rules.StackBlock(start="wpe", end="b0_res2"), old)
    assert not rw.exact and "second time" in rw.plan.note
    assert [n for n in rw.graph.nodes if n.endswith("_copy")][:2] == ["b0_ln1_copy", "b0_attn_copy"]
    assert torch.equal(new.b0_proj_copy.weight, old.b0_proj.weight)
    # a copy after the whole stack (the network twice over its blocks), zeroed: exact
    g2 = gpt_graph(depth=2, d=8)
    rw2, new2 = grown(g2, rules.StackBlock(start="wpe", end="b1_res2", init="zero", prefix="s_"), random_module(g2))
    assert rw2.exact and "s_b0_fc" in rw2.graph.nodes


def test_stacking_errors_name_the_problem():
    g = gpt_graph(depth=2, d=8)
    with pytest.raises(RuleError, match="does not depend"):
        archgraph.apply(g, rules.StackBlock(start="b1_res2", end="b0_res2"))
    with pytest.raises(RuleError, match="from outside"):
        archgraph.apply(g, rules.StackBlock(start="b0_ln2", end="b0_res2"))
    with pytest.raises(RuleError, match="alike"):
        archgraph.apply(g, rules.StackBlock(start="b0_ln2", end="b0_fc"))


# ---- property: random layer-norm transformers x random exact growth ------------------------------------------------

@st.composite
def ln_transformer(draw):
    kv = draw(st.sampled_from([1, 2]))
    per = draw(st.sampled_from([1, 2]))
    return gpt_graph(depth=draw(st.integers(1, 2)), d=draw(st.sampled_from([4, 8])), heads=kv * per, kv_heads=kv,
                     head_dim=draw(st.sampled_from([2, 4])), causal=draw(st.booleans()),
                     norm="layernorm", mlp=draw(st.sampled_from([4, 6])), t=draw(st.integers(2, 4)), vocab=7)


@st.composite
def exact_growth(draw, graph):
    d = graph.shapes()["wte"][-1]
    kind = draw(st.sampled_from(["masked", "clone", "mlp", "heads", "block", "stack"]))
    stream = draw(st.sampled_from([n for n in graph.nodes if n == "wte" or n.endswith("_proj")]))
    if kind == "masked":
        return rules.AddFilters(node=stream, count=draw(st.integers(1, 4)), init="masked",
                                ramp=draw(st.integers(1, 50)))
    if kind == "clone":
        return rules.AddFilters(node=stream, count=d * draw(st.integers(1, 2)), init="clone")
    if kind == "mlp":
        fc = draw(st.sampled_from([n for n in graph.nodes if n.endswith("_fc")]))
        return rules.AddFilters(node=fc, count=draw(st.integers(1, 3)))
    if kind == "heads":
        node = draw(st.sampled_from([n for n, x in graph.nodes.items() if x.op == "attention"]))
        n = graph.nodes[node]
        return rules.AddHeads(node=node, count=n.num_heads // (n.kv_heads or n.num_heads))
    ends = [n for n in graph.nodes if n.endswith("res2")]
    if kind == "stack":
        end = draw(st.sampled_from(ends))
        starts = ["wpe"] + [n for n in ends if list(graph.nodes).index(n) < list(graph.nodes).index(end)]
        return rules.StackBlock(start=draw(st.sampled_from(starts)), end=end, init="zero",
                                after=draw(st.sampled_from([None, *ends])))
    after = draw(st.sampled_from(ends))
    return rules.InsertBlock(after=after, num_heads=1, head_dim=2, mlp_ratio=1.0)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_random_exact_growth_of_layernorm_transformers(data):
    g = data.draw(ln_transformer())
    old = random_module(g)
    x = example(g)
    with torch.no_grad():
        want = old(*x)
    m = old
    for _ in range(data.draw(st.integers(1, 3))):
        rule = data.draw(exact_growth(g))
        rw = archgraph.apply(g, rule)
        assert rw.exact, (rule, rw.plan.note)
        new = archgraph.build(rw.graph, dtype=torch.float64, seed=3).eval()
        transfer(rw.plan, m, new)
        g, m = rw.graph, new
    with torch.no_grad():
        assert float((m(*x) - want).abs().max()) <= TOL


# ---- methods choose the exact form; what is not exact is marked ----------------------------------------------------

def test_exact_form_picks_masked_for_layernorm_streams_only():
    ln, rms = gpt_graph(norm="layernorm"), gpt_graph(norm="rmsnorm")
    assert rules.exact_form(ln, rules.AddFilters(node="wte", count=2)).init == "masked"
    assert rules.exact_form(rms, rules.AddFilters(node="wte", count=2)).init == "preserve"
    assert rules.exact_form(ln, rules.AddFilters(node="wte", count=2, init="random")).init == "random"


def test_staged_run_logs_exactness_and_chooses_masked(tmp_path, capsys):
    import json
    seed = gpt_graph(depth=1, d=8, vocab=128, t=8, norm="layernorm")
    archgraph.save(seed, tmp_path / "seed.yaml")
    stages = [{"step": 1, "rules": [{"rule": "add_filters", "args": {"node": "wte", "count": 4}}]},
              {"step": 2, "rules": [{"rule": "add_filters", "args": {"node": "b0_fc", "count": 2,
                                                                      "init": "random"}}]}]
    cfg = {"seed": str(tmp_path / "seed.yaml"),
           "data": {"name": "text", "limit": 64, "test_limit": 16, "batch_size": 16, "eval_batch_size": 64},
           "method": {"name": "staged", "stages": stages, "require_exact": False},
           "schedule": {"epochs": 1, "lr": 0.01, "device": "cpu", "threads": 1, "format": "eager"}}
    archgraph.grow(cfg, tmp_path / "run", quiet=False)
    err = capsys.readouterr().err
    events = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    rewrites = [e for e in events if e["event"] == "rewrite"]
    assert rewrites[0]["args"]["init"] == "masked" and rewrites[0]["exact"] is True and "reason" not in rewrites[0]
    assert rewrites[1]["exact"] is False and "random" in rewrites[1]["reason"]
    assert "not exact: new channels start random" in err
    from archgraph.history.report import report_data
    from archgraph.history.run import Run
    versions = Run(tmp_path / "run").versions
    assert [v.exact for v in versions] == [None, True, False] and "random" in versions[2].reason
    data = report_data(tmp_path / "run")
    assert [v["exact"] for v in data["versions"]] == [None, True, False]
    assert archgraph.replay(tmp_path / "run") is not None


def test_a_masked_stream_exports_to_onnx_and_python(tmp_path):
    pytest.importorskip("onnxruntime")
    from archgraph.interop.export import export_onnx, python_source
    g = gpt_graph(depth=1, d=8)
    rw = archgraph.apply(g, rules.AddFilters(node="wte", count=4, init="masked"))
    m = archgraph.build(rw.graph)
    with torch.no_grad():
        m.b0_ln1.mask[8:] = 0.5    # part-way in: the mask's values are exported with the weights
    assert export_onnx(rw.graph, m.state_dict(), tmp_path / "m.onnx") is not None
    namespace: dict = {}
    exec(compile(python_source(rw.graph), "m.py", "exec"), namespace)
    from archgraph.fx.builder import class_name
    standalone = namespace[class_name(rw.graph.name)]()
    standalone.load_state_dict(m.state_dict())
    x = example(g)
    with torch.no_grad():
        assert torch.allclose(standalone.eval()(*x), m.eval()(*x), atol=1e-6)
