"""GbP: the expansion widens every free channel space once, the group scales are scale-free and global, the
penalty shrinks groups (weak ones harder), the annealed threshold rises on its schedule and removes the groups
under it, and a tiny run grows before it prunes and ends consistent."""
import math

import pytest
import torch
from conftest import ROOT
from method_helpers import attached, check_run, held_out, method_config, stub_trainer

import archgraph
from archgraph.train.strategies.gbp import GbpSettings, GbpStrategy

SEEDS = ROOT / "examples" / "seeds"


def setup(seed="digits_cnn", **settings):
    tr = stub_trainer(archgraph.load(SEEDS / f"{seed}.yaml"), epochs=40)
    return attached(GbpStrategy(GbpSettings(**settings)), tr)


def weaken(params, i, factor):
    """Scale every parameter of c2's channel ``i`` (its row, norm entries and the classifier's columns)."""
    with torch.no_grad():
        for key in ("c2.weight", "bn2.weight", "bn2.bias"):
            params[key][i] *= factor
        params["fc.weight"][:, 16 * i:16 * (i + 1)] *= factor


def advance(st, tr, rules):
    for r in rules:
        graph, module = archgraph.rewrite(tr.graph, tr.module, r)
        old, tr.graph, tr.module = tr.graph, graph, module
        st.on_rewrite(tr, archgraph.apply(old, r))


def test_the_expansion_widens_each_channel_space_once():
    st, tr = setup("resnet_cifar", expand_after=1, expand_factor=1.5)
    tr.epoch = 1
    rules = st.on_epoch_end(tr, {})
    assert st.phase == "search" and all(r.name == "add_filters" for r in rules)
    advance(st, tr, rules)
    g = tr.graph
    assert g.nodes["stem"].out_channels == g.nodes["b1_c2"].out_channels == 24        # the residual space once
    assert g.nodes["b1_c1"].out_channels == 24 and g.nodes["b2_c1"].out_channels == 48
    assert g.nodes["b2_c2"].out_channels == g.nodes["b2_short"].out_channels == 48
    assert st.sizes.peak_params == g.params


def test_group_scales_are_scale_free_and_the_penalty_pushes_weak_groups_harder():
    st, tr = setup(expand_after=1, penalty=1.0)
    params = dict(tr.module.named_parameters())
    weaken(params, 3, 0.1)                                              # one weak channel group
    before = st.scales(params)
    with torch.no_grad():
        params["c2.weight"].mul_(7.0)                                   # rescaling a tensor changes no scale
    assert torch.allclose(st.scales(params), before, atol=1e-6)
    weak = st.index.producer.index(("c2", 3))
    assert before[weak] == before.min()
    st._reweight(tr)
    st.phase = "search"
    _, extra = st.parametrize(tr, training=True)
    extra.backward()
    grad = params["c2.weight"].grad.reshape(8, -1)
    w = params["c2.weight"].detach().reshape(8, -1)
    # the penalty's gradient points along each row (shrinking it), and harder for the weak group (per unit norm)
    assert all(torch.dot(grad[i], w[i]) > 0 for i in range(8))
    push = [(grad[i].norm() / (w[i].norm() / w.norm(dim=1).mean())).item() for i in range(8)]
    assert push[3] > max(p for i, p in enumerate(push) if i != 3)


def test_the_threshold_rises_on_its_cosine_schedule():
    st, tr = setup(expand_after=2, anneal_start=3, anneal_epochs=10, threshold=0.4)
    assert st.threshold_at(10) == 0.0                                   # not expanded yet
    st.expanded_at = 2
    values = [st.threshold_at(e) for e in range(2, 20)]
    assert values[:4] == [0.0] * 4                                      # epochs 2..5: anneal_start
    assert values[3 + 5] == pytest.approx(0.2)                          # half way: half the threshold
    assert values[3 + 10] == pytest.approx(0.4) and values[-1] == pytest.approx(0.4)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[4] == pytest.approx(0.4 * 0.5 * (1 - math.cos(math.pi / 10)))


def test_groups_under_the_threshold_are_removed_lowest_first():
    st, tr = setup(expand_after=1, anneal_start=0, anneal_epochs=4, threshold=0.5, max_prune_fraction=0.13,
                   min_width=2)
    tr.epoch = 1
    advance(st, tr, st.on_epoch_end(tr, {}))                             # 8 + 16 channels now
    params = dict(tr.module.named_parameters())
    for i, f in zip((2, 5, 11, 13), (0.001, 0.01, 0.05, 0.2)):
        weaken(params, i, f)
    scales = st.scales(params)
    assert scales.argsort()[:4].tolist() == [st.index.producer.index(("c2", i)) for i in (2, 5, 11, 13)]
    tr.epoch = 3                                                         # threshold 0.25: four groups are under
    rules = st.on_epoch_end(tr, {})
    assert st.threshold == pytest.approx(0.25)
    assert [(r.node, r.indices) for r in rules] == [("c2", (2, 5, 11))]  # at most 13% of 24 groups at once
    advance(st, tr, rules)
    assert tr.graph.nodes["c2"].out_channels == 13


def test_a_tiny_gbp_run_grows_before_it_prunes(data_root, tmp_path):
    summary = archgraph.grow(method_config(data_root, "gbp"), tmp_path / "run", quiet=True)
    log = check_run(tmp_path / "run", summary, *held_out(data_root))
    kinds = [e["kind"] for e in log if e["event"] == "rewrite"]
    assert kinds[0] == "growth" and "prune" in kinds
    assert kinds.index("prune") > max(i for i, k in enumerate(kinds) if k == "growth")
    assert summary["params"] < summary["peak_params"] and summary["train_macs"] > 0
