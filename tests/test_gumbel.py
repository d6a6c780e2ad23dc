"""Gumbel: sampling statistics, temperature annealing, straight-through gradients, which parameters learn, the
rescaling step, extraction (exact zeros, the scale folded in, emptied channels removed without changing the
function), state that follows rewrites and resumes, and a run end to end on generated data."""
import math

import pytest
import torch
import torch.nn.functional as F
from mask_helpers import attached, batch, check_run, method_config, stub_trainer
from torch.func import functional_call

import archgraph
from archgraph import rules
from archgraph.train.strategies.gumbel import GumbelSettings, GumbelStrategy, annealed, binary_concrete


def strategy(progress=0.0, epochs=10, seed=0, **settings):
    return attached(GumbelStrategy(GumbelSettings(**settings)), progress, epochs, seed)


@pytest.mark.parametrize("temperature", [0.1, 1.0, 5.0])
def test_hard_samples_are_bernoulli_with_the_keep_probability(temperature):
    logits = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0]).repeat(40000, 1)
    s = binary_concrete(logits, temperature, generator=torch.Generator().manual_seed(1))
    assert set(s.unique().tolist()) == {0.0, 1.0}
    # 40,000 draws: the standard error of a mean is at most 0.0025
    assert torch.allclose(s.mean(0), torch.sigmoid(logits[0]), atol=0.01)


def test_relaxed_samples_sharpen_as_the_temperature_falls():
    logits = torch.zeros(20000)
    gen = torch.Generator().manual_seed(2)
    spread = {}
    for t in (0.05, 1.0, 5.0):
        s = binary_concrete(logits, t, hard=False, generator=gen)
        assert 0 <= s.min() and s.max() <= 1 and abs(s.mean().item() - 0.5) < 0.02
        spread[t] = (s - 0.5).abs().mean().item()
    assert spread[0.05] > 0.45 > spread[1.0] > spread[5.0] and spread[5.0] < 0.1


def test_temperature_anneals_geometrically_over_the_run():
    values = []
    for progress in (0, 2.5, 5, 7.5, 10, 12):
        s, t = strategy(progress=progress, epochs=10, temperature_start=2.0, temperature_end=0.02)
        values.append(s.temperature(t))
    assert values[0] == pytest.approx(2.0) and values[2] == pytest.approx(0.2) and values[4] == pytest.approx(0.02)
    assert values[5] == pytest.approx(0.02)                       # clamped after the end
    assert all(a > b for a, b in zip(values[:5], values[1:5]))
    assert annealed(1.0, 1.0, 0.3) == 1.0


@pytest.mark.parametrize("hard", [True, False])
def test_straight_through_gradient_is_the_relaxed_samples(hard):
    logits = torch.randn(500, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    weight = torch.randn(500, generator=torch.Generator().manual_seed(4))
    temperature = 0.7
    out = binary_concrete(logits, temperature, hard=hard, generator=torch.Generator().manual_seed(5))
    (out * weight).sum().backward()
    # the same noise, by hand
    u = torch.rand(500, generator=torch.Generator().manual_seed(5)).clamp(1e-6, 1 - 1e-6)
    z = logits.detach() + torch.log(u) - torch.log1p(-u)
    soft = torch.sigmoid(z / temperature)
    assert torch.allclose(out.detach(), (z > 0).float() if hard else soft, atol=1e-6)
    assert torch.allclose(logits.grad, weight * soft * (1 - soft) / temperature, rtol=1e-5, atol=1e-7)


def train_grads(s, t):
    x, y = batch()
    values, extra = s.parametrize(t, training=True)
    loss = F.cross_entropy(functional_call(t.module, values, (x,)), y)
    (loss if extra is None else loss + extra).backward()


def test_fixed_weights_get_no_gradient_while_masks_scales_and_norms_learn():
    s, t = strategy(rescale="learned")
    train_grads(s, t)
    for key in s.logits:
        assert t.module.get_parameter(key).grad is None
        assert s.logits[key].grad is not None and s.logits[key].grad.abs().sum() > 0
    assert all(v.grad is not None and v.grad != 0 for v in s.log_scale.values())
    assert t.module.bn1.weight.grad is not None
    before = {k: v.detach().clone() for k, v in s.logits.items()}
    s.on_step_end(t)
    assert all(not torch.equal(before[k], s.logits[k]) for k in before) and s.logits["c1.weight"].grad is None
    trained, tt = strategy(weights="trained")
    train_grads(trained, tt)
    assert all(tt.module.get_parameter(k).grad is not None for k in trained.logits)


def test_sparsity_term_lowers_every_keep_probability():
    s, t = strategy(sparsity=1.0, logit_init=0.5)
    _, extra = s.parametrize(t, training=True)
    assert extra.item() == pytest.approx(torch.sigmoid(torch.tensor(0.5)).item())
    extra.backward()
    assert all((l.grad > 0).all() for l in s.logits.values())


def test_fan_in_rescale_keeps_a_layers_output_scale():
    s, t = strategy(rescale="fan_in")
    keep = torch.zeros(8, 4, 3, 3)
    keep.view(-1)[::4] = 1
    assert s._scale("c2.weight", keep).item() == pytest.approx(2.0)
    gen = torch.Generator().manual_seed(6)
    w = torch.randn(256, 1024, generator=gen)
    x = torch.randn(512, 1024, generator=gen)
    mask = (torch.rand(256, 1024, generator=gen) < 0.25).float()
    scaled = x @ (w * mask * s._scale("fc.weight", mask)).T
    assert scaled.std().item() == pytest.approx((x @ w.T).std().item(), rel=0.05)
    assert s._scale("fc.weight", torch.zeros(3)).isfinite()        # an empty layer does not divide by zero


def test_extraction_folds_the_scale_zeroes_dropped_weights_and_keeps_the_function():
    s, t = strategy(rescale="learned", recalibrate_bn=False)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for l in s.logits.values():
            l.copy_(torch.randn(l.shape, generator=gen))
        s.logits["c1.weight"][1] = -1.0                          # channel 1 of c1 loses every weight
        for v in s.log_scale.values():
            v.fill_(0.3)
    t.module.eval()
    x, _ = batch(1)
    expected = functional_call(t.module, s.parametrize(t, training=False)[0], (x,))
    w0 = {k: t.module.get_parameter(k).detach().clone() for k in s.logits}
    keep = {k: (l > 0).float() for k, l in s.logits.items()}
    found = s.finalize(t)
    assert [(r.name, r.node, r.indices) for r in found] == [("prune_channels", "c1", (1,))]
    assert s.finalize(t) == [] and s.parametrize(t, training=True) == ({}, None)
    for key in s.logits:
        w = t.module.get_parameter(key).detach()
        kept = keep[key].bool()
        if key == "c2.weight":
            kept[:, 1] = False                                    # reads the emptied channel
        assert torch.equal(w[~kept], torch.zeros_like(w[~kept]))
        assert torch.allclose(w[kept], w0[key][kept] * math.exp(0.3))
    assert t.module.bn1.weight[1] == 0 and t.module.bn1.bias[1] == 0
    assert torch.allclose(t.module(x), expected, atol=1e-5)
    g2, m2 = archgraph.rewrite(t.graph, t.module, found[0])
    assert g2.params < t.graph.params and torch.allclose(m2.eval()(x), expected, atol=1e-5)


def test_extraction_at_a_density_keeps_the_most_probable_weights():
    s, _ = strategy(density=0.3)
    gen = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for l in s.logits.values():
            l.copy_(torch.randn(l.shape, generator=gen))
    keep = s.keep_masks()
    n = sum(m.numel() for m in keep.values())
    assert sum(int(m.sum()) for m in keep.values()) == round(0.3 * n)
    kept = torch.cat([s.logits[k][keep[k].bool()] for k in keep])
    dropped = torch.cat([s.logits[k][~keep[k].bool()] for k in keep])
    assert kept.min() >= dropped.max()


def test_logits_scales_and_moments_follow_a_rewrite_and_resume():
    s, t = strategy()
    with torch.no_grad():
        for l in s.logits.values():
            l.copy_(torch.arange(l.numel(), dtype=torch.float32).view_as(l))
    train_grads(s, t)
    s.on_step_end(t)
    old = {k: v.detach().clone() for k, v in s.logits.items()}
    m_old = {k: v.clone() for k, v in s.adam_logits.m.items()}
    rule = rules.PruneChannels(node="c1", indices=[0, 2])
    g2, m2 = archgraph.rewrite(t.graph, t.module, rule)
    t2 = stub_trainer(g2, m2)
    s.on_rewrite(t2, archgraph.apply(t.graph, rule))
    assert torch.equal(s.logits["c1.weight"], old["c1.weight"][[1, 3]])
    assert torch.equal(s.logits["c2.weight"], old["c2.weight"][:, [1, 3]])
    assert torch.equal(s.logits["fc.weight"], old["fc.weight"])
    assert torch.equal(s.adam_logits.m["c2.weight"], m_old["c2.weight"][:, [1, 3]])
    assert all(s.logits[k].requires_grad and s.logits[k].shape == m2.get_parameter(k).shape for k in s.logits)
    train_grads(s, t2)                                            # trains on in the new version
    s.on_step_end(t2)
    back = GumbelStrategy(s.settings)
    back.load_state_dict(s.state_dict())
    back.attach(t2)
    assert all(torch.equal(back.logits[k], s.logits[k]) for k in s.logits)
    assert back.adam_logits.steps == s.adam_logits.steps == 2
    assert back.log_scale.keys() == s.log_scale.keys()


def test_gumbel_end_to_end(data_root, tmp_path):
    settings = {"name": "gumbel", "mask_lr": 0.2, "sparsity": 1.0, "temperature_end": 0.3}
    cfg = method_config(data_root, settings, epochs=4)
    summary = archgraph.grow(cfg, tmp_path / "run", quiet=True)
    seed_params = archgraph.format.yaml_io.graph_from_data(cfg["seed"]).params
    log, graphs, weights = check_run(tmp_path / "run", summary, seed_params)
    assert summary["test_acc"] >= 0.5                             # chance is 0.1: a subnetwork of random weights
    epochs = [e["metrics"] for e in log if e["event"] == "epoch"]
    assert epochs[0]["temperature"] > epochs[-1]["temperature"] and epochs[-1]["phase"] == "train"
    assert epochs[-1]["expected_density"] < 0.5                  # the sparsity term lowered the probabilities
    # fixed weights: every kept conv/linear weight is its initial value times its layer's scale
    g, m = graphs[0], archgraph.build(graphs[0], seed=0)
    for e in (e for e in log if e["event"] == "rewrite"):      # the initial weights, carried through the pruning
        g, m = archgraph.rewrite(g, m, archgraph.rules.parse(e["rule"], e["args"]))
    for key in ("c1.weight", "c2.weight", "fc.weight"):
        w = weights[key]
        ratio = w[w != 0] / m.get_parameter(key).detach()[w != 0]
        assert ratio.numel() and torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)


def test_gumbel_run_killed_anywhere_resumes_to_the_same_end(data_root, tmp_path, monkeypatch):
    from test_resume import Crash, assert_same_run, count_writes, crash_before_write
    cfg = method_config(data_root, {"name": "gumbel", "mask_lr": 0.2, "sparsity": 1.0}, epochs=3)
    archgraph.grow(cfg, tmp_path / "ref", quiet=True)
    total = count_writes(tmp_path / "ref")
    for k in (6, total - 4, total - 1):                  # mid-training, at the extraction, at the very end
        out = tmp_path / f"crash{k}"
        with monkeypatch.context() as patch:
            crash_before_write(patch, k)
            with pytest.raises(Crash):
                archgraph.grow(cfg, out, quiet=True)
        archgraph.grow(cfg, out, quiet=True, resume=True)
        assert_same_run(out, tmp_path / "ref")
