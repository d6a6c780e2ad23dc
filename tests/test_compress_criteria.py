"""Calibrated pruning criteria (taylor, activation) and round_to: constructed cases where the choice is forced."""
from __future__ import annotations

import pytest
import torch

import archgraph
from archgraph.errors import ConfigError
from archgraph.fx.magnitude import kept

MLP = archgraph.loads("""
archgraph: 1
inputs: {x: [4]}
nodes:
  fc1: {op: linear, in: x, out_features: 4}
  act: {op: relu, in: fc1}
  fc2: {op: linear, in: act, out_features: 3}
outputs: [fc2]
""")


def _mlp_weights():
    """Hidden unit i reads input feature i only. Units 0 and 1 have large weights; unit 0's input is never active
    in the calibration data; unit 1's output is read with zero weights. Units 2 and 3 have small weights."""
    w1 = torch.diag(torch.tensor([10.0, 10.0, 1.0, 1.0]))
    w2 = torch.ones(3, 4) * 0.5
    w2[:, 1] = 0.0
    w2[:, 0] = 3.0
    return {"fc1.weight": w1, "fc1.bias": torch.zeros(4), "fc2.weight": w2, "fc2.bias": torch.zeros(3)}


def _batches(n=3):
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        x = torch.rand(16, 4, generator=gen) + 0.5
        x[:, 0] = 0.0   # feature 0 (unit 0's input) is never active
        out.append((x, torch.randint(0, 3, (16,), generator=gen)))
    return out


def _removed(graph, state, criterion, **kw):
    rules = archgraph.prune(graph, state, 0.5, criterion, **kw).rules
    return {r.node: r.indices for r in rules}


def test_magnitude_keeps_the_large_weights():
    assert _removed(MLP, _mlp_weights(), "l2") == {"fc1": (2, 3)}


def test_activation_removes_the_unit_that_never_fires_and_the_smallest_activation():
    # unit 0: input never active -> mean |relu(fc1)| = 0; unit 1: 10 * x1 (large); units 2, 3: 1 * x (small, equal
    # in distribution): the smaller of 2 and 3 on these batches goes with unit 0
    batches = _batches()
    means = [float(torch.cat([b[0] for b in batches])[:, i].mean()) for i in (2, 3)]
    second = 2 if means[0] < means[1] else 3
    assert _removed(MLP, _mlp_weights(), "activation", calib=batches) == {"fc1": tuple(sorted((0, second)))}


def test_taylor_removes_the_units_whose_removal_does_not_change_the_loss():
    # unit 0: zero input -> zero gradient on fc2's column and zero activation times fc1's row: |w * g| = 0;
    # unit 1: read with zero weights -> zero gradient on its fc1 row and zero weights in fc2: |w * g| = 0
    assert _removed(MLP, _mlp_weights(), "taylor", calib=_batches()) == {"fc1": (0, 1)}


def test_calibrated_criteria_need_batches_and_taylor_targets():
    with pytest.raises(ConfigError, match="needs calibration batches"):
        archgraph.prune(MLP, _mlp_weights(), 0.5, "activation")
    with pytest.raises(ConfigError, match="targets"):
        archgraph.prune(MLP, _mlp_weights(), 0.5, "taylor", calib=[b[0] for b in _batches()])
    with pytest.raises(ConfigError, match="unknown criterion"):
        archgraph.prune(MLP, _mlp_weights(), 0.5, "fisher")


ATTN = archgraph.loads("""
archgraph: 1
inputs: {tokens: {shape: [6], vocab: 11}}
nodes:
  emb: {op: embedding, in: tokens, embedding_dim: 16}
  attn: {op: attention, in: emb, num_heads: 4}
  res: {op: add, in: [emb, attn]}
  head: {op: linear, in: res, out_features: 11}
outputs: [head]
""")


def _head_rules(state, criterion, **kw):
    """The prune_heads rules of ratio 0.25 by ``criterion``, the channels left as they are."""
    return archgraph.prune(ATTN, state, 0.25, criterion, heads=True, channels=False, **kw).rules


def test_activation_removes_a_silent_head_that_magnitude_keeps():
    m = archgraph.build(ATTN)
    with torch.no_grad():
        attn = m.get_submodule("attn")
        attn.v_proj.weight[0:4] = 0.0     # head 0 outputs zeros ...
        attn.v_proj.bias[0:4] = 0.0
        attn.q_proj.weight[0:4] *= 50.0   # ... but has by far the largest weights
    state = m.state_dict()
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 11, (8, 6), generator=gen), torch.randint(0, 11, (8, 6), generator=gen))]
    by_l2 = _head_rules(state, "l2")
    by_act = _head_rules(state, "activation", calib=batches)
    assert [r.indices for r in by_act] == [(0,)]
    assert by_l2 and 0 not in by_l2[0].indices
    by_taylor = _head_rules(state, "taylor", calib=batches)
    assert by_taylor and len(by_taylor[0].indices) == 1


def test_prune_with_calibrated_criteria_builds_and_runs():
    g = archgraph.load("examples/seeds/gpt_tiny.yaml")
    m = archgraph.build(g)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 65, (4, 32), generator=gen), torch.randint(0, 65, (4, 32), generator=gen))]
    for criterion in ("activation", "taylor"):
        g2, m2 = archgraph.prune(g, m, 0.5, criterion=criterion, calib=iter(batches), heads=True)   # module out
        assert m2(batches[0][0]).shape == (4, 32, 65)
        assert g2.nodes["b0_attn"].num_heads == 1 and g2.nodes["b0_fc"].out_features == 64


def test_kept_rounds_the_kept_count():
    assert [kept(16, r, 8) for r in (0.1, 0.5, 0.6, 0.9)] == [16, 8, 8, 8]
    assert kept(12, 0.5, 8) == 8 and kept(7, 0.5, 8) == 7 and kept(24, 0.7, 8) == 8


@pytest.mark.parametrize("name,ratio", [("resnet_cifar", 0.6), ("gpt_tiny", 0.3), ("mobilenet_depthwise", 0.5)])
def test_round_to_keeps_every_pruned_width_a_multiple(name, ratio):
    g = archgraph.load(f"examples/seeds/{name}.yaml")
    g2, m2 = archgraph.prune(g, archgraph.build(g), ratio, heads=True, round_to=8)
    assert g2.params < g.params
    shapes, old_shapes = g2.shapes(), g.shapes()
    from archgraph.ops.registry import channel_width
    for nid in g2.nodes:
        if nid in g.nodes and channel_width(shapes[nid]) != channel_width(old_shapes[nid]):
            assert channel_width(shapes[nid]) % 8 == 0, (nid, shapes[nid])
    for nid, node in g2.nodes.items():
        if node.op == "attention":
            h, hd, _ = archgraph.ops.registry.OPS[node.op].coupling.heads(node, g2.input_shapes(nid))
            assert (h * hd) % 8 == 0
    archgraph.build(g2).load_state_dict(m2.state_dict())


def test_network_prune_takes_the_calibrated_criteria():
    net = archgraph.Network(MLP, _mlp_weights())
    rules = net.prune(0.5, criterion="taylor", calib=_batches())
    assert [r.indices for r in rules] == [(0, 1)] and net.graph.nodes["fc1"].out_features == 2 and net.version == 1
