"""Every rule refuses what it cannot do with one RuleError naming the rule, the node and the reason, and the old
graph stays as it was; rules are data (parse, args, logs)."""
from __future__ import annotations

import json

import pytest
from conftest import ROOT

import archgraph
from archgraph import rules
from archgraph.errors import RuleError


def seed(name):
    return archgraph.load(ROOT / "examples" / "seeds" / f"{name}.yaml")


GROUPED = archgraph.loads("""
archgraph: 1
inputs: {x: [4, 6, 6]}
nodes:
  a: {op: conv2d, in: x, out_channels: 4, kernel_size: 3, padding: 1}
  g: {op: conv2d, in: a, out_channels: 6, kernel_size: 1, groups: 2}
  r: {op: relu, in: g}
  s: {op: conv2d, in: r, out_channels: 3, kernel_size: 1}
  ln: {op: layernorm, in: s}
  p: {op: global_avg_pool, in: ln}
  fc: {op: linear, in: p, out_features: 2}
outputs: [fc]
""")

CASES = [
    # (seed, rule, node, field, words in the message)
    ("tiny_cnn", rules.AddFilters(node="c9", count=1), "c9", "node", "no node 'c9'"),
    ("tiny_cnn", rules.AddFilters(node="r1", count=1), "r1", "node", "relu; add_filters widens a conv2d or linear"),
    ("tiny_cnn", rules.AddFilters(node="fc", count=1), "fc", "node", "graph output 'fc'"),
    ("mobilenet_depthwise", rules.AddFilters(node="dw1", count=1), "dw1", "node", "depthwise conv"),
    (GROUPED, rules.AddFilters(node="g", count=2), "g", "node", "grouped conv"),
    (GROUPED, rules.AddFilters(node="a", count=2), "a", "node", "read by grouped conv 'g'"),  # tied in groups
    ("tiny_cnn", rules.SplitFilters(node="c1", indices=(4,)), "c1", "indices", "channel 4 does not exist"),
    ("tiny_cnn", rules.SplitFilters(node="c1", indices=(1, 1)), "c1", "indices", "listed twice"),
    ("tiny_cnn", rules.PruneChannels(node="c1", indices=(0, 1, 2, 3)), "c1", None, "every one of its channels"),
    ("tiny_cnn", rules.PruneChannels(node="fc", indices=(0,)), "fc", "indices", "graph output 'fc'"),
    ("tiny_cnn", rules.PruneChannels(node="image", indices=(0,)), "image", "indices", "comes from graph input 'image'"),
    ("tiny_cnn", rules.PruneChannels(node="c1", indices=(9,)), "c1", "indices", "channel 9 does not exist"),
    (GROUPED, rules.PruneChannels(node="r", indices=(0, 1, 2, 3, 4, 5)), "g", None, "every one of its channels"),
    (GROUPED, rules.PruneChannels(node="r", indices=(0, 1, 2)), "r", "indices",
     "grouped conv 'g' (groups=2) would lose 3 from group 0, 0 from group 1 of its output channels"),
    ("tiny_cnn", rules.InsertLayer(after="c1", kernel_size=2), "c1", "kernel_size", "odd kernel"),
    ("tiny_cnn", rules.InsertLayer(after="c1", activation="relu"), "c1", "activation", "'c1' can be negative"),
    ("tiny_cnn", rules.InsertLayer(after="r1", activation="gelu"), "r1", "activation", "gelu is not the identity"),
    ("tiny_cnn", rules.InsertLayer(after="c1", op="linear"), "c1", "op", "a linear needs a [F] input"),
    ("tiny_cnn", rules.InsertLayer(after="gap", op="conv2d"), "gap", "op", "a conv2d needs a [C, H, W] input"),
    ("tiny_cnn", rules.InsertBlock(after="nowhere"), "nowhere", "after", "no node 'nowhere'"),
    ("tiny_cnn", rules.DeleteNode(node="p1"), "p1", "node", "changes the shape"),
    ("resnet_cifar", rules.DeleteNode(node="b1_sum"), "b1_sum", "node", "2 inputs"),
    ("tiny_cnn", rules.CollapseLayer(node="fc"), "fc", "node", "graph output"),
    ("tiny_cnn", rules.CollapseLayer(node="p1"), "p1", "node", "it feeds 'c2' (conv2d)"),
    ("densenet_concat", rules.CollapseLayer(node="stem"), "stem", "node", "it feeds"),
]


@pytest.mark.parametrize("graph,rule,node,field,words", CASES, ids=[f"{c[1].name}-{c[2]}" for c in CASES])
def test_rules_refuse_with_a_named_error(graph, rule, node, field, words):
    g = seed(graph) if isinstance(graph, str) else graph
    before = g.to_dict()
    with pytest.raises(RuleError) as info:
        archgraph.apply(g, rule)
    err = info.value
    assert err.rule == rule.name and err.node == node, str(err)
    if field:
        assert err.field == field, str(err)
    assert words in str(err), str(err)
    assert f"rule {rule.name}" in str(err) and f"node '{node}'" in str(err)
    assert g.to_dict() == before


def test_bad_arguments_are_rule_errors():
    with pytest.raises(RuleError) as info:
        rules.AddFilters(node="c1", count=0)
    assert info.value.rule == "add_filters" and info.value.field == "count"
    with pytest.raises(RuleError, match="unknown argument 'cont' \\(did you mean 'count'\\?\\)"):
        rules.AddFilters(node="c1", cont=2)
    with pytest.raises(RuleError, match="init"):
        rules.parse("add_filters", {"node": "c1", "init": "magic"})
    with pytest.raises(RuleError, match="unknown rule 'add_filter' \\(did you mean 'add_filters'\\?\\)"):
        rules.parse("add_filter", {})
    with pytest.raises(RuleError, match="required argument is missing"):
        rules.parse("prune_channels", {"node": "c1"})


def test_layernorm_makes_widening_inexact():
    rw = archgraph.apply(GROUPED, rules.AddFilters(node="s", count=1))
    assert not rw.exact and "'ln' normalises" in rw.plan.note


def test_pruning_under_a_layernorm_says_why_it_is_not_exact():
    rw = archgraph.apply(GROUPED, rules.PruneChannels(node="s", indices=(0,)))
    assert not rw.exact and "not exact: 'ln' (layernorm) normalises over these channels" in rw.plan.note
    assert "mean and variance" in rw.plan.note


def test_rules_are_data():
    assert list(rules.RULES) == ["add_filters", "split_filters", "prune_channels", "insert_layer", "insert_block",
                                 "delete_node", "collapse_layer", "add_heads", "prune_heads", "stack_block",
                                 "add_experts", "prune_experts"]
    r = rules.parse("split_filters", {"node": "c1", "indices": "0,2", "eps": "0"})
    assert r == rules.SplitFilters(node="c1", indices=(0, 2), eps=0.0)
    assert rules.parse("split_filters", {"node": "c1", "indices": "[0, 2]", "eps": "0"}) == r
    assert rules.parse("insert_layer", {"after": "r1", "norm": "none"}).norm is None
    logged = json.loads(json.dumps({"rule": r.name, "args": r.args()}))
    assert rules.parse(logged["rule"], logged["args"]) == r
    with pytest.raises(Exception):
        r.node = "c2"  # frozen
    g = seed("tiny_cnn")
    rw = archgraph.apply(g, logged)
    assert rw.rule == r and rw.log() == {"rule": "split_filters", "args": r.args()}
    assert str(r) == "split_filters(node=c1, indices=[0, 2], eps=0.0, seed=0)"
    for name, cls in rules.RULES.items():
        assert cls.name == name and cls.kind in ("growth", "prune")


def test_public_functions_survive_importing_their_modules():
    import archgraph.fx.apply_plan  # noqa: F401
    import archgraph.fx.magnitude  # noqa: F401 - importing a submodule binds its name on the package ...
    g = seed("tiny_cnn")
    m = archgraph.build(g)
    g2, w2 = archgraph.prune(g, m.state_dict(), ratio=0.5)  # ... yet the name still calls the function
    rw = archgraph.apply(g, rules.AddFilters(node="c1", count=1))
    m2 = archgraph.build(rw.graph)
    archgraph.transfer(rw.plan, m, m2)
    assert g2.nodes["c1"].out_channels == 2 and m2.c1.weight.shape[0] == 5
