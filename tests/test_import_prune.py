"""Channel coupling of the imported ops (channel shuffle, slice, grouped convs) and pruning of imported models.

Exactness check: pruning a set of coupling classes must give the same outputs as the original network whose readers
ignore those channels (their input weights on them zeroed). It holds for every op except the ones that normalise
over the channels (layernorm), so the models here avoid those.
"""
import pytest
import torch

import archgraph
from archgraph.channels import analyse
from archgraph.fx.apply_plan import transfer_state
from archgraph.fx.builder import build
from archgraph.interop.equivalence import randomize_normalization
from archgraph.ops.registry import GROUPED, OPS
from archgraph.rules import PruneChannels
from archgraph.rules.prune import classes_at


def removed_by(rules, ch) -> set:
    """The coupling classes these prune_channels rules remove (each rule's node and its ``also`` nodes)."""
    removed = set()
    for rule in rules:
        for node, indices in rule.selections().items():
            removed |= classes_at(rule, ch, node, list(indices))
    return removed


def readers_ignore(graph, weights, removed: set[int]) -> dict:
    """``weights`` with every input weight on a channel of the ``removed`` classes zeroed."""
    ch = analyse(graph)
    shapes = graph.shapes()
    out = {k: v.clone() for k, v in weights.items()}
    for nid, node in graph.nodes.items():
        src = node.inputs[0]
        positions, start = [], 0
        for token, block in zip(ch.slots[src].tokens, ch.slots[src].block_sizes()):
            if ch.cls(token) in removed:
                positions.extend(range(start, start + block))
            start += block
        if not positions:
            continue
        layout = OPS[node.op].layout(node, [shapes[i] for i in node.inputs])
        for param, (_, in_axis) in layout.items():
            if in_axis is not None:
                out[f"{nid}.{param}"].index_fill_(in_axis, torch.tensor(positions), 0.0)
        if ch.roles[nid] == GROUPED:
            per_in = shapes[src][0] // node.groups
            per_out = node.out_channels // node.groups
            w = out[f"{nid}.weight"]
            for p in positions:
                g = p // per_in
                w[g * per_out:(g + 1) * per_out, p % per_in] = 0.0
    return out


def run(graph, weights, x):
    m = build(graph, dtype=next(iter(weights.values())).dtype)
    m.load_state_dict(weights)
    with torch.no_grad():
        return m.eval()(x)


def check_exact(graph, rule_or_pairs, weights, x):
    """Apply prune_channels for ``{node: indices}``; the result equals the original with readers ignoring them."""
    from archgraph.rules.prune import prune_draft
    selections = dict(rule_or_pairs)
    ch = analyse(graph)
    removed = set()
    for node, indices in selections.items():
        removed |= classes_at(PruneChannels(node=node, indices=tuple(indices)), ch, node, list(indices))
    rule = PruneChannels(node=next(iter(selections)), indices=tuple(next(iter(selections.values()))))
    rw = prune_draft(rule, graph, selections)
    pruned = transfer_state(rw.plan, weights)
    torch.testing.assert_close(run(rw.graph, pruned, x), run(graph, readers_ignore(graph, weights, removed), x),
                               rtol=1e-5, atol=1e-5)
    return rw.graph, pruned


SHUFFLE = """
archgraph: 1
inputs: {x: [3, 6, 6]}
nodes:
  a:    {op: conv2d, in: x, out_channels: 4, kernel_size: 3, padding: 1}
  b:    {op: conv2d, in: x, out_channels: 4, kernel_size: 1}
  bn:   {op: batchnorm2d, in: b}
  cat:  {op: concat, in: [a, bn]}
  sh:   {op: channel_shuffle, in: cat, groups: 2}
  left: {op: slice, in: sh, start: 0, stop: 4}
  right: {op: slice, in: sh, start: 4, stop: 8}
  c:    {op: conv2d, in: right, out_channels: 4, kernel_size: 1}
  cat2: {op: concat, in: [left, c]}
  sh2:  {op: channel_shuffle, in: cat2, groups: 2}
  pool: {op: global_avg_pool, in: sh2}
  fc:   {op: linear, in: pool, out_features: 3}
outputs: [fc]
"""


def test_shuffle_ties_a_column_of_every_group():
    g = archgraph.loads(SHUFFLE)
    ch = analyse(g)
    a, b = ch.classes("a"), ch.classes("bn")
    assert a == b  # column i of the shuffle grid: a[i] and b[i] go together
    assert ch.classes("sh") == [a[0], a[0], a[1], a[1], a[2], a[2], a[3], a[3]]
    assert ch.classes("left") == [a[0], a[0], a[1], a[1]]
    # the second shuffle ties c's channels to left's, so c[0], c[1] follow column 0
    assert ch.classes("c") == [a[0], a[0], a[1], a[1]]


def test_pruning_through_shuffle_and_slices_is_exact():
    g = archgraph.loads(SHUFFLE)
    w = randomize_normalization(build(g)).state_dict()
    x = torch.randn(2, 3, 6, 6)
    g2, _ = check_exact(g, {"a": [3]}, w, x)
    assert g2.nodes["a"].out_channels == 3 and g2.nodes["b"].out_channels == 3
    assert (g2.nodes["left"].start, g2.nodes["left"].stop) == (0, 4)
    assert (g2.nodes["right"].start, g2.nodes["right"].stop) == (4, 6)
    g3, _ = check_exact(g, {"a": [0]}, w, x)  # column 0 lives in the left slice: c loses two channels too
    assert (g3.nodes["left"].start, g3.nodes["left"].stop) == (0, 2)
    assert g3.nodes["c"].out_channels == 2


def test_pruning_cannot_empty_a_slice():
    g = archgraph.loads(SHUFFLE)
    with pytest.raises(archgraph.RuleError, match="every one of its channels"):
        archgraph.apply(g, PruneChannels(node="a", indices=(2, 3)))


GROUPED_NET = """
archgraph: 1
inputs: {x: [3, 5, 5]}
nodes:
  a:   {op: conv2d, in: x, out_channels: 12, kernel_size: 1}
  bn:  {op: batchnorm2d, in: a}
  g:   {op: conv2d, in: bn, out_channels: 12, kernel_size: 3, padding: 1, groups: 4, bias: false}
  gbn: {op: batchnorm2d, in: g}
  r:   {op: relu, in: gbn}
  c:   {op: conv2d, in: r, out_channels: 5, kernel_size: 1}
outputs: [c]
"""


def test_grouped_conv_lets_every_group_choose_its_channels():
    g = archgraph.loads(GROUPED_NET)
    ch = analyse(g)
    assert len(set(ch.classes("a"))) == 12 and len(set(ch.classes("g"))) == 12   # nothing tied
    blocks = ch.local_blocks()
    a, out = ch.classes("a"), ch.classes("g")
    assert blocks[a[4]] == frozenset(a[3:6]) and blocks[out[11]] == frozenset(out[9:12])
    assert ch.unbalanced({a[1], a[5], a[6], a[9]}) is None
    assert "would lose 1 from group 0, 0 from group 1" in ch.unbalanced({a[1]})


def test_pruning_around_a_grouped_conv_is_exact():
    g = archgraph.loads(GROUPED_NET)
    w = randomize_normalization(build(g)).state_dict()
    x = torch.randn(2, 3, 5, 5)
    # one channel from each group of 3, a different position in every group, on the input and on the output
    g2, w2 = check_exact(g, {"a": [1, 5, 6, 9], "g": [2, 3, 7, 11]}, w, x)
    assert g2.nodes["a"].out_channels == 8 and g2.nodes["g"].out_channels == 8 and g2.nodes["g"].groups == 4
    assert tuple(w2["g.weight"].shape) == (8, 2, 3, 3)
    old = w["g.weight"]
    expected = torch.cat([old[[0, 1]][:, [0, 2]], old[[4, 5]][:, [0, 1]], old[[6, 8]][:, [1, 2]],
                          old[[9, 10]][:, [1, 2]]])
    assert torch.equal(w2["g.weight"], expected)


def test_pruning_a_grouped_conv_unevenly_is_refused():
    g = archgraph.loads(GROUPED_NET)
    with pytest.raises(archgraph.RuleError, match=r"grouped conv 'g' \(groups=4\) would lose 1 from group 0"):
        archgraph.apply(g, PruneChannels(node="a", indices=(1,)))
    with pytest.raises(archgraph.RuleError, match="output channels"):
        archgraph.apply(g, PruneChannels(node="g", indices=(0, 1, 2, 3)))


def test_magnitude_pruning_picks_each_groups_own_channels_exactly_in_float64():
    """archgraph.prune: each group of the grouped conv drops its own least important channel (not the same
    position everywhere); the result equals the original with those channels' readers zeroed, in float64."""
    g = archgraph.loads(GROUPED_NET.replace("out_channels: 5", "out_channels: 5, bias: false"))
    m = build(g, dtype=torch.float64, seed=1)
    randomize_normalization(m)
    with torch.no_grad():   # make a different in-group position the weakest in every group, on both sides
        for k, pos in enumerate([0, 2, 1, 0]):
            for t in (m.a.weight, m.bn.weight):
                t[3 * k + pos] *= 1e-3
            m.g.weight[3 * k:3 * k + 3, pos] *= 1e-3
            for t in (m.g.weight, m.gbn.weight):
                t[3 * k + 2 - pos] *= 1e-3
            m.c.weight[:, 3 * k + 2 - pos] *= 1e-3
    w = m.state_dict()
    edit = archgraph.prune(g, w, ratio=0.4)
    assert {r.node: r.indices for r in edit.rules} == {"a": (0, 5, 7, 9), "g": (2, 3, 7, 11)}
    ch = analyse(g)
    removed = removed_by(edit.rules, ch)
    pruned, pw = edit
    assert pruned.nodes["g"].groups == 4 and tuple(pw["g.weight"].shape) == (8, 2, 3, 3)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    err = (run(pruned, pw, x) - run(g, readers_ignore(g, w, removed), x)).abs().max().item()
    assert err <= 1e-12


# ---- properties on random graphs with the imported ops ---------------------------------------------------------

from hypothesis import HealthCheck, assume, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from rewrite_helpers import build64, inputs_for, max_error, outputs  # noqa: E402
from strategies import graph_data, rule_for  # noqa: E402

from archgraph.errors import RuleError  # noqa: E402
from archgraph.fx.materialise import materialise  # noqa: E402

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def imported_graphs():
    from archgraph.format.yaml_io import graph_from_data
    return graph_data(image=True, imported=True).map(graph_from_data)


@PROPERTY
@given(imported_graphs(), st.data())
def test_pruning_imported_ops_matches_readers_ignoring_the_channels(g, data):
    rule = data.draw(rule_for(g, kinds=("prune_channels",)), label="rule")
    assume(isinstance(rule, PruneChannels))
    try:
        rw = archgraph.apply(g, rule)
    except RuleError:
        assume(False)
    ch = analyse(g)
    removed = classes_at(rule, ch, rule.node, list(rule.indices))
    assume(ch.mixes(removed) is None)
    event("through a shuffle" if any(n.op == "channel_shuffle" for n in g.nodes.values()
                                     if set(ch.classes(n.inputs[0])) & removed) else "no shuffle")
    event("through a grouped conv" if any(ch.roles[k] == GROUPED and set(ch.classes(n.inputs[0])) & removed
                                          for k, n in g.nodes.items()) else "no grouped conv")
    module = build64(g)
    xs = inputs_for(g)
    ignoring = build(g, dtype=torch.float64)
    ignoring.load_state_dict(readers_ignore(g, module.state_dict(), removed))
    assert max_error(outputs(ignoring.eval(), xs), outputs(materialise(rw, module), xs)) <= 1e-8


@PROPERTY
@given(imported_graphs(), st.data())
def test_every_rule_on_imported_ops_applies_cleanly(g, data):
    """Any rule either refuses with a RuleError or gives a valid graph whose weights fit, and keeps the function
    when it says it does."""
    rule = data.draw(rule_for(g), label="rule")
    try:
        rw = archgraph.apply(g, rule)
    except RuleError:
        assume(False)
    event(f"{rule.name} {'exact' if rw.exact else 'not exact'}")
    module = build64(g)
    new = materialise(rw, module)
    xs = inputs_for(g)
    out = outputs(new, xs)
    assert all(torch.isfinite(o).all() for o in out)
    if rw.exact:
        assert max_error(outputs(module, xs), out) <= 1e-8, rule


@PROPERTY
@given(imported_graphs(), st.sampled_from([0.25, 0.5, 0.75]), st.integers(0, 9))
def test_magnitude_pruning_of_random_graphs_matches_readers_ignoring_the_channels(g, ratio, seed):
    """archgraph.prune (random scores: a different choice in every group of a grouped conv) always gives a selection
    the rewrite takes, and the result equals the original with the removed channels' readers zeroed (float64)."""
    ch = analyse(g)
    module = build64(g)
    edit = archgraph.prune(g, module, ratio=ratio, criterion="random", seed=seed)
    rules = edit.rules
    assume(rules)
    removed = removed_by(rules, ch)
    assume(ch.mixes(removed) is None)
    assert ch.unbalanced(removed) is None
    groups = [gr for gr in ch.groupings if {ch.cls(t) for t in gr.tokens} & removed]
    event("through a grouped conv" if groups else "no grouped conv")
    ignoring = build(g, dtype=torch.float64)
    ignoring.load_state_dict(readers_ignore(g, module.state_dict(), removed))
    xs = inputs_for(g)
    assert max_error(outputs(ignoring.eval(), xs), outputs(edit.state, xs)) <= 1e-8


# ---- archgraph.prune on imported torchvision models --------------------------------------------------------------

from archgraph.interop.equivalence import torchvision_model  # noqa: E402
from archgraph.interop.importer import from_module  # noqa: E402


@pytest.mark.parametrize("name", ["shufflenet_v2_x1_0", "mobilenet_v3_small", "regnet_x_400mf", "googlenet",
                                  "densenet121", "efficientnet_b0", "resnext50_32x4d"])
def test_pruning_an_imported_model_is_exact_on_what_it_keeps(name):
    """Half the channels of every coupled group go; the pruned network computes what the original computes when its
    readers ignore the removed channels (channel shuffles, slices, grouped convs, concats, squeeze-excitation)."""
    model = randomize_normalization(torchvision_model(name, num_classes=10))
    graph, weights = from_module(model, input_shape=(3, 64, 64))
    pruned, pruned_weights = edit = archgraph.prune(graph, weights, ratio=0.5)
    removed = removed_by(edit.rules, analyse(graph))
    assert pruned.params < 0.6 * graph.params and pruned.macs < 0.6 * graph.macs
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(run(pruned, pruned_weights, x), run(graph, readers_ignore(graph, weights, removed), x),
                               rtol=1e-4, atol=1e-4)


def test_split_filters_through_a_slice_that_drops_a_copy_is_not_claimed_exact():
    """Found by the property test above: fork1's split copy lands outside the slice right9 reads, so half of the
    split channel's output is lost; the rule must say it is not exact (and the function does change)."""
    from archgraph.format.yaml_io import graph_from_data
    conv = {"op": "conv2d", "out_channels": 1, "kernel_size": 1}
    g = graph_from_data({"archgraph": 1, "name": "cut", "inputs": {"x": [1, 4, 4]}, "nodes": {
        "fork1": {**conv, "in": "x"}, "fork2": {**conv, "in": "x", "kernel_size": 3, "padding": 1},
        "cat3": {"op": "concat", "in": ["fork1", "fork2"]},
        "shuffle4": {"op": "channel_shuffle", "in": "cat3", "groups": 2},
        "fork5": {**conv, "in": "shuffle4"}, "fork6": {**conv, "in": "shuffle4"},
        "cat7": {"op": "concat", "in": ["fork5", "fork6", "shuffle4"]},
        "right9": {"op": "slice", "in": "cat7", "start": 2, "stop": 4},
        "branch10": {**conv, "in": "right9", "out_channels": 2},
        "flat": {"op": "flatten", "in": "branch10"}, "head": {"op": "linear", "in": "flat", "out_features": 1}},
        "outputs": ["head"]})
    from archgraph import rules
    rw = archgraph.apply(g, rules.SplitFilters(node="fork1", indices=(0,), eps=0.0))
    assert not rw.exact and "right9" in rw.plan.note
    module = build64(g)
    xs = inputs_for(g)
    assert max_error(outputs(module, xs), outputs(materialise(rw, module), xs)) > 1e-6
    # a split after the slice, whose copies every reader sees, stays exact
    assert archgraph.apply(g, rules.SplitFilters(node="branch10", indices=(0,), eps=0.0)).exact
