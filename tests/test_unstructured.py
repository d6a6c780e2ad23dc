"""Per-weight masks and the channels they empty (shared by Gumbel and Budget): emptied channels found to a fixed
point and gated, per-weight state carried through growth and pruning, and the small Adam matching torch's; the
methods' example run files (the modules' docstring examples run in test_doctests.py)."""
import json

import torch
import yaml
from conftest import ROOT
from mask_helpers import DIGITS

import archgraph
from archgraph import rules
from archgraph.train.config import load_config, load_seed
from archgraph.train.tensors import TensorAdam, follow_weights
from archgraph.train.unstructured import ChannelDeath, masked_keys


def ones(g):
    m = archgraph.build(g)
    return m, {k: torch.ones_like(m.get_parameter(k)) for k in masked_keys(g)}


def test_emptied_channels_cascade_to_a_fixed_point_and_are_gated():
    g = archgraph.load(DIGITS)
    m, hard = ones(g)
    hard["c1.weight"][0] = 0                      # channel 0 of c1 is made by no weight
    hard["c2.weight"][5] = 0
    hard["c2.weight"][5, 0] = 1                   # channel 5 of c2 reads only that channel
    hard["fc.weight"][:, 16 * 7:16 * 8] = 0       # nothing reads channel 7 of c2 (16 positions per channel)
    death = ChannelDeath(g)
    dead = death.dead(hard)
    assert dead["c1"].nonzero().flatten().tolist() == [0]
    assert dead["c2"].nonzero().flatten().tolist() == [5, 7]
    params = dict(m.named_parameters())
    gated = death.gate({k: params[k] * hard[k] for k in hard}, params, dead)
    assert gated["bn2.weight"][[5, 7]].abs().sum() == 0 and gated["bn2.bias"][[5, 7]].abs().sum() == 0
    assert gated["c2.weight"][7].abs().sum() == 0 and gated["c2.weight"][:, 0].abs().sum() == 0
    assert gated["fc.weight"][:, 16 * 5:16 * 6].abs().sum() == 0 and gated["bn1.weight"][0] == 0
    assert gated["bn2.weight"][[0, 1, 2, 3, 4, 6]].ne(0).all()
    assert [(r.node, r.indices) for r in death.rules(dead)] == [("c1", (0,)), ("c2", (5, 7))]
    hard["c1.weight"][:] = 0                      # a layer keeps one channel
    assert [(r.node, r.indices) for r in death.rules(death.dead(hard))][0] == ("c1", (1, 2, 3))


def test_per_weight_state_follows_growth_and_pruning():
    g = archgraph.load(DIGITS)
    state = {"c1.weight": torch.randn(4, 1, 3, 3), "c2.weight": torch.randn(8, 4, 3, 3)}
    grow = archgraph.apply(g, rules.AddFilters(node="c1", count=2))
    shapes = {"c1.weight": torch.Size([6, 1, 3, 3]), "c2.weight": torch.Size([8, 6, 3, 3]),
              "fc.weight": torch.Size([10, 128])}
    out = follow_weights(grow.plan, state, shapes, fill=3.0)
    assert torch.equal(out["c1.weight"][:4], state["c1.weight"]) and (out["c1.weight"][4:] == 3).all()
    assert torch.equal(out["c2.weight"][:, :4], state["c2.weight"]) and (out["c2.weight"][:, 4:] == 3).all()
    assert (out["fc.weight"] == 3).all()          # no state before: starts at the fill
    prune = archgraph.apply(g, rules.PruneChannels(node="c2", indices=[1, 6]))
    out = follow_weights(prune.plan, state, {"c2.weight": torch.Size([6, 4, 3, 3])})
    assert torch.equal(out["c2.weight"], state["c2.weight"][[0, 2, 3, 4, 5, 7]])


def test_tensor_adam_matches_torch_adam_and_round_trips():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 3, generator=gen).requires_grad_(True)
    b = a.detach().clone().requires_grad_(True)
    mine, ref = TensorAdam(0.1), torch.optim.Adam([b], lr=0.1)
    for _ in range(4):
        grad = torch.randn(5, 3, generator=gen)
        a.grad, b.grad = grad.clone(), grad.clone()
        mine.step({"a": a})
        ref.step()
        assert a.grad is None
    assert torch.allclose(a, b, atol=1e-6)
    back = TensorAdam(0.1)
    back.load_state_dict(mine.state_dict())
    assert back.steps == 4 and torch.equal(back.m["a"], mine.m["a"]) and torch.equal(back.v["a"], mine.v["a"])


def test_example_run_files_validate_and_their_seeds_load():
    import jsonschema
    schema = json.loads((ROOT / "schemas" / "run.schema.json").read_text())
    paths = sorted((ROOT / "examples").glob("*_gumbel*.yaml")) + sorted((ROOT / "examples").glob("*_budget*.yaml"))
    assert {p.name for p in paths} >= {"digits_gumbel.yaml", "digits_budget.yaml", "mnist_gumbel.yaml",
                                       "mnist_budget.yaml", "cifar10_budget_vgg19.yaml"}
    for path in paths:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
        cfg = load_config(path)
        seed = load_seed(cfg, path.parent, str(path))
        assert cfg.method.name in ("gumbel", "budget") and seed.params > 0
