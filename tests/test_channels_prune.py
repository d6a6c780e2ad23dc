"""Channel coupling (archgraph.channels) and structured pruning by criterion (archgraph.prune)."""
from __future__ import annotations

import pytest
import torch
from conftest import ROOT

import archgraph
from archgraph import rules
from archgraph.channels import analyse
from archgraph.fx.magnitude import importance

SE_FLATTEN = archgraph.loads("""
archgraph: 1
inputs: {x: [3, 4, 4]}
nodes:
  c: {op: conv2d, in: x, out_channels: 4, kernel_size: 3, padding: 1}
  sq: {op: adaptive_avgpool2d, in: c, output_size: 1}
  ex: {op: conv2d, in: sq, out_channels: 4, kernel_size: 1}
  gate: {op: sigmoid, in: ex}
  se: {op: mul, in: [c, gate]}
  dw: {op: conv2d, in: se, out_channels: 4, kernel_size: 3, padding: 1, groups: 4}
  pool: {op: maxpool2d, in: dw, kernel_size: 2}
  flat: {op: flatten, in: pool}
  fc: {op: linear, in: flat, out_features: 3}
outputs: [fc]
""")


def seed(name):
    return archgraph.load(ROOT / "examples" / "seeds" / f"{name}.yaml")


def test_residual_adds_tie_their_producers():
    ch = analyse(seed("resnet_cifar"))
    assert ch.space("stem").producers == ("b1_c2", "stem")
    assert ch.space("b2_short").producers == ("b2_c2", "b2_short")
    assert ch.space("b1_c1").producers == ("b1_c1",)
    assert ch.classes("b1_sum") == ch.classes("stem") == ch.classes("b1_bn2")
    assert ch.space("fc").frozen == "it reaches graph output 'fc'"
    assert {s.node for s in ch.spaces()} == {"stem", "b1_c1", "b2_c1", "b2_c2", "fc"}


def test_concat_keeps_offsets_and_squeeze_excitation_and_flatten_tie_channels():
    ch = analyse(seed("densenet_concat"))
    assert ch.classes("cat2") == ch.classes("stem") + ch.classes("l1_conv") + ch.classes("l2_conv")
    ch = analyse(SE_FLATTEN)
    # the excitation conv makes the channels the mul multiplies, so it is tied to c and reads them too
    assert ch.space("c").producers == ("c", "ex")
    assert ch.slots["flat"].block_sizes() == (4, 4, 4, 4) and ch.classes("flat") == ch.classes("c")
    rw = archgraph.apply(SE_FLATTEN, rules.AddFilters(node="c", count=2))
    assert rw.graph.nodes["dw"].groups == 6 and rw.graph.nodes["ex"].out_channels == 6
    fc_in = rw.plan.tensors["fc.weight"].axes[0][1]
    assert fc_in.index == tuple(range(16)) + (-1,) * 8 and fc_in.fill == "zero"
    ex_axes = dict(rw.plan.tensors["ex.weight"].axes)
    assert ex_axes[0].index[-2:] == (-1, -1) and ex_axes[1].index[-2:] == (-1, -1) and ex_axes[1].fill == "zero"
    assert rw.exact
    rw = archgraph.apply(SE_FLATTEN, rules.PruneChannels(node="flat", indices=(5,)))  # feature 5: channel 1
    assert rw.graph.nodes["c"].out_channels == 3 and rw.graph.shapes()["flat"] == (12,)
    assert rw.plan.tensors["fc.weight"].axes[0][1].index == tuple(range(4)) + tuple(range(8, 16))


def test_broadcast_mul_factor_is_frozen():
    g = archgraph.loads("""
archgraph: 1
inputs: {x: [3, 4, 4]}
nodes:
  c: {op: conv2d, in: x, out_channels: 4, kernel_size: 1}
  s: {op: conv2d, in: x, out_channels: 1, kernel_size: 1}
  m: {op: mul, in: [c, s]}
  p: {op: global_avg_pool, in: m}
  fc: {op: linear, in: p, out_features: 2}
outputs: [fc]
""")
    ch = analyse(g)
    assert ch.space("s").frozen == "it is broadcast by mul 'm'"
    assert ch.space("c").frozen is None
    assert archgraph.apply(g, rules.AddFilters(node="c", count=2)).exact


def test_importance_matches_torch_pruning_group_magnitude():
    tp = pytest.importorskip("torch_pruning")
    for name in ("tiny_cnn", "resnet_cifar", "densenet_concat", "mlp"):
        g = seed(name)
        torch.manual_seed(0)
        m = archgraph.build(g)
        with torch.no_grad():
            for p in m.parameters():
                p.normal_()
        ex = torch.randn(1, *next(iter(g.inputs.values())))
        dg = tp.DependencyGraph().build_dependency(m, example_inputs=ex)
        score = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="sum", normalizer=None)
        ours = importance(g, m.state_dict(), "l2")
        ch = analyse(g)
        names = {mod: n for n, mod in m.named_modules()}
        groups = 0
        for group in dg.get_all_groups(ignored_layers=[m.get_submodule(g.outputs[0])]):
            theirs = score(group).double()
            mine = torch.tensor([ours[c] for c in ch.classes(names[group[0].dep.target.module])], dtype=torch.float64)
            assert torch.allclose(mine, theirs, rtol=1e-5), (name, names[group[0].dep.target.module])
            groups += 1
        assert groups == len([s for s in ch.spaces() if not s.frozen])


def test_prune_same_channels_as_torch_pruning_gives_same_network():
    tp = pytest.importorskip("torch_pruning")
    g = seed("resnet_cifar")
    torch.manual_seed(0)
    m = archgraph.build(g).eval()
    x = torch.randn(2, 3, 32, 32)
    rule = rules.PruneChannels(node="stem", indices=(1, 4, 9))
    g2, m2 = archgraph.rewrite(g, m, rule)
    dg = tp.DependencyGraph().build_dependency(m, example_inputs=x)
    dg.get_pruning_group(m.stem, tp.prune_conv_out_channels, idxs=[1, 4, 9]).prune()
    assert sum(p.numel() for p in m.parameters()) == g2.params
    assert torch.allclose(m(x), m2(x), atol=1e-5)


@pytest.mark.parametrize("name", ["tiny_cnn", "resnet_cifar", "densenet_concat", "mobilenet_depthwise", "mlp"])
@pytest.mark.parametrize("criterion", ["l2", "l1", "random"])
def test_prune_removes_the_ratio_of_each_group(name, criterion):
    g = seed(name)
    m = archgraph.build(g)
    g2, w2 = archgraph.prune(g, m.state_dict(), ratio=0.5, criterion=criterion)
    ch = analyse(g)
    for space in ch.spaces():
        old = g.shapes()[space.node][0]
        new = g2.shapes()[space.node][0]
        assert new == (old if space.frozen else old - old // 2), space.node
    assert g2.shapes()[g2.outputs[0]] == g.shapes()[g.outputs[0]]
    m2 = archgraph.build(g2)
    m2.load_state_dict(w2)
    assert set(w2) == set(m.state_dict())


def test_prune_drops_the_least_important_and_prunes_grouped_convs_evenly():
    g = seed("tiny_cnn")
    m = archgraph.build(g)
    with torch.no_grad():
        m.c2.weight[[2, 5]] = 0  # channels 2 and 5 of c2: no incoming weights ...
        m.bn2.weight[[2, 5]] = 0
        m.c3.weight[:, [2, 5]] = 0  # ... and no outgoing ones
    [rule] = [r for r in archgraph.prune(g, m.state_dict(), ratio=0.25).rules if r.node == "c2"]
    assert rule.indices == (2, 5)
    grouped = archgraph.loads("""
archgraph: 1
inputs: {x: [4, 6, 6]}
nodes:
  a: {op: conv2d, in: x, out_channels: 4, kernel_size: 1}
  g: {op: conv2d, in: a, out_channels: 4, kernel_size: 1, groups: 2}
  b: {op: conv2d, in: g, out_channels: 4, kernel_size: 1}
  p: {op: global_avg_pool, in: b}
  fc: {op: linear, in: p, out_features: 2}
outputs: [fc]
""")
    g2, w2 = archgraph.prune(grouped, archgraph.build(grouped).state_dict(), ratio=0.5)
    # the grouped conv keeps its 2 groups: one channel goes from each group, on its input and on its output
    assert [g2.nodes[n].out_channels for n in "agb"] == [2, 2, 2] and g2.nodes["g"].groups == 2
    assert tuple(w2["g.weight"].shape) == (2, 1, 1, 1)


def test_spaces_sharing_a_grouped_convs_groups_prune_in_one_rule_that_replays():
    """concat(a, b) -> grouped conv (groups=2): group 0 is a's channels, group 1 b's, so neither space can lose a
    channel alone; archgraph.prune joins them in one prune_channels (``also``), which applies, encodes and parses
    back."""
    g = archgraph.loads("""
archgraph: 1
inputs: {x: [3, 6, 6]}
nodes:
  a: {op: conv2d, in: x, out_channels: 4, kernel_size: 1}
  b: {op: conv2d, in: x, out_channels: 4, kernel_size: 1}
  cat: {op: concat, in: [a, b]}
  g: {op: conv2d, in: cat, out_channels: 4, kernel_size: 1, groups: 2}
  p: {op: global_avg_pool, in: g}
  fc: {op: linear, in: p, out_features: 2}
outputs: [fc]
""")
    state = archgraph.build(g).state_dict()
    edit = archgraph.prune(g, state, ratio=0.5)
    found = edit.rules
    joint = [r for r in found if r.also]
    assert len(joint) == 1 and {joint[0].node, *dict(joint[0].also)} == {"a", "b"}
    alone = rules.PruneChannels(node=joint[0].node, indices=joint[0].indices)
    with pytest.raises(archgraph.RuleError, match="grouped conv 'g'"):
        archgraph.apply(g, alone)
    step = g
    for r in found:
        step = archgraph.apply(step, r).graph
    g2 = edit.graph
    assert step == g2 and [g2.nodes[n].out_channels for n in "abg"] == [2, 2, 2] and g2.nodes["g"].groups == 2
    assert rules.decode(rules.encode(joint[0])) == joint[0]
    typed = rules.parse("prune_channels", {"node": joint[0].node, "indices": ",".join(map(str, joint[0].indices)),
                                           "also": joint[0].also_text()})
    assert typed == joint[0]
    with pytest.raises(archgraph.RuleError, match="also"):
        rules.parse("prune_channels", {"node": "a", "indices": "0", "also": "b"})


def test_prune_refuses_bad_ratio_and_criterion():
    g = seed("mlp")
    w = archgraph.build(g).state_dict()
    with pytest.raises(archgraph.ArchgraphError, match="ratio"):
        archgraph.prune(g, w, ratio=1.0)
    with pytest.raises(archgraph.ArchgraphError, match="criterion"):
        archgraph.prune(g, w, criterion="l3")


TWISTED = archgraph.loads("""
archgraph: 1
inputs: {x: [2, 6, 6], y: [3, 4, 4]}
nodes:
  a: {op: conv2d, in: x, out_channels: 3, kernel_size: 3, padding: 1}
  aa: {op: concat, in: [a, a]}
  s: {op: add, in: [a, a]}
  m: {op: mul, in: [s, s]}
  p: {op: maxpool2d, in: m, kernel_size: 2}
  b: {op: conv2d, in: y, out_channels: 2, kernel_size: 1}
  fa: {op: flatten, in: p}
  fb: {op: flatten, in: b}
  cat: {op: concat, in: [fa, fb]}
  bn: {op: batchnorm1d, in: cat}
  fc: {op: linear, in: bn, out_features: 4}
  c2: {op: conv2d, in: aa, out_channels: 2, kernel_size: 1}
  g2: {op: global_avg_pool, in: c2}
outputs: [fc, g2]
""")


@pytest.mark.parametrize("rule", [
    rules.AddFilters(node="a", count=2), rules.AddFilters(node="a", count=2, init="net2net", seed=4),
    rules.AddFilters(node="b", count=1, init="net2net"), rules.SplitFilters(node="a", indices=(1,), eps=0),
    rules.InsertBlock(after="cat"), rules.InsertLayer(after="y")], ids=str)
def test_repeated_inputs_and_concatenated_flattens_stay_exact(rule):
    """A value read twice (concat(a, a), a + a, s * s), two inputs, two outputs, flattens of different sizes
    concatenated into one linear."""
    from rewrite_helpers import build64, inputs_for, max_error, outputs

    from archgraph.fx.materialise import materialise
    m = build64(TWISTED)
    xs = inputs_for(TWISTED)
    rw = archgraph.apply(TWISTED, rule)
    assert rw.exact
    assert max_error(outputs(m, xs), outputs(materialise(rw, m), xs)) <= 1e-8


def test_pruning_a_repeated_channel_removes_every_copy():
    rw = archgraph.apply(TWISTED, rules.PruneChannels(node="aa", indices=(4,)))  # channel 1 of the second a
    assert rw.graph.nodes["a"].out_channels == 2
    assert rw.plan.tensors["c2.weight"].axes[0][1].index == (0, 2, 3, 5)
    assert rw.graph.shapes()["cat"] == (2 * 9 + 32,)
    # a flattened position names its channel: feature 30 of cat lies in channel 0 of b (its features 27..42)
    rw = archgraph.apply(TWISTED, rules.PruneChannels(node="cat", indices=(30,)))
    assert rw.graph.nodes["b"].out_channels == 1
    assert rw.plan.tensors["fc.weight"].axes[0][1].index == tuple(range(27)) + tuple(range(43, 59))
