"""Channel and branch gates: what they multiply, that a closed gate makes the removal rule exact, their MAC costs,
the hard weights counted honestly, and per-channel state carried through rewrites."""
import pytest
import torch
from conftest import ROOT
from torch.func import functional_call

import archgraph
from archgraph import rules
from archgraph.shapes import count_nonzero_params
from archgraph.train.gates import channel_costs, gate_layout, gate_overrides, hard_weights
from archgraph.train.tensors import TensorSGD, channel_map, follow_channels

SEEDS = ROOT / "examples" / "seeds"


def load(name):
    return archgraph.load(SEEDS / f"{name}.yaml")


def randomised(graph, seed=0):
    """A module in eval mode with random norm statistics, so every parameter matters."""
    m = archgraph.build(graph, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in m.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return m.eval()


def test_layout_gates_after_the_last_norm_or_the_layer_itself():
    lay = gate_layout(load("digits_cnn"))
    assert lay.channel["c1"].params == ["bn1.weight", "bn1.bias"] and lay.branch == {}
    assert lay.channel["c2"].members == ["c2.weight", "bn2.weight", "bn2.bias"]
    mlp = gate_layout(load("mlp"))
    assert set(mlp.channel) == {"fc1", "fc2"}
    assert mlp.channel["fc1"].params == ["fc1.weight", "fc1.bias"]      # no norm: the layer's own rows
    res = gate_layout(load("resnet_cifar"))
    assert set(res.channel) == {"b1_c1", "b2_c1"}                        # the others feed residual adds
    assert set(res.branch) == {"b1_bn2", "b2_bn2"}                       # the branches, not the shortcuts
    assert res.branch["b1_bn2"].params == ["b1_bn2.weight", "b1_bn2.bias"]
    assert {"b1_c1", "b1_c2", "b1_sum"} <= set(res.branch["b1_bn2"].removed)


@pytest.mark.parametrize("seed,node,off", [("digits_cnn", "c1", [0, 2]), ("digits_cnn", "c2", [1, 5, 7]),
                                           ("mlp", "fc1", [0, 3]), ("resnet_cifar", "b2_c1", [4, 9])])
def test_a_closed_channel_gate_makes_prune_channels_exact(seed, node, off):
    g = load(seed)
    m = randomised(g)
    lay = gate_layout(g)
    gate = torch.ones(lay.channel[node].width, dtype=torch.float32)
    gate[off] = 0
    x = torch.randn(4, *next(iter(g.inputs.values())), generator=torch.Generator().manual_seed(1))
    gated = functional_call(m, gate_overrides(dict(m.named_parameters()), lay, {node: gate}), (x,))
    g2, m2 = archgraph.rewrite(g, m, rules.PruneChannels(node=node, indices=off))
    assert torch.allclose(m2.eval()(x), gated, atol=1e-5)
    # hard weights zero everything the rule removes, so the non-zero count is the pruned graph's size
    hard = hard_weights(dict(m.named_parameters()), lay, {node: gate.bool()})
    assert count_nonzero_params(g, hard) == g2.params
    assert torch.allclose(functional_call(m, hard, (x,)), gated, atol=1e-5)


def test_a_closed_branch_gate_makes_collapse_layer_exact():
    g = load("resnet_cifar")
    m = randomised(g)
    lay = gate_layout(g)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    gated = functional_call(m, gate_overrides(dict(m.named_parameters()), lay, {}, {"b1_bn2": torch.tensor(0.0)}),
                            (x,))
    _, m2 = archgraph.rewrite(g, m, rules.CollapseLayer(node="b1_bn2"))
    assert torch.allclose(m2.eval()(x), gated, atol=1e-5)


def test_active_macs_counts_what_the_active_structures_cost():
    g = load("digits_cnn")
    lay = gate_layout(g)
    assert lay.active_macs() == g.macs
    # half of c2's channels: c2 costs half, and the classifier reads half as many features
    half = lay.active_macs({"c2": 0.5})
    shapes = {n: archgraph.shapes.node_macs(g, n) for n in ("c1", "c2", "fc")}
    assert half == pytest.approx(shapes["c1"] + shapes["c2"] / 2 + shapes["fc"] / 2)
    # matches the pruned graph exactly
    g2 = archgraph.apply(g, rules.PruneChannels(node="c2", indices=(0, 1, 2, 3))).graph
    assert half == pytest.approx(g2.macs)
    res = load("resnet_cifar")
    rl = gate_layout(res)
    off = archgraph.apply(res, rules.CollapseLayer(node="b1_bn2")).graph
    assert rl.active_macs(branch_on={"b1_bn2": 0.0}) == pytest.approx(off.macs)
    # differentiable in the fractions
    f = torch.tensor(0.7, requires_grad=True)
    lay.active_macs({"c1": f}).backward()
    assert f.grad > 0
    costs = channel_costs(lay)
    assert costs["c2"] == pytest.approx((g.macs - g2.macs) / 4)


def test_follow_rewrite_keeps_kept_copies_split_and_fills_new_channels():
    g = load("digits_cnn")
    state = {"c1": torch.arange(4.0), "c2": torch.arange(8.0)}
    fill = lambda node, n: torch.full((n,), -1.0)                       # noqa: E731
    plan = archgraph.apply(g, rules.PruneChannels(node="c2", indices=(1, 6))).plan
    out = follow_channels(plan, state, fill, {"c1": 4, "c2": 6})
    assert out["c2"].tolist() == [0, 2, 3, 4, 5, 7] and out["c1"].tolist() == [0, 1, 2, 3]
    plan = archgraph.apply(g, rules.SplitFilters(node="c1", indices=(2,))).plan
    assert follow_channels(plan, state, fill, {"c1": 5, "c2": 8})["c1"].tolist() == [0, 1, 2, 3, 2]
    plan = archgraph.apply(g, rules.AddFilters(node="c2", count=2)).plan
    assert follow_channels(plan, state, fill, {"c1": 4, "c2": 10})["c2"].tolist()[-3:] == [7, -1, -1]
    assert channel_map(archgraph.apply(g, rules.AddFilters(node="c2", count=2)).plan, "c1") == ()


def test_tensor_sgd_steps_and_follows_rewrites():
    t = {"c2": torch.zeros(8, requires_grad=True)}
    opt = TensorSGD(lr=0.1, momentum=0.5)
    for _ in range(2):
        (t["c2"] * torch.arange(8.0)).sum().backward()
        opt.step(t)
    assert t["c2"].grad is None
    assert t["c2"].detach()[3].item() == pytest.approx(-0.1 * 3 - 0.1 * 4.5)   # buffer 3, then 3*0.5 + 3
    plan = archgraph.apply(load("digits_cnn"), rules.PruneChannels(node="c2", indices=(0,))).plan
    opt.follow(plan, {"c2": 7})
    assert opt.buf["c2"].tolist() == [1.5 * i for i in range(1, 8)]


@pytest.mark.parametrize("seed,node,off", [("lstm_text", "lstm", [0, 5, 9]), ("lstm_lm", "lstm", [1, 2]),
                                           ("lstm_text", "embed", [3]), ("gpt_tiny", "b0_attn", [1]),
                                           ("gpt_tiny", "b1_fc", [0, 7]), ("unet_scenes", "e1_conv", [0, 3]),
                                           ("unet_scenes", "up2", [2]), ("unet_scenes", "e2_conv", [1, 4]),
                                           ("unet_scenes", "mid_conv", [5])])
def test_units_heads_and_skip_channels_close_exactly(seed, node, off):
    """An LSTM's units (gated where h_t is read), an attention's heads (o_proj columns) and a U-Net's channels
    feeding skip concats or a transposed conv: a closed gate makes the removal rule exact, the hard weights count
    the removed graph's parameters and the MACs under the gates are the removed graph's."""
    g = load(seed)
    m = randomised(g)
    lay = gate_layout(g)
    gate = torch.ones(lay.channel[node].width)
    gate[off] = 0
    gen = torch.Generator().manual_seed(1)
    shape = next(iter(g.inputs.values()))
    x = torch.randn(2, *shape, generator=gen) if len(shape) == 3 else torch.randint(0, 60, (3, *shape), generator=gen)
    gated = functional_call(m, gate_overrides(dict(m.named_parameters()), lay, {node: gate}), (x,))
    rule = (rules.PruneHeads if lay.channel[node].unit == "head" else rules.PruneChannels)(node=node, indices=off)
    g2, m2 = archgraph.rewrite(g, m, rule)
    assert torch.allclose(m2.eval()(x), gated, atol=1e-5)
    hard = hard_weights(dict(m.named_parameters()), lay, {node: gate.bool()})
    assert count_nonzero_params(g, hard) == g2.params
    assert torch.allclose(functional_call(m, hard, (x,)), gated, atol=1e-5)
    assert lay.active_macs({node: 1 - len(off) / len(gate)}) == pytest.approx(g2.macs)
    # parameters: exact but for the readers' biases, which the estimate scales with their inputs
    assert lay.active_params() == g.params
    saved = g.params - lay.active_params({node: 1 - len(off) / len(gate)})
    assert saved == pytest.approx(g.params - g2.params, rel=0.02)


def test_an_lstm_is_gated_where_its_units_are_read_and_attention_by_heads():
    lay = gate_layout(load("lstm_lm"))
    lstm = lay.channel["lstm"]
    assert lstm.params == ["head.weight", "lstm.weight_hh_l0", "lstm.weight_hh_l1", "lstm.weight_ih_l1"]
    assert all(p.axis == 1 for p in lstm.scale) and {p.blocks for p in lstm.rows} == {4}
    gpt = gate_layout(load("gpt_tiny"))
    heads = gpt.channel["b0_attn"]
    assert heads.unit == "head" and heads.width == 2 and heads.params == ["b0_attn.o_proj.weight"]
    assert heads.scale[0].axis == 1 and heads.scale[0].repeat == 16
    assert "b0_attn" in gpt.branch                                   # the attention branch is gated too
    unet = gate_layout(load("unet_scenes"))
    assert set(unet.channel) == {"e1_conv", "e2_conv", "mid_conv", "up2", "d2_conv", "up1_conv", "d1_conv"}
    reads = sorted((p.key, p.offset) for p in unet.channel["e2_conv"].reads)
    assert reads == [("d2_conv.weight", 32), ("mid_conv.weight", 0)]   # the skip: after up2's 32 channels
    assert unet.channel["mid_conv"].reads[0].axis == 0              # a transposed conv reads on weight axis 0
