"""SCS and Continuous Sparsification: the gate scaling sigmoid(beta*s)/sigmoid(s0), beta annealing and the reset
between rounds, Bernoulli sampling with straight-through gradients, the budget-aware penalty, the hard mask
1[s > 0] folded into the weights with the closed structures removed exactly, and a tiny run that grows."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from method_helpers import attached, check_run, held_out, method_config, stub_trainer
from torch.func import functional_call

import archgraph
from archgraph.fx.weights import load_weights
from archgraph.train.strategies.scs import ScsSettings, ScsStrategy

SEEDS = ROOT / "examples" / "seeds"


def setup(seed="digits_cnn", epochs=10, **settings):
    tr = stub_trainer(archgraph.load(SEEDS / f"{seed}.yaml"), epochs=epochs)
    return attached(ScsStrategy(ScsSettings(**settings)), tr)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_cs_gates_start_at_one_and_scale_by_one_over_sigmoid_s0():
    st, tr = setup(sample=False, s_init=0.5)
    params = dict(tr.module.named_parameters())
    overrides, extra = st.parametrize(tr, training=True)
    for key, value in overrides.items():
        assert torch.allclose(value, params[key])                    # sigmoid(1 * s0) / sigmoid(s0) = 1
    assert extra is not None and extra.item() > 0
    with torch.no_grad():
        st.s["c2"][:] = torch.tensor([2.0, -2.0, 0.1, 0.5, 0.5, 0.5, 0.5, 0.5])
    st.beta = 50.0
    overrides, _ = st.parametrize(tr, training=False)
    gate = overrides["bn2.weight"] / params["bn2.weight"]
    expected = torch.sigmoid(50 * st.s["c2"].detach()) / sigmoid(0.5)
    assert torch.allclose(gate, expected, rtol=1e-5)
    assert gate[0].item() == pytest.approx(1 / sigmoid(0.5), rel=1e-4) and gate[1].item() < 1e-20


def test_beta_is_multiplied_every_epoch_to_beta_final_and_reset_between_rounds():
    st, tr = setup(epochs=12, rounds=2, beta_final=100.0, s_init=1.0, grow_until=0.0, close_below=1e-9)
    assert st.round_length == 6
    betas = []
    with torch.no_grad():
        st.s["c1"][0] = 3.0
    for e in range(1, 7):
        tr.epoch = e
        st.on_epoch_end(tr, {})
        betas.append(st.beta)
    ratios = [b / a for a, b in zip(betas[:-2], betas[1:-1])]
    assert all(r == pytest.approx(100 ** (1 / 6)) for r in ratios)   # a constant factor per epoch
    assert betas[-2] == pytest.approx(100 ** (5 / 6))
    assert st.round == 1 and st.beta == 1.0 and st.k == 0             # the round ended: beta reset ...
    assert st.s["c1"].max().item() == 1.0                             # ... and s clamped to s0
    for e in range(7, 13):
        tr.epoch = e
        st.on_epoch_end(tr, {})
    assert st.phase == "done"                                         # the last round ends with the hard mask


def test_sampling_draws_each_structure_with_its_gate_probability_and_passes_gradients_straight_through():
    st, tr = setup(s_init=1.0)
    with torch.no_grad():
        st.s["c2"][:] = torch.tensor([3.0, -1.0, 0.0, 0.4, 1.0, 2.0, -3.0, 0.2])
    torch.manual_seed(0)
    params = dict(tr.module.named_parameters())
    draws = []
    for _ in range(400):
        overrides, _ = st.parametrize(tr, training=True)
        draws.append((overrides["bn2.weight"] / params["bn2.weight"]).detach())
    draws = torch.stack(draws)
    assert sorted(draws.unique().tolist()) == [pytest.approx(0.001), 1.0]   # the sample (off: 0.001, not 0)
    p = torch.sigmoid(st.s["c2"].detach())
    assert torch.allclose((draws == 1).float().mean(0), p, atol=0.08)
    assert st._step_macs < tr.graph.macs                               # the sampled sub-network costs less
    # gradients reach every logit, sampled on or off
    x = torch.randn(8, 1, 8, 8)
    overrides, extra = st.parametrize(tr, training=True)
    F.cross_entropy(functional_call(tr.module, overrides, (x,)), torch.arange(8)).backward()
    assert (st.s["c2"].grad != 0).all()
    # evaluation uses the hard mask 1[s > 0]
    overrides, _ = st.parametrize(tr, training=False)
    gate = overrides["bn2.weight"] / params["bn2.weight"]
    assert gate.tolist() == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0]


def test_the_penalty_prices_macs_spares_min_width_and_stops_under_the_budget():
    st, tr = setup(s_init=1.0, min_width=2, penalty=1.0)
    _, extra = st.parametrize(tr, training=True)
    extra.backward()
    grad = st.s["c2"].grad
    top2 = torch.argsort(st.s["c2"].detach(), descending=True, stable=True)[:2]
    assert (grad[top2] == 0).all() and (grad[[i for i in range(8) if i not in top2.tolist()]] > 0).all()
    assert (st.s["c1"].grad[2:] > st.s["c2"].grad[2:].mean()).all()   # a c1 channel costs more MACs
    st2, tr2 = setup(s_init=4.0, budget=0.9)
    assert st2.parametrize(tr2, training=True)[1] is not None
    with torch.no_grad():
        for v in st2.s.values():
            v[: v.numel() // 2] = -5.0
    assert float(st2.expected_macs().detach()) < 0.9 * st2.sizes.seed_macs
    assert st2.parametrize(tr2, training=True)[1] is None


def test_with_cost_params_the_penalty_prices_parameters_and_the_budget_is_a_share_of_the_seeds():
    """On the LSTM LM the embedding has parameters and no MACs: priced by MACs an embedding gate costs only the
    LSTM columns reading it, priced by parameters its own row of the table too; the budget is then a share of the
    seed's parameters."""
    ratio = {}
    for cost in ("macs", "params"):
        st, tr = setup("lstm_text", s_init=1.0, min_width=2, penalty=1.0, cost=cost)
        _, extra = st.parametrize(tr, training=True)
        extra.backward()
        ratio[cost] = st.s["embed"].grad.abs().max().item() / st.s["lstm"].grad.abs().max().item()
    # per channel, MACs: 4H (LSTM columns) against the LSTM unit's ~4(E+H)+4H+V; parameters: V+4H against about
    # the same (V=128 characters, E=32, H=64): 0.33 and 0.50
    assert ratio["params"] > 1.5 * ratio["macs"]
    on = {}
    for cost in ("macs", "params"):
        st, tr = setup("lstm_text", s_init=4.0, cost=cost, budget=0.4)
        assert st.parametrize(tr, training=True)[1] is not None
        with torch.no_grad():
            st.s["lstm"][: st.s["lstm"].numel() // 2] = -5.0    # half the units closed
        expected, seed = st.expected_cost(*st.soft())
        assert seed == (tr.graph.params if cost == "params" else tr.graph.macs)
        on[cost] = (round(float(expected.detach()) / seed, 2), st.parametrize(tr, training=True)[1] is not None)
    # the LSTM's MACs are quadratic in its units and the embedding has none; its parameters are not all in them
    # (the graph with those units pruned has 44.7% of the parameters: the estimate scales the biases as weights)
    assert on == {"macs": (0.37, False), "params": (0.43, True)}


@pytest.mark.parametrize("sample", [True, False])
def test_the_hard_mask_is_folded_into_the_weights_and_closed_structures_removed_exactly(sample):
    st, tr = setup("resnet_cifar", s_init=0.8, sample=sample)
    tr.module.eval()
    with torch.no_grad():
        st.s["b1_c1"][[1, 4, 9]] = -1.0
        st.s["b2_c1"][:] = -1.0                                          # every channel: min_width keep zeros
        st.sb["b1_bn2"].fill_(-0.5)
        for p in tr.module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    st.beta = 1e4                                                        # the gates are the hard mask now
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    gated = functional_call(tr.module, st.parametrize(tr, training=False)[0], (x,))
    rules = st._harden(tr)
    assert st.phase == "done"
    assert torch.allclose(tr.module(x), gated, atol=1e-5)               # folded: no overrides needed
    assert [r.name for r in rules] == ["collapse_layer", "prune_channels"]
    assert rules[1].node == "b2_c1" and len(rules[1].indices) == 30     # b1_c1 went with its branch
    graph, module = tr.graph, tr.module
    for r in rules:
        graph, module = archgraph.rewrite(graph, module, r)
    assert torch.allclose(module.eval()(x), gated, atol=1e-5)


def test_a_tiny_scs_run_grows_removes_closed_channels_and_saves_training_macs(data_root, tmp_path):
    summary = archgraph.grow(method_config(data_root, "scs"), tmp_path / "run", quiet=True)
    log = check_run(tmp_path / "run", summary, *held_out(data_root))
    assert summary["growth_events"] >= 1 and summary["prune_events"] >= 1
    assert 0 < summary["train_macs"] < summary["train_macs_dense"]
    epochs = [e["metrics"] for e in log if e["event"] == "epoch"]
    assert all("train_macs" in m and "beta" in m for m in epochs)
    assert epochs[-1]["train_macs"] <= summary["train_macs"]


def test_layers_whose_gates_are_all_open_grow_and_a_residual_block_is_inserted():
    st, tr = setup("resnet_cifar", epochs=20, s_init=2.0, grow_every=1, grow_until=0.5, growth_factor=1.5,
                   grow_blocks=True, s_new=0.5)
    with torch.no_grad():
        st.s["b2_c1"][:16] = -3.0                                       # half closed: this layer does not grow
    tr.epoch = 1
    rules = st.on_epoch_end(tr, {})
    assert [(r.name, getattr(r, "node", getattr(r, "after", None))) for r in rules] == \
        [("add_filters", "b1_c1"), ("insert_block", "b1_out")]
    assert rules[0].count == 8 and st.growths == 1
    for r in rules:
        graph, module = archgraph.rewrite(tr.graph, tr.module, r)
        old, tr.graph, tr.module = tr.graph, graph, module
        st.on_rewrite(tr, archgraph.apply(old, r))
    assert st.s["b1_c1"].shape == (24,) and st.s["b1_c1"][16:].tolist() == [0.5] * 8
    new_branch = [k for k in st.sb if k not in ("b1_bn2", "b2_bn2")]
    assert len(new_branch) == 1 and st.sb[new_branch[0]].item() == 0.5
    assert any(k.startswith("b1_out") for k in st.s)                   # the new block's first layer is gated too


@pytest.mark.parametrize("seed,closed", [("lstm_lm", {"lstm": [0, 3, 7], "embed": [2]}),
                                         ("gpt_tiny", {"b0_attn": [1], "b1_fc": [4, 5]})])
def test_closed_units_and_heads_are_folded_and_removed_exactly(seed, closed):
    st, tr = setup(seed, s_init=0.8)
    tr.module.eval()
    with torch.no_grad():
        for node, idx in closed.items():
            st.s[node][idx] = -1.0
        for p in tr.module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    st.beta = 1e4
    x = torch.randint(0, 65, (2, 32), generator=torch.Generator().manual_seed(0))
    gated = functional_call(tr.module, st.parametrize(tr, training=False)[0], (x,))
    rules = st._harden(tr)
    assert sorted((r.name, r.node, list(r.indices)) for r in rules) == sorted(
        ("prune_heads" if st.layout.channel[n].unit == "head" else "prune_channels", n, i) for n, i in closed.items())
    graph, module = tr.graph, tr.module
    for r in rules:
        graph, module = archgraph.rewrite(graph, module, r)
    assert torch.allclose(module.eval()(x), gated, atol=1e-5)
    assert graph.params < tr.graph.params


@pytest.mark.parametrize("seed,method,rule", [("lstm_text", {"penalty": 20.0}, "prune_channels"),
                                              ("gpt_text", {"penalty": 5.0, "branch_gates": False}, "prune_heads")])
def test_a_tiny_scs_run_removes_lstm_units_and_attention_heads(tmp_path, seed, method, rule):
    import yaml
    run = yaml.safe_load((ROOT / "examples" / "text_lstm_scs.yaml").read_text())
    run["seed"] = str(SEEDS / f"{seed}.yaml")
    run["data"].update(limit=128, test_limit=32, eval_batch_size=64)
    run["schedule"].update(epochs=4, device="cpu", format="eager")
    run["method"].update(max_growths=0, budget=None, gate_lr=0.5, **method)
    summary = archgraph.grow(run, tmp_path / "run", quiet=True)
    log = check_run(tmp_path / "run", summary)
    assert summary["prune_events"] >= 1 and summary["params"] < archgraph.load(run["seed"]).params
    assert rule in [e["rule"] for e in log if e["event"] == "rewrite"]


def test_with_every_gate_open_and_no_penalty_scs_trains_the_unet_exactly_as_dense(tmp_path):
    """The gating mechanics on a U-Net (skip concats, a transposed conv, gates after each batchnorm) are exact: with
    gates that are always drawn on (s0 = 20) and no penalty, SCS's run is dense training step for step; what SCS
    loses on segmentation comes from what the draws switch off, not from the gates' plumbing."""
    import yaml
    run = yaml.safe_load((ROOT / "examples" / "digits_scenes_scs.yaml").read_text())
    run["seed"] = str(SEEDS / "unet_scenes.yaml")
    run["data"].update(limit=96, test_limit=32)
    run["schedule"].update(epochs=2, device="cpu", threads=1)
    out = {}
    for name, method in (("dense", {"name": "dense"}),
                         ("scs", {**run["method"], "s_init": 20.0, "penalty": 0.0, "max_growths": 0})):
        out[name] = archgraph.grow({**run, "method": method}, tmp_path / name, quiet=True)
    for key in ("val_acc", "val_miou", "test_loss", "test_miou", "macs", "params"):
        assert out["scs"][key] == out["dense"][key], key
    dense, scs = (load_weights(tmp_path / n / "weights" / "final.safetensors") for n in ("dense", "scs"))
    assert dense.keys() == scs.keys() and all(torch.equal(dense[k], scs[k]) for k in dense)
