"""Coupled channel groups: every group holds exactly the parameters removing it removes, norms are computed per
group (differentiably), and the prune rules they give apply in turn and keep the minimum width."""
import pytest
import torch
from conftest import ROOT

import archgraph
from archgraph import rules
from archgraph.train.groups import GroupIndex

SEEDS = ROOT / "examples" / "seeds"


@pytest.mark.parametrize("seed", ["digits_cnn", "resnet_cifar", "mlp", "densenet_concat", "mobilenet_depthwise"])
def test_a_group_holds_what_removing_it_removes(seed):
    g = archgraph.load(SEEDS / f"{seed}.yaml")
    index = GroupIndex(g)
    params = dict(archgraph.build(g).named_parameters())
    sizes = index.sizes(params)
    assert len(index) > 0
    picks = sorted({0, len(index) // 2, len(index) - 1})
    for gid in picks:
        node, i = index.producer[gid]
        rw = archgraph.apply(g, rules.PruneChannels(node=node, indices=(i,)))
        assert g.params - rw.graph.params == int(sizes[gid]), (seed, node, i)


def test_residual_groups_span_both_sides_of_the_add():
    g = archgraph.load(SEEDS / "resnet_cifar.yaml")
    index = GroupIndex(g)
    stem0 = index.producer.index(("stem", 0))
    keys = {key for key, axis, ids in index.entries if bool((ids == stem0).any())}
    assert {"stem.weight", "stem_bn.weight", "b1_c2.weight", "b1_bn2.weight", "b1_c1.weight", "b2_c1.weight",
            "b2_short.weight"} <= keys
    assert ("b1_c2", 0) not in index.producer          # the same groups: named once, by the first producer


def test_sq_norms_match_a_direct_sum_and_are_differentiable():
    g = archgraph.load(SEEDS / "digits_cnn.yaml")
    index = GroupIndex(g)
    m = archgraph.build(g, seed=3)
    params = dict(m.named_parameters())
    sq = index.sq_norms(params)
    c2_1 = index.producer.index(("c2", 1))
    direct = (params["c2.weight"][1].pow(2).sum() + params["bn2.weight"][1] ** 2 + params["bn2.bias"][1] ** 2
              + params["fc.weight"][:, 16:32].pow(2).sum())
    assert sq[c2_1].item() == pytest.approx(direct.item(), rel=1e-5)
    scaled = index.sq_norms(params, {k: torch.tensor(2.0) for k in params})
    assert torch.allclose(scaled, sq / 4)
    sq.sum().backward()
    # c2's weights belong to two groups each (their output channel's and their input channel's), c1's to one
    assert torch.allclose(m.c2.weight.grad, 4 * m.c2.weight.detach())
    assert torch.allclose(m.c1.weight.grad, 2 * m.c1.weight.detach())


def test_prune_rules_apply_in_turn_and_keep_min_width():
    g = archgraph.load(SEEDS / "resnet_cifar.yaml")
    index = GroupIndex(g)
    b1 = [i for i, (n, _) in enumerate(index.producer) if n == "b1_c1"]
    stem = [i for i, (n, _) in enumerate(index.producer) if n == "stem"]
    wanted = b1[2:6] + stem[:15]
    out = index.prune_rules(wanted, min_width=3)
    graph = g
    for rule in out:
        graph = archgraph.apply(graph, rule).graph
    assert graph.nodes["b1_c1"].out_channels == 12
    assert graph.nodes["stem"].out_channels == 3 and graph.nodes["b1_c2"].out_channels == 3   # min_width
    # the channels removed are the ones asked for (by position in the original)
    first = next(r for r in out if r.node == "b1_c1")
    assert first.indices == (2, 3, 4, 5)
