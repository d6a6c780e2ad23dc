"""One shape for the top-level edits: ``rewrite``, ``prune`` and ``from_module`` return an ``archgraph.Edit`` (the new
graph, the state in the form it was given, the rules applied and whether they keep the function) that unpacks as the
``(graph, state)`` pair they used to return; ``apply`` and ``Network.rewrite`` return a ``Rewrite`` naming its rules
the same way."""
import pytest
import torch

import archgraph
from archgraph import rules

TINY = "examples/seeds/tiny_cnn.yaml"
GPT = "examples/seeds/gpt_tiny.yaml"


def test_rewrite_returns_the_module_its_rule_and_a_true_exactness_claim():
    g = archgraph.load(TINY)
    m = archgraph.build(g).double().eval()
    rule = rules.AddFilters(node="c1", count=2)
    edit = archgraph.rewrite(g, m, rule)
    assert isinstance(edit, archgraph.Edit) and edit.rules == (rule,) and edit.exact
    g2, m2 = edit
    assert g2 is edit.graph and m2 is edit.state and isinstance(m2, torch.fx.GraphModule)
    assert g2.nodes["c1"].out_channels == g.nodes["c1"].out_channels + 2
    x = torch.randn(3, *g.inputs["image"], dtype=torch.float64)
    with torch.no_grad():
        assert float((m2(x) - m(x)).abs().max()) <= 1e-12   # exact, as claimed
    assert edit.log() == [rules.encode(rule)]


def test_prune_gives_weights_for_weights_and_a_module_for_a_module():
    g = archgraph.load(TINY)
    m = archgraph.build(g, seed=3).double().eval()
    m.c1.weight.requires_grad_(False)
    by_dict = archgraph.prune(g, m.state_dict(), ratio=0.5)
    by_module = archgraph.prune(g, m, ratio=0.5)
    assert type(by_dict.state) is dict and isinstance(by_module.state, torch.fx.GraphModule)
    assert by_dict.rules and by_dict.rules == by_module.rules and by_dict.graph == by_module.graph
    new = by_module.state
    assert not new.training and new.c2.weight.dtype == torch.float64 and not new.c1.weight.requires_grad
    assert new.c2.weight.requires_grad
    module_state = new.state_dict()
    assert module_state.keys() == by_dict.state.keys()
    assert all(torch.equal(v, by_dict.state[k]) for k, v in module_state.items())
    # the rules replay to the same graph, and exact is what they claim together
    step, exact = g, True
    for r in by_dict.rules:
        rw = archgraph.apply(step, r)
        step, exact = rw.graph, exact and rw.exact
    assert step == by_dict.graph and by_dict.exact == exact
    pruned_graph, pruned_weights = by_dict   # the pair it returned before
    assert pruned_graph is by_dict.graph and pruned_weights is by_dict.state
    same = archgraph.prune(g, m, ratio=0.0)   # nothing to remove: still a new module, sharing no tensor
    old = m.state_dict()
    assert not same.rules and same.exact and same.graph == g and same.state is not m
    assert all(torch.equal(v, old[k]) and v.data_ptr() != old[k].data_ptr() for k, v in same.state.state_dict().items())
    shown = repr(by_module)   # the state by its kind, never its tensors
    assert shown.startswith(f"Edit(graph={g.name!r}, state=<{type(new).__name__}>") and "prune_channels" in shown
    assert "tensor(" not in repr(by_dict) and f"<{len(by_dict.state)} tensors>" in repr(by_dict)


def test_prune_heads_alone_and_a_consumed_dict():
    g = archgraph.load(GPT)
    state = archgraph.build(g).state_dict()
    heads = archgraph.prune(g, state, 0.5, heads=True, channels=False)
    assert heads.rules and {r.name for r in heads.rules} == {"prune_heads"}
    assert heads.graph.nodes["b0_attn"].num_heads < g.nodes["b0_attn"].num_heads
    assert heads.graph.nodes["b0_fc"].out_features == g.nodes["b0_fc"].out_features
    kept = dict(state)
    archgraph.prune(g, kept, 0.5)
    assert kept.keys() == state.keys()   # not given up: left whole
    given = dict(state)
    consumed = archgraph.prune(g, given, 0.5, consume=True)
    assert len(given) < len(state) and consumed.graph == archgraph.prune(g, state, 0.5).graph


def test_from_module_and_the_graph_side_name_their_rules_too():
    lin = torch.nn.Sequential(torch.nn.Linear(4, 2))
    imported = archgraph.from_module(lin, input_shape=(4,))
    graph, weights = imported
    assert isinstance(imported, archgraph.Edit) and imported.rules == () and imported.exact
    assert torch.equal(weights["n0.weight"], lin[0].weight)
    rule = rules.AddFilters(node="c1", count=1)
    rw = archgraph.apply(archgraph.load(TINY), rule)
    assert isinstance(rw, archgraph.Rewrite) and rw.rules == (rule,)
    net = archgraph.Network(TINY)
    assert net.rewrite(rule).rules == (rule,)


def test_prune_refuses_bad_numbers_by_name():
    g = archgraph.load(TINY)
    with pytest.raises(archgraph.ConfigError, match="round_to"):
        archgraph.prune(g, archgraph.build(g), 0.5, round_to=0)
