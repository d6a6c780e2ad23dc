"""Weights, buffers and optimizer state across a rewrite."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import ROOT

import archgraph
from archgraph import rules

OPTIMIZERS = {
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "sgd-nesterov-wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw-amsgrad": lambda p: torch.optim.AdamW(p, lr=1e-2, amsgrad=True),
}


def seed(name):
    return archgraph.load(ROOT / "examples" / "seeds" / f"{name}.yaml")


def trained(graph, make_opt, steps=3):
    torch.manual_seed(0)
    module = archgraph.build(graph, dtype=torch.float64).train()
    opt = make_opt(module.parameters())
    shape = next(iter(graph.inputs.values()))
    x = torch.randn(6, *shape, dtype=torch.float64)
    y = torch.randint(0, 10, (6,))
    for _ in range(steps):
        step(module, opt, x, y)
    return module, opt, x, y


def step(module, opt, x, y) -> float:
    torch.manual_seed(1)  # the same dropout masks for the rewritten network and its reference
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(module(x), y)
    loss.backward()
    opt.step()
    return loss.item()


def holds(opt) -> set[int]:
    return {id(p) for g in opt.param_groups for p in g["params"]}


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("seed_name,node", [("tiny_cnn", "c2"), ("resnet_cifar", "b1_c2"),
                                            ("mobilenet_depthwise", "pw1")])
def test_preserve_widening_steps_like_the_unchanged_network(opt_name, seed_name, node):
    g = seed(seed_name)
    make = OPTIMIZERS[opt_name]
    module, opt, x, y = trained(g, make)
    ref = copy.deepcopy(module)
    ref_opt = make(ref.parameters())
    ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # a real copy: load_state_dict shares tensors
    rw = archgraph.apply(g, rules.AddFilters(node=node, count=3, init="preserve"))
    from archgraph.fx.materialise import materialise
    new = materialise(rw, module, opt)
    assert holds(opt) == {id(p) for p in new.parameters()}
    assert new.training
    loss_new, loss_ref = step(new, opt, x, y), step(ref, ref_opt, x, y)
    assert abs(loss_new - loss_ref) <= 1e-12
    for key, p_ref in ref.named_parameters():
        p_new = dict(new.named_parameters())[key]
        tp = rw.plan.tensors[key]
        view = p_new
        for axis, m in tp.axes:  # the old entries of a widened tensor are its first positions
            view = view.narrow(axis, 0, m.old_size)
        assert torch.allclose(view, p_ref, rtol=0, atol=1e-12), key
    # and the state went on the same way for the old entries
    state_ref = ref_opt.state[ref.get_parameter(f"{node}.weight")]
    state_new = opt.state[new.get_parameter(f"{node}.weight")]
    for name, v in state_ref.items():
        if torch.is_tensor(v) and v.dim() > 0:
            assert torch.allclose(state_new[name][: v.shape[0]], v, rtol=0, atol=1e-12), name
        else:
            assert float(state_new[name]) == float(v)


@pytest.mark.parametrize("opt_name", ["sgd-momentum", "adam"])
def test_pruning_slices_the_state(opt_name):
    g = seed("tiny_cnn")
    module, opt, x, y = trained(g, OPTIMIZERS[opt_name])
    old_w = module.c2.weight
    old_next = module.c3.weight
    old_state = {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[old_w].items()}
    old_next_state = {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[old_next].items()}
    g2, m2 = archgraph.rewrite(g, module, rules.PruneChannels(node="c2", indices=(0, 3, 5)), optimizer=opt)
    keep = [1, 2, 4, 6, 7]
    assert torch.equal(m2.c2.weight, old_w[keep]) and torch.equal(m2.c3.weight, old_next[:, keep])
    assert torch.equal(m2.bn2.running_mean, module.bn2.running_mean[keep])
    for name, v in old_state.items():
        got = opt.state[m2.c2.weight][name]
        if torch.is_tensor(v) and v.dim() > 0:
            assert torch.equal(got, v[keep]), name
            assert torch.equal(opt.state[m2.c3.weight][name], old_next_state[name][:, keep]), name
        else:
            assert float(got) == float(v)  # Adam's step survives
    assert holds(opt) == {id(p) for p in m2.parameters()}
    step(m2, opt, x, y)


def test_new_and_copied_entries_start_with_zero_state():
    g = seed("tiny_cnn")
    module, opt, x, y = trained(g, OPTIMIZERS["adam"])
    before = {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[module.c2.weight].items()}
    rw = archgraph.apply(g, rules.AddFilters(node="c2", count=4, init="net2net", seed=3))
    from archgraph.fx.materialise import materialise
    m2 = materialise(rw, module, opt)
    st = opt.state[m2.c2.weight]
    for name in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(st[name][:8], before[name])
        assert st[name][8:].abs().sum() == 0
        # the readers' copied columns start at zero too; the originals keep theirs
        copied = sorted(rw.plan.tensors["c3.weight"].axes[0][1].copied)
        assert copied == [8, 9, 10, 11]
        assert opt.state[m2.c3.weight][name][:, 8:].abs().sum() == 0
    assert float(st["step"]) == float(before["step"])
    step(m2, opt, x, y)


def test_param_groups_keep_settings_and_new_parameters_join_a_matching_group():
    g = seed("tiny_cnn")
    torch.manual_seed(0)
    module = archgraph.build(g)
    decay = [p for p in module.parameters() if p.dim() > 1]
    no_decay = [p for p in module.parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 1e-4, "lr": 0.1},
                           {"params": no_decay, "weight_decay": 0.0, "lr": 0.2}], momentum=0.9)
    g2, m2 = archgraph.rewrite(g, module, rules.InsertLayer(after="r1", norm="batchnorm"), optimizer=opt)
    groups = [{id(p) for p in grp["params"]} for grp in opt.param_groups]
    assert id(m2.get_parameter("r1_conv.weight")) in groups[0]
    assert id(m2.get_parameter("r1_bn.weight")) in groups[1] and id(m2.get_parameter("r1_bn.bias")) in groups[1]
    assert [grp["lr"] for grp in opt.param_groups] == [0.1, 0.2]
    assert [grp["weight_decay"] for grp in opt.param_groups] == [1e-4, 0.0]
    assert holds(opt) == {id(p) for p in m2.parameters()}


def test_parameters_outside_the_optimizer_stay_outside_and_frozen():
    g = seed("tiny_cnn")
    module = archgraph.build(g)
    module.c1.weight.requires_grad_(False)
    opt = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    g2, m2 = archgraph.rewrite(g, module, rules.AddFilters(node="c2", count=2), optimizer=opt)
    assert id(m2.c1.weight) not in holds(opt) and not m2.c1.weight.requires_grad
    assert holds(opt) == {id(p) for p in m2.parameters() if p.requires_grad}


def test_removed_nodes_leave_the_optimizer():
    g = seed("resnet_cifar")
    module, opt, x, y = trained(g, OPTIMIZERS["sgd-momentum"], steps=1)
    g2, m2 = archgraph.rewrite(g, module, rules.CollapseLayer(node="b1_bn2"), optimizer=opt)
    assert "b1_c1" not in g2.nodes
    assert holds(opt) == {id(p) for p in m2.parameters()}
    assert len(opt.state) == len(list(m2.parameters()))
    step(m2, opt, x, y)
    opt.load_state_dict(opt.state_dict())  # the state is consistent with the groups


def test_mode_device_dtype_and_old_module_are_kept():
    g = seed("tiny_cnn")
    module = archgraph.build(g, dtype=torch.float64).eval()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    g2, m2 = archgraph.rewrite(g, module, rules.SplitFilters(node="c1", indices=(0,), eps=0.1))
    assert not m2.training and m2.c1.weight.dtype == torch.float64
    assert all(torch.equal(module.state_dict()[k], v) for k, v in before.items())
    # the split halves: +-eps noise on the incoming weights, halved outgoing weights
    w = module.c1.weight[0]
    assert torch.allclose((m2.c1.weight[0] + m2.c1.weight[4]) / 2, w, atol=1e-12)
    assert not torch.allclose(m2.c1.weight[0], w)
    assert torch.allclose(m2.c2.weight[:, 0], module.c2.weight[:, 0] / 2)
    assert torch.allclose(m2.c2.weight[:, 4], module.c2.weight[:, 0] / 2)


def test_transfer_state_without_a_module_and_logged_rules():
    from archgraph.fx.apply_plan import transfer_state
    g = seed("densenet_concat")
    module = archgraph.build(g)
    rw = archgraph.apply(g, {"rule": "prune_channels", "args": {"node": "l1_conv", "indices": [0, 7]}})
    state = transfer_state(rw.plan, module.state_dict())
    fresh = archgraph.build(rw.graph)
    fresh.load_state_dict(state)
    # the concat offsets moved: cat1 = [stem (16), l1_conv (6 left)], read by l2_bn and l2_conv
    assert torch.equal(fresh.l2_bn.weight, torch.cat([module.l2_bn.weight[:16], module.l2_bn.weight[17:23]]))
    keep = list(range(16)) + list(range(17, 23)) + list(range(24, 32))
    assert torch.equal(fresh.t_conv.weight, module.t_conv.weight[:, keep])
    with pytest.raises(archgraph.ArchgraphError):
        transfer_state(archgraph.apply(g, rules.AddFilters(node="stem", count=1)).plan, module.state_dict())
