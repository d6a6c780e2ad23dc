"""Learned masks: which layers get them, straight-through gradients, threshold gradients from the sparsity term,
honest non-zero counts, and removal of channels whose masks vanish without changing the function."""
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from torch.func import functional_call

import archgraph
from archgraph import rules
from archgraph.shapes import count_nonzero_params
from archgraph.train.masks import LearnedMasks, mask_layout

DIGITS = ROOT / "examples" / "seeds" / "digits_cnn.yaml"


def setup(tau=0.0, seed=0, temperature=0.1):
    g = archgraph.load(DIGITS)
    m = archgraph.build(g, seed=seed)
    masks = LearnedMasks(g, threshold_init=tau, temperature=temperature)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(16) % 10
    return g, m, masks, x, y


def test_layout_gates_only_channels_that_can_be_removed_alone():
    lay = mask_layout(archgraph.load(DIGITS))
    assert lay.weights == ["c1.weight", "c2.weight", "fc.weight"]
    assert set(lay.groups) == {"c1", "c2"}                    # fc is the output: its classes stay
    assert lay.groups["c1"].members == ["bn1.weight", "bn1.bias"] and lay.groups["c1"].scale == "bn1.weight"
    assert lay.groups["c1"].consumers == [("c2.weight", 1)]
    assert lay.groups["c2"].consumers == [("fc.weight", 16)]  # 4x4 positions per channel after the flatten
    res = mask_layout(archgraph.load(ROOT / "examples" / "seeds" / "resnet_cifar.yaml"))
    assert set(res.groups) == {"b1_c1", "b2_c1"}              # the others feed residual adds
    mlp = mask_layout(archgraph.load(ROOT / "examples" / "seeds" / "mlp.yaml"))
    assert set(mlp.groups) == {"fc1", "fc2"} and mlp.groups["fc1"].scale is None


def test_low_thresholds_change_nothing():
    g, m, masks, x, _ = setup(tau=-10.0)
    out = masks.forward(m)
    for key, value in out.overrides.items():
        assert torch.equal(value, m.get_parameter(key))
    m.eval()
    assert torch.equal(functional_call(m, out.overrides, (x,)), m(x))


def test_forward_values_are_hard_masked_and_gradients_go_straight_through():
    g, m, masks, x, y = setup(tau=0.8, temperature=0.02)
    out = masks.forward(m)
    w = m.c2.weight
    rows = w.detach().reshape(8, -1)
    rms = (rows.pow(2).sum(1) / (rows != 0).sum(1)).sqrt().view(8, 1, 1, 1)
    keep = (w.detach().abs() / rms) > 0.8
    assert 0 < int(keep.sum()) < keep.numel()
    assert torch.equal(out.overrides["c2.weight"], w.detach() * keep)          # exact zeros where masked
    F.cross_entropy(functional_call(m, out.overrides, (x,)), y).backward()
    # the same loss with the masked weights as leaves: its gradient is what the weights receive
    leaf = {k: v.detach().clone().requires_grad_(True) for k, v in out.overrides.items()}
    F.cross_entropy(functional_call(m, leaf, (x,)), y).backward()
    far = (w.detach().abs() / rms) < 0.5                                        # surrogate slope ~0 here
    assert far.any() and (w.grad[far] != 0).any()                               # pruned weights still learn
    assert torch.allclose(w.grad[far], leaf["c2.weight"].grad[far], atol=1e-6)
    assert masks.tau["c2"].grad is not None and masks.tau["c2"].grad != 0      # the loss moves the threshold


def test_sparsity_term_raises_the_thresholds_and_pulls_gamma_down():
    g, m, masks, _, _ = setup(tau=0.0)
    with torch.no_grad():
        m.bn1.weight.fill_(0.5)
    counts = []
    for _ in range(5):
        out = masks.forward(m)
        counts.append(out.expected.item())
        out.expected.backward()
        assert all(t.grad.item() < 0 for t in masks.tau.values())             # higher threshold, fewer weights
        assert (m.bn1.weight.grad > 0).all()                                    # descent shrinks gamma
        masks.step()
        masks.zero_grad()
        m.zero_grad()
    assert all(t.item() > 0 for t in masks.tau.values())
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0]


def test_nonzero_count_is_the_count_of_the_masked_network():
    g, m, masks, x, _ = setup(tau=0.9)
    hard = masks.hard_weights(m)
    manual = sum(int((hard[k] != 0).sum()) for k, _ in m.named_parameters())
    assert count_nonzero_params(g, hard) == manual < g.params
    m.eval()
    assert torch.equal(functional_call(m, masks.forward(m).overrides, (x,)), functional_call(m, hard, (x,)))
    fewer = LearnedMasks(g, threshold_init=1.2)
    assert count_nonzero_params(g, fewer.hard_weights(m)) < manual


def test_vanished_channels_are_removed_without_changing_the_function():
    g, m, masks, x, _ = setup(tau=0.2)
    with torch.no_grad():
        m.bn1.weight[1] = 0.01                 # gamma under the channel threshold: channel 1 of c1 is off
        m.fc.weight.view(10, 8, 16)[:, 2] = 0   # nobody reads channel 2 of c2
        m.bn1.running_mean.uniform_(-1, 1)
        m.bn2.running_var.uniform_(0.5, 2)
    dead = masks.dead_channels(m)
    assert dead == {"c1": [1], "c2": [2]}
    hard = masks.hard_weights(m)
    with torch.no_grad():
        for k, p in m.named_parameters():
            p.copy_(hard[k])
    m.eval()
    before = m(x)
    nonzero = count_nonzero_params(g, hard)
    for node, idx in dead.items():
        g, m = archgraph.rewrite(g, m, rules.PruneChannels(node=node, indices=idx))
    assert g.nodes["c1"].out_channels == 3 and g.nodes["c2"].out_channels == 7
    m.eval()
    assert torch.allclose(m(x), before, atol=1e-5)
    assert count_nonzero_params(g, dict(m.named_parameters())) == nonzero   # only zeros were removed


def test_rebuild_after_a_rewrite_and_state_round_trip():
    g, m, masks, _, _ = setup(tau=0.3)
    masks.forward(m).expected.backward()
    masks.step()
    g2 = archgraph.apply(g, rules.InsertLayer(after="r2", norm="batchnorm", activation="relu")).graph
    masks.rebuild(g2)
    assert set(masks.tau) == {"c1", "c2", "r2_conv", "fc"} and masks.tau["r2_conv"].item() == pytest.approx(0.3)
    assert masks.tau["c1"].item() != pytest.approx(0.3)                                      # kept its learned value
    other = LearnedMasks(g2)
    other.load_state_dict(masks.state_dict())
    assert {k: v.item() for k, v in other.tau.items()} == {k: v.item() for k, v in masks.tau.items()}
    assert other.steps == masks.steps == 1


def test_gnap_keeps_one_channel_of_a_layer_whose_channels_all_vanish():
    from types import SimpleNamespace

    from archgraph.train.strategies.gnap import GnapSettings, GnapStrategy
    g, m, _, _, _ = setup()
    with torch.no_grad():
        m.bn1.weight.fill_(0.0)
    trainer = SimpleNamespace(graph=g, module=m, device=torch.device("cpu"), epoch=0)
    strategy = GnapStrategy(GnapSettings())
    strategy.attach(trainer)
    prune = strategy._prune_rules(trainer)
    assert [(r.node, r.indices) for r in prune] == [("c1", (1, 2, 3))]
