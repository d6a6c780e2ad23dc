"""archgraph.Network: graph, module and history in one object; rewrites and pruning carry the optimizer in place;
net.save writes a run directory the history tools read."""
import pytest
import torch
from conftest import ROOT

import archgraph
from archgraph import rules as R
from archgraph.errors import ArchgraphError
from archgraph.history.run import load_run

TINY = ROOT / "examples" / "seeds" / "tiny_cnn.yaml"


def _train_a_step(net, opt):
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net.module(x), y).backward()
    opt.step()


def test_rewrite_keeps_the_optimizer_object_groups_scheduler_and_moments():
    torch.manual_seed(0)
    net = archgraph.Network(TINY)
    opt = torch.optim.Adam([{"params": [p for n, p in net.module.named_parameters() if "c1" in n], "lr": 0.1},
                            {"params": [p for n, p in net.module.named_parameters() if "c1" not in n]}], lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    _train_a_step(net, opt)
    before = opt.state[net.module.c2.weight]["exp_avg"].clone()
    rw = net.rewrite(R.AddFilters(node="c1", count=2, init="preserve"), optimizer=opt)
    assert rw.exact and net.version == 1 and net.graph.nodes["c1"].out_channels == 6
    assert opt.param_groups[0]["params"][0] is net.module.c1.weight and opt.param_groups[0]["lr"] == 0.1
    # c2 reads c1: its old input columns keep their moments, the new ones start at zero
    after = opt.state[net.module.c2.weight]["exp_avg"]
    assert torch.equal(after[:, :4], before) and torch.count_nonzero(after[:, 4:]) == 0
    sched.step()
    assert opt.param_groups[1]["lr"] == pytest.approx(0.005)
    _train_a_step(net, opt)   # the optimizer trains the new module


def test_prune_keeps_surviving_moments_and_logs_a_version_per_rule(tmp_path):
    torch.manual_seed(1)
    net = archgraph.Network(TINY)
    opt = torch.optim.Adam(net.module.parameters(), lr=0.01)
    _train_a_step(net, opt)
    old_w = net.module.c2.weight.detach().clone()
    old_m = opt.state[net.module.c2.weight]["exp_avg"].clone()
    applied = net.prune(0.5, optimizer=opt)
    assert applied and net.version == len(applied)
    assert [e["kind"] for e in net.history if e["event"] == "rewrite"] == ["prune"] * len(applied)
    # every surviving c2 filter keeps its weights and its moments, side by side
    w, m = net.module.c2.weight.detach(), opt.state[net.module.c2.weight]["exp_avg"]
    for i in range(w.shape[0]):
        src = [j for j in range(old_w.shape[0]) if old_w[j].shape == w[i].shape and torch.equal(old_w[j], w[i])]
        if src:
            assert torch.equal(m[i], old_m[src[0]])
    _train_a_step(net, opt)
    out = net.save(tmp_path / "run")
    assert archgraph.replay(out) == net.graph
    run = load_run(out)
    assert run.latest == net.version and run.summary["prune_events"] == len(applied)


def test_weights_load_strictly_naming_the_tensor(tmp_path):
    from archgraph.fx.weights import save_weights
    net = archgraph.Network(TINY, seed=3)
    path = tmp_path / "w.safetensors"
    save_weights(net.state_dict(), path)
    again = archgraph.Network(TINY, weights=path)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    state = net.state_dict()
    state.pop("c2.weight")
    with pytest.raises(ArchgraphError, match="c2.weight"):
        archgraph.Network(TINY, weights=state)


def test_save_refuses_a_folder_of_another_run(tmp_path):
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(ArchgraphError, match="already holds"):
        archgraph.Network(TINY).save(tmp_path)
