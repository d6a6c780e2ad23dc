"""CGaP: the saliency probe measures sum(activation x gradient) per channel without changing the function, growth
splits the most salient units, pruning removes the least salient ones (relative to their layer) down to the target,
and a tiny run grows, prunes and ends consistent."""
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from method_helpers import attached, check_run, held_out, method_config, stub_trainer
from torch.func import functional_call

import archgraph
from archgraph.train.strategies.cgap import CgapSettings, CgapStrategy

DIGITS = ROOT / "examples" / "seeds" / "digits_cnn.yaml"


def strategy(graph, **settings):
    return attached(CgapStrategy(CgapSettings(**settings)), stub_trainer(graph, epochs=50, batch_size=16))


def test_the_probe_measures_activation_times_gradient_and_changes_nothing():
    g = archgraph.load(DIGITS)
    st, tr = strategy(g)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(16) % 10
    overrides, extra = st.parametrize(tr, training=True)
    assert extra is None and set(overrides) == {"bn1.weight", "bn1.bias", "bn2.weight", "bn2.bias"}
    out = functional_call(tr.module, overrides, (x,))
    torch.manual_seed(0)
    F.cross_entropy(out, y).backward()
    probe = {k: v.grad.clone() for k, v in st._probe.items()}
    # the same quantity by hand: the batchnorm outputs and the gradient reaching them
    acts = {}
    hooks = [getattr(tr.module, n).register_forward_hook(lambda mod, i, o, n=n: acts.__setitem__(n, o))
             for n in ("bn1", "bn2")]
    out2 = tr.module(x)
    for h in hooks:
        h.remove()
    assert torch.allclose(out, out2)                                 # probes at 1 change nothing
    for a in acts.values():
        a.retain_grad()
    F.cross_entropy(out2, y).backward()
    for node, bn in (("c1", "bn1"), ("c2", "bn2")):
        a = acts[bn]
        taylor = (a * a.grad).sum(dim=(0, 2, 3))
        assert torch.allclose(probe[node], taylor, atol=1e-6)
    # the step folds |probe gradient| into the moving average
    st.on_step_end(tr)
    assert torch.allclose(st.saliency["c1"], (1 - 0.9) * probe["c1"].abs())


def test_growth_splits_the_most_salient_units_and_slows_down():
    g = archgraph.load(DIGITS)
    st, tr = strategy(g, growth_rate=0.5, growth_decay=0.5, grow_every=1, grow_epochs=4)
    st.saliency["c2"] = torch.tensor([0.1, 5.0, 0.2, 3.0, 0.3, 0.4, 4.0, 2.0])
    st.saliency["c1"] = torch.tensor([1.0, 0.0, 2.0, 0.5])
    tr.epoch = 1
    rules = st.on_epoch_end(tr, {})
    by_node = {r.node: r for r in rules}
    assert by_node["c2"].name == "split_filters" and by_node["c2"].indices == (1, 3, 6, 7)
    assert by_node["c1"].indices == (0, 2)
    assert st.rate == 0.25 and st.growths == 1
    # the split halves keep their original's saliency
    graph = g
    for r in rules:
        rw = archgraph.apply(graph, r)
        st.on_rewrite(tr, rw)
        graph = rw.graph
    assert st.saliency["c2"].tolist()[-4:] == pytest.approx([5.0, 3.0, 4.0, 2.0])
    tr.epoch = 5
    assert st.on_epoch_end(tr, {}) == []                             # growth is over


def test_pruning_takes_the_least_salient_relative_to_the_layer_down_to_the_target():
    g = archgraph.load(DIGITS)
    st, tr = strategy(g, prune_start=1, prune_every=1, prune_rate=0.15, target_ratio=0.5, grow_epochs=0,
                      min_width=2)
    st.saliency["c1"] = torch.tensor([1.0, 1.0, 1.0, 0.01])         # c1[3] is 1/75 of its layer's mean
    st.saliency["c2"] = torch.tensor([10.0, 0.5, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0])
    tr.epoch = 1
    rules = st.on_epoch_end(tr, {})
    assert [(r.node, r.indices) for r in rules] == [("c1", (3,)), ("c2", (1,))]
    assert st.prunes == 1
    graph = g
    for _ in range(6):                                               # keeps pruning until under the target
        for r in rules:
            rw = archgraph.apply(graph, r)
            st.on_rewrite(tr, rw)
            graph = rw.graph
        tr.graph = graph
        tr.module = archgraph.build(graph)
        tr.epoch += 1
        rules = st.on_epoch_end(tr, {})
    assert graph.params <= 0.5 * g.params and st.done_pruning
    assert min(graph.nodes["c1"].out_channels, graph.nodes["c2"].out_channels) >= 2


def test_a_tiny_cgap_run_grows_prunes_and_ends_consistent(data_root, tmp_path):
    summary = archgraph.grow(method_config(data_root, "cgap"), tmp_path / "run", quiet=True)
    log = check_run(tmp_path / "run", summary, *held_out(data_root))
    assert summary["growth_events"] >= 2 and summary["prune_events"] >= 1
    assert summary["peak_params"] > summary["params"] and summary["params_reduction"] > 0
    assert summary["train_macs"] > 0
    growth = [e for e in log if e["event"] == "rewrite" and e["kind"] == "growth"]
    assert {e["rule"] for e in growth} == {"split_filters"}
