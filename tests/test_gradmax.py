"""add_filters init=gradmax (Evci et al. 2022): the new units' fan-in is zero, their fan-out comes from the top
singular directions of the gradient on a batch, so the function is unchanged and the first gradient step reduces the
loss more than init=zero does."""
import pytest
import torch

import archgraph
from archgraph import rules
from archgraph.errors import RuleError
from archgraph.fx.gradmax import gradmax

MLP = """\
archgraph: 1
inputs: {x: [8]}
nodes:
  fc1: {op: linear, in: x, out_features: 4}
  act: {op: tanh, in: fc1}
  fc2: {op: linear, in: act, out_features: 3}
outputs: [fc2]
"""

CNN = """\
archgraph: 1
inputs: {x: [2, 6, 6]}
nodes:
  c1: {op: conv2d, in: x, out_channels: 3, kernel_size: 3, padding: 1}
  act: {op: gelu, in: c1}
  c2: {op: conv2d, in: act, out_channels: 4, kernel_size: 3, padding: 1}
  gap: {op: global_avg_pool, in: c2}
  fc: {op: linear, in: gap, out_features: 3}
outputs: [fc]
"""


def _batch(shape, n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def _grown(text, node, init, batch, count=2):
    g = archgraph.loads(text)
    m = archgraph.build(g, seed=1).double()
    g2, m2 = archgraph.rewrite(g, m, rules.AddFilters(node=node, count=count, init=init), batch=batch)
    return m, g2, m2


def _after_one_step(m, batch, lr=0.5):
    x, y = batch
    opt = torch.optim.SGD(m.parameters(), lr=lr)
    loss = torch.nn.functional.cross_entropy(m(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach()), float(torch.nn.functional.cross_entropy(m(x), y).detach())


@pytest.mark.parametrize("text,node,reader,shape", [(MLP, "fc1", "fc2", (8,)), (CNN, "c1", "c2", (2, 6, 6))])
def test_gradmax_keeps_the_function_and_its_first_step_beats_zero(text, node, reader, shape):
    batch = _batch(shape)
    m, _, zero = _grown(text, node, "zero", batch)
    _, _, grad = _grown(text, node, "gradmax", batch)
    x, _ = batch
    with torch.no_grad():
        assert torch.allclose(grad(x), m(x)) and torch.allclose(zero(x), m(x))
        new_in = getattr(grad, node).weight[-2:]
        new_out = getattr(grad, reader).weight[:, -2:]
        assert new_in.abs().sum() == 0 and new_out.abs().sum() > 0
    before_zero, after_zero = _after_one_step(zero, batch)
    before_grad, after_grad = _after_one_step(grad, batch)
    assert before_grad == pytest.approx(before_zero)
    assert before_grad - after_grad > before_zero - after_zero + 1e-4


def test_gradmax_beats_random_fan_outs_of_the_same_norm():
    """The chosen fan-out maximises the new incoming weights' gradient norm: no random direction of the same norm
    does better."""
    batch = _batch((8,))
    _, g2, m2 = _grown(MLP, "fc1", "gradmax", batch)
    x, y = batch

    def fan_in_gradient(module):
        module.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        return float(module.fc1.weight.grad[-2:].norm())

    best = fan_in_gradient(m2)
    chosen = m2.fc2.weight.detach()[:, -2:].clone()
    gen = torch.Generator().manual_seed(3)
    for _ in range(10):
        q = torch.linalg.qr(torch.randn(3, 2, generator=gen, dtype=torch.float64))[0]
        with torch.no_grad():
            m2.fc2.weight[:, -2:] = q * chosen.norm(dim=0)
        assert fan_in_gradient(m2) <= best + 1e-9


def test_gradmax_needs_a_batch_and_says_so(tmp_path):
    g = archgraph.loads(MLP)
    with pytest.raises(RuleError, match="batch"):
        archgraph.rewrite(g, archgraph.build(g), rules.AddFilters(node="fc1", count=1, init="gradmax"))
    from archgraph.cli import main
    path = tmp_path / "g.yaml"
    path.write_text(MLP)
    assert main(["apply", str(path), "add_filters", "node=fc1", "init=gradmax", "-o", str(tmp_path / "o")]) == 2


def test_gradmax_behind_a_relu_warns_and_leaves_the_fan_out_zero():
    g = archgraph.loads(MLP.replace("tanh", "relu"))
    m = archgraph.build(g).double()
    rw = archgraph.apply(g, rules.AddFilters(node="fc1", count=1, init="gradmax"))
    m2 = archgraph.build(rw.graph).double()
    archgraph.transfer(rw.plan, m, m2)
    # fc1's new row is zero: its unit's pre-activation is 0, where relu's slope is 0 in PyTorch
    with pytest.warns(UserWarning, match="no gradient"):
        assert gradmax(rw, m2, _batch((8,))) == 0.0
    assert m2.fc2.weight[:, -1].abs().sum() == 0


def test_network_rewrite_takes_the_batch_too():
    net = archgraph.Network(archgraph.loads(MLP))
    batch = _batch((8,))
    net.module.double()
    rw = net.rewrite(rules.AddFilters(node="fc1", count=2, init="gradmax"), batch=batch)
    assert rw.exact and float(net.module.fc2.weight.detach()[:, -2:].abs().sum()) > 0
