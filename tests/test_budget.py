"""Budget: the budget loss's value and the direction it pushes the weights, the reparametrisation mask (scale-free,
a step in the cold limit), the reparametrised forward pass, extraction (exact zeros, emptied channels removed
without changing the function) and a run end to end on generated data."""
import pytest
import torch
import torch.nn.functional as F
from mask_helpers import attached, batch, check_run, method_config, stub_trainer
from torch.func import functional_call

import archgraph
from archgraph.train.strategies.budget import BudgetSettings, BudgetStrategy, budget_loss, keep_mask, mask_function
from archgraph.train.unstructured import masked_keys


def strategy(progress=0.0, epochs=10, seed=0, **settings):
    return attached(BudgetStrategy(BudgetSettings(**settings)), progress, epochs, seed)


@pytest.mark.parametrize("kind", ["squared", "hinge"])
def test_budget_loss_value_and_gradient(kind):
    for density, target in ((0.3, 0.1), (0.05, 0.1), (0.1, 0.1)):
        d = torch.tensor(density, requires_grad=True)
        loss = budget_loss(d, target, kind)
        loss.backward()
        if kind == "squared":
            assert loss.item() == pytest.approx((density - target) ** 2)
            assert d.grad.item() == pytest.approx(2 * (density - target))
        else:
            assert loss.item() == pytest.approx(max(0.0, density - target))
            assert d.grad.item() == (1.0 if density > target else 0.0)


def test_mask_is_scale_free_monotone_and_a_step_when_cold():
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    f = mask_function(w, 0.5, 1.0)
    assert torch.allclose(mask_function(7.0 * w, 0.5, 1.0), f) and (0 < f).all() and (f < 1).all()
    order = w.abs().flatten().argsort()
    assert (f.flatten()[order].diff() >= 0).all()                 # more magnitude, more kept
    assert torch.equal((mask_function(w, 0.5, 1e-5) > 0.5).float(), keep_mask(w, 0.5))
    rms = w.pow(2).mean().sqrt()
    assert torch.equal(keep_mask(w, 0.5), (w.abs() > 0.5 * rms).float())


@pytest.mark.parametrize("target, sign", [(0.05, 1.0), (0.99, -1.0)])
def test_budget_gradient_shrinks_weights_over_budget_and_grows_them_under(target, sign):
    s, t = strategy(target=target, temperature_start=0.5)
    _, extra = s.parametrize(t, training=True)
    extra.backward()
    for key in masked_keys(t.graph):
        w = t.module.get_parameter(key)
        push = sign * w.grad * w.detach().sign()                  # > 0: a descent step moves |w| down
        assert (push >= 0).all() and (push > 0).float().mean() > 0.99


def test_reparametrised_forward_and_its_gradient():
    s, t = strategy(temperature_start=0.3)
    values, extra = s.parametrize(t, training=True)
    w = t.module.c2.weight
    f = mask_function(w.detach(), 0.5, 0.3)
    assert torch.allclose(values["c2.weight"], w.detach() * f)
    values["c2.weight"].sum().backward()
    # d(w f(w))/dw = f + |w| f' / rms, with f' = f (1 - f) / T (the RMS is a constant)
    rms = w.detach().pow(2).mean().sqrt()
    expected = f + w.detach().abs() * f * (1 - f) / (0.3 * rms)
    assert torch.allclose(w.grad, expected, rtol=1e-5)
    evals, none = s.parametrize(t, training=False)
    keep = keep_mask(w, 0.5)
    assert none is None and torch.equal(evals["c2.weight"], w.detach() * f * keep)
    assert (evals["c2.weight"][keep == 0] == 0).all()


def test_warmup_trains_dense_first():
    s, t = strategy(warmup_epochs=2, progress=1.5)
    assert s.parametrize(t, training=True) == ({}, None)
    t.epoch, t.progress = 2, 2.0
    values, extra = s.parametrize(t, training=True)
    assert values and extra is not None and s.temperature(t) == pytest.approx(0.5)


def test_extraction_zeroes_and_removes_emptied_channels_without_changing_the_function():
    s, t = strategy(progress=10, temperature_end=0.005)
    with torch.no_grad():
        t.module.c1.weight[3] *= 1e-3                             # every weight making channel 3 is under the bar
        t.module.c2.weight[:, 0] *= 1e-3                          # every weight reading channel 0 is too
    t.module.eval()
    x, _ = batch(2)
    expected = functional_call(t.module, s.parametrize(t, training=False)[0], (x,))
    found = s.finalize(t)
    assert [(r.name, r.node, r.indices) for r in found] == [("prune_channels", "c1", (0, 3))]
    assert s.finalize(t) == [] and s.parametrize(t, training=True) == ({}, None)
    for i in (0, 3):
        assert t.module.c1.weight[i].abs().sum() == 0 and t.module.bn1.weight[i] == 0 == t.module.bn1.bias[i]
    assert torch.allclose(t.module(x), expected, atol=1e-6)
    g2, m2 = archgraph.rewrite(t.graph, t.module, found[0])
    s.on_rewrite(stub_trainer(g2, m2), archgraph.apply(t.graph, found[0]))
    assert torch.allclose(m2.eval()(x), expected, atol=1e-6) and g2.params == t.graph.params - 2 * (9 + 2 + 72)


def test_training_step_moves_toward_the_budget():
    s, t = strategy(target=0.05, budget_weight=50.0, temperature_start=0.3)
    opt = torch.optim.SGD(t.module.parameters(), lr=0.05)
    x, y = batch(3)
    densities = []
    for _ in range(20):
        values, extra = s.parametrize(t, training=True)
        loss = F.cross_entropy(functional_call(t.module, values, (x,)), y) + extra
        opt.zero_grad()
        loss.backward()
        opt.step()
        densities.append(s.masked(t, training=True)[1].item())
    assert densities[-1] < densities[0] - 0.02


def test_budget_end_to_end(data_root, tmp_path):
    cfg = method_config(data_root, {"name": "budget", "target": 0.05}, epochs=5)
    summary = archgraph.grow(cfg, tmp_path / "run", quiet=True)
    seed_params = archgraph.format.yaml_io.graph_from_data(cfg["seed"]).params
    log, graphs, weights = check_run(tmp_path / "run", summary, seed_params)
    assert summary["test_acc"] >= 0.5
    epochs = [e["metrics"] for e in log if e["event"] == "epoch"]
    assert epochs[0]["temperature"] > epochs[-1]["temperature"]
    assert epochs[-1]["soft_density"] < 0.1 and abs(epochs[-1]["density"] - epochs[-1]["soft_density"]) < 0.02
    kept = sum(int((weights[k] != 0).sum()) for k in masked_keys(graphs[-1]))
    seed = archgraph.build(graphs[0])
    seed_weights = sum(seed.get_parameter(k).numel() for k in masked_keys(graphs[0]))
    assert kept / seed_weights < 0.1                              # near the 5% budget, no fine-tuning
