"""LSTM and GRU: nn.LSTM/nn.GRU parameter names, hand-written twins, exact widening (new units stay at zero) and exact
pruning of units whose output is always zero, with the optimizer's state carried (float64)."""
import pytest
import torch
from reference_models import LSTMLM
from torch import nn

import archgraph
from archgraph import rules
from archgraph.fx.apply_plan import transfer
from archgraph.fx.builder import build

SEED = "examples/seeds/lstm_lm.yaml"
TOL = 1e-9
VOCAB, T = 65, 32


def lm(op: str = "lstm", layers: int = 2):
    g = archgraph.load(SEED)
    if op == "lstm" and layers == 2:
        return g
    data = g.to_dict()
    data["nodes"]["lstm"].update(op=op, num_layers=layers, dropout=0.2 if layers > 1 else 0.0)
    return archgraph.Graph.model_validate(data)


def tokens(n=3, seed=1):
    return torch.randint(0, VOCAB, (n, T), generator=torch.Generator().manual_seed(seed))


def built(g, seed=0):
    return build(g, dtype=torch.float64, seed=seed).eval()


def test_a_hand_written_lstm_state_dict_loads_as_it_is():
    twin = LSTMLM().double().eval()
    m = built(lm())
    m.load_state_dict(twin.state_dict())   # strict
    assert {k for k in m.state_dict() if k.startswith("lstm.")} == {
        f"lstm.{w}_{s}_l{k}" for w in ("weight", "bias") for s in ("ih", "hh") for k in (0, 1)}
    x = tokens()
    with torch.no_grad():
        assert (m(x) - twin(x)).abs().max().item() <= TOL
    assert type(m.lstm) is nn.LSTM and m.lstm.batch_first


def test_a_gru_language_model_matches_nn_gru():
    g = lm("gru", 3)
    m = built(g, seed=2)
    ref = nn.GRU(32, 64, num_layers=3, batch_first=True, dropout=0.2).double().eval()
    ref.load_state_dict({k.partition(".")[2]: v for k, v in m.state_dict().items() if k.startswith("lstm.")})
    x = tokens()
    with torch.no_grad():
        want = m.head(ref(m.embed(x))[0])
        assert (m(x) - want).abs().max().item() <= TOL
    assert g.params == sum(p.numel() for p in m.parameters())


GROWTH = [rules.AddFilters(node="lstm", count=3), rules.AddFilters(node="lstm", count=2, init="zero"),
          rules.AddFilters(node="lstm", count=2, init="net2net", seed=3),
          rules.SplitFilters(node="lstm", indices=(0, 7), eps=0.0), rules.AddFilters(node="embed", count=4)]


@pytest.mark.parametrize("op, layers", [("lstm", 1), ("lstm", 2), ("gru", 1), ("gru", 2)])
@pytest.mark.parametrize("rule", GROWTH, ids=repr)
def test_growth_keeps_the_language_model(op, layers, rule):
    g = lm(op, layers)
    m = built(g)
    rw = archgraph.apply(g, rule)
    assert rw.exact
    m2 = built(rw.graph, seed=5)
    transfer(rw.plan, m, m2)
    x = tokens()
    with torch.no_grad():
        assert (m2(x) - m(x)).abs().max().item() <= TOL


@pytest.mark.parametrize("op", ["lstm", "gru"])
def test_new_units_state_and_output_stay_exactly_zero_in_every_layer(op):
    g = lm(op, 2)
    m = built(g)
    rw = archgraph.apply(g, rules.AddFilters(node="lstm", count=3))
    assert rw.graph.nodes["lstm"].hidden_size == 67
    m2 = built(rw.graph, seed=5)
    transfer(rw.plan, m, m2)
    with torch.no_grad():
        out, state = m2.lstm(m2.embed(tokens()))
    assert out[..., 64:].abs().max() == 0
    for s in (state if op == "lstm" else (state,)):   # h_n (and c_n) of every layer
        assert s.shape[0] == 2 and s[..., 64:].abs().max() == 0
    w = m2.lstm.weight_hh_l1
    gates = 4 if op == "lstm" else 3
    assert w.shape == (gates * 67, 67) and w[:, 64:].abs().max() == 0   # old units ignore the new ones
    assert m2.head.weight[:, 64:].abs().max() == 0                      # so does the reader
    blocks = w.view(gates, 67, 67)
    assert torch.equal(blocks[:, :64, :64], m.lstm.weight_hh_l1.view(gates, 64, 64))   # every gate block kept


def silence(model, op: str, units):
    """Zero the cell-candidate (LSTM) or new-gate (GRU) rows of ``units`` in every layer: from a zero state their
    state and output then stay exactly zero."""
    gates = 4 if op == "lstm" else 3
    rnn = model.lstm
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            p.view(gates, rnn.hidden_size, *p.shape[1:])[2, list(units)] = 0.0


@pytest.mark.parametrize("op, layers", [("lstm", 1), ("lstm", 2), ("gru", 2)])
def test_pruning_silent_units_is_exact(op, layers):
    g = lm(op, layers)
    m = built(g)
    units = (0, 5, 63)
    silence(m, op, units)
    rw = archgraph.apply(g, rules.PruneChannels(node="lstm", indices=units))
    assert rw.graph.nodes["lstm"].hidden_size == 61
    m2 = built(rw.graph)
    transfer(rw.plan, m, m2)
    gates = 4 if op == "lstm" else 3
    assert m2.lstm.weight_hh_l0.shape == (gates * 61, 61) and m2.head.weight.shape == (VOCAB, 61)
    x = tokens()
    with torch.no_grad():
        assert (m2(x) - m(x)).abs().max().item() <= TOL


def test_pruning_the_embedding_slices_the_lstm_input():
    g = lm()
    m = built(g)
    with torch.no_grad():
        m.lstm.weight_ih_l0[:, [1, 2]] = 0.0   # the LSTM ignores embedding channels 1 and 2
    rw = archgraph.apply(g, rules.PruneChannels(node="embed", indices=(1, 2)))
    m2 = built(rw.graph)
    transfer(rw.plan, m, m2)
    assert m2.lstm.weight_ih_l0.shape == (256, 30) and m2.lstm.weight_ih_l1.shape == (256, 64)
    x = tokens()
    with torch.no_grad():
        assert (m2(x) - m(x)).abs().max().item() <= TOL


def test_optimizer_state_follows_the_gate_blocks():
    g = lm()
    m = build(g, dtype=torch.float64).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    m(tokens()).square().mean().backward()
    opt.step()
    before = {k: opt.state[p]["exp_avg"].clone() for k, p in m.named_parameters()}
    _, m2 = archgraph.rewrite(g, m, rules.AddFilters(node="lstm", count=2), optimizer=opt)
    st = opt.state[m2.lstm.weight_hh_l0]["exp_avg"].view(4, 66, 66)
    assert torch.equal(st[:, :64, :64], before["lstm.weight_hh_l0"].view(4, 64, 64))
    assert st[:, 64:].abs().max() == 0 and st[:, :, 64:].abs().max() == 0
    assert opt.state[m2.lstm.bias_ih_l1]["exp_avg"].shape == (264,)
    opt.zero_grad()
    m2(tokens()).square().mean().backward()
    opt.step()   # the optimizer runs on the new parameters


def test_magnitude_pruning_of_the_language_model():
    g = lm()
    weights = build(g).state_dict()
    g2, w2 = archgraph.prune(g, weights, ratio=0.5)
    assert g2.nodes["lstm"].hidden_size == 32 and g2.nodes["embed"].embedding_dim == 16
    m2 = build(g2)
    m2.load_state_dict(w2)
    assert m2.eval()(tokens(1)).shape == (1, T, VOCAB)


@pytest.mark.parametrize("op", ["lstm", "gru"])
def test_magnitude_pruning_scores_every_gate_row_of_a_unit(op):
    """A unit whose rows (every gate block, every layer) are zero scores lowest, although its columns (weight_hh,
    the upper layer's weight_ih, the head) are as large as anyone's; and the pruned model computes exactly what the
    original did, as a unit with zero rows always outputs zero (an lstm's cell candidate and a gru's new gate stay
    0)."""
    g = lm(op)
    m = built(g, seed=4)
    gates = archgraph.ops.registry.OPS[op].gates(g.nodes["lstm"])
    units = torch.randperm(64, generator=torch.Generator().manual_seed(5))[:32].sort().values
    dims = torch.randperm(32, generator=torch.Generator().manual_seed(6))[:16].sort().values
    rows = (torch.arange(gates)[:, None] * 64 + units).flatten()
    with torch.no_grad():
        for name, p in m.lstm.named_parameters():
            p[rows] = 0.0
        m.embed.weight[:, dims] = 0.0
        m.lstm.weight_ih_l0[:, dims] *= 1e-2   # reads only zeros: any value is exact
    state = m.state_dict()
    edit = archgraph.prune(g, state, ratio=0.5)
    assert {r.node: r.indices for r in edit.rules} == {"lstm": tuple(units.tolist()), "embed": tuple(dims.tolist())}
    g2, w2 = edit
    assert g2.nodes["lstm"].hidden_size == 32 and g2.nodes["embed"].embedding_dim == 16
    m2 = built(g2)
    m2.load_state_dict(w2)
    x = tokens()
    with torch.no_grad():
        assert (m(x) - m2(x)).abs().max().item() <= 1e-12
