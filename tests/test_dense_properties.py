"""Hypothesis: random encoder-decoder graphs (transposed convs, upsampling, skip concats, dense outputs) and random
recurrent language models x random growth rules keep the outputs (float64); pruning silenced units is exact."""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_dense import readers_ignore

import archgraph
from archgraph import rules
from archgraph.channels import SOURCE, analyse
from archgraph.fx.builder import build
from archgraph.fx.materialise import materialise

TOL = 1e-9
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def encoder_decoder(draw) -> archgraph.Graph:
    nodes: dict = {}
    c, size = draw(st.integers(1, 3)), draw(st.sampled_from([4, 8]))
    cur, skips = "x", []
    for s in range(draw(st.integers(1, 2))):
        nodes[f"e{s}"] = {"op": "conv2d", "in": cur, "out_channels": draw(st.integers(1, 4)), "kernel_size": 3,
                          "padding": 1}
        cur = f"e{s}"
        if draw(st.booleans()):
            nodes[f"e{s}_bn"] = {"op": "batchnorm2d", "in": cur}
            nodes[f"e{s}_act"] = {"op": "relu", "in": f"e{s}_bn"}
            cur = f"e{s}_act"
        skips.append(cur)
        nodes[f"p{s}"] = {"op": "maxpool2d", "in": cur, "kernel_size": 2}
        cur = f"p{s}"
    for s in reversed(range(len(skips))):
        if draw(st.booleans()):
            nodes[f"u{s}"] = {"op": "conv_transpose2d", "in": cur, "out_channels": draw(st.integers(1, 4)),
                              "kernel_size": 2, "stride": 2, "bias": draw(st.booleans())}
        else:
            nodes[f"u{s}"] = {"op": "upsample", "in": cur, "scale_factor": 2,
                              **draw(st.sampled_from([{"mode": "nearest"},
                                                      {"mode": "bilinear", "align_corners": True},
                                                      {"mode": "bilinear", "align_corners": False}]))}
        nodes[f"cat{s}"] = {"op": "concat", "in": [f"u{s}", skips[s]]}
        nodes[f"d{s}"] = {"op": "conv2d", "in": f"cat{s}", "out_channels": draw(st.integers(1, 4)),
                          "kernel_size": 3, "padding": 1}
        cur = f"d{s}"
    nodes["head"] = {"op": "conv2d", "in": cur, "out_channels": 2, "kernel_size": 1}
    return archgraph.Graph.model_validate({"archgraph": 1, "inputs": {"x": [c, size, size]}, "nodes": nodes,
                                           "outputs": ["head"]})


@st.composite
def language_model(draw) -> archgraph.Graph:
    vocab = draw(st.integers(2, 9))
    nodes = {"emb": {"op": "embedding", "in": "tokens", "embedding_dim": draw(st.integers(1, 5))}}
    cur = "emb"
    for k in range(draw(st.integers(1, 2))):
        layers = draw(st.integers(1, 3))
        nodes[f"rnn{k}"] = {"op": draw(st.sampled_from(["lstm", "gru"])), "in": cur, "num_layers": layers,
                            "hidden_size": draw(st.integers(1, 5)), "bias": draw(st.booleans())}
        cur = f"rnn{k}"
    nodes["head"] = {"op": "linear", "in": cur, "out_features": vocab}
    return archgraph.Graph.model_validate({"archgraph": 1, "inputs": {"tokens": {"shape": [5], "vocab": vocab}},
                                           "nodes": nodes, "outputs": ["head"]})


def widenable(g) -> list[str]:
    ch = analyse(g)
    return [n for n, role in ch.roles.items() if role == SOURCE and not ch.space(n).frozen
            and not ch.space(n).irregular]


@st.composite
def growth(draw, g):
    node = draw(st.sampled_from(widenable(g)))
    kind = draw(st.sampled_from(["add", "split"] + (["insert"] if len(g.shapes()[node]) == 3 else [])))
    if kind == "add":
        return rules.AddFilters(node=node, count=draw(st.integers(1, 3)),
                                init=draw(st.sampled_from(["preserve", "zero", "net2net"])),
                                seed=draw(st.integers(0, 9)))
    if kind == "split":
        return rules.SplitFilters(node=node, indices=(0,), eps=0.0)
    return rules.InsertLayer(after=node)


def example(g, n=2):
    (shape,) = g.inputs.values()
    gen = torch.Generator().manual_seed(0)
    if getattr(shape, "vocab", None):
        return torch.randint(0, shape.vocab, (n, *shape), generator=gen)
    return torch.randn(n, *shape, generator=gen, dtype=torch.float64)


def same_function(rw, m, seed: int = 0):
    """The rewrite carried onto ``m`` (eval mode) computes what ``m`` computes, to TOL."""
    m2 = materialise(rw, m, seed=seed)
    x = example(rw.old)
    with torch.no_grad():
        assert (m2(x) - m(x)).abs().max().item() <= TOL


def keeps_function(g, rule):
    m = build(g, dtype=torch.float64, seed=1).eval()
    rw = archgraph.apply(g, rule)
    assert rw.exact
    same_function(rw, m, seed=2)


@SETTINGS
@given(st.data())
def test_growth_keeps_encoder_decoders(data):
    g = data.draw(encoder_decoder())
    keeps_function(g, data.draw(growth(g)))


@SETTINGS
@given(st.data())
def test_growth_keeps_recurrent_models(data):
    g = data.draw(language_model())
    keeps_function(g, data.draw(growth(g)))


def prune_check(g, node, indices, weights):
    m = build(g, dtype=torch.float64).eval()
    m.load_state_dict(weights)
    rw = archgraph.apply(g, rules.PruneChannels(node=node, indices=tuple(indices)))
    same_function(rw, m)


@SETTINGS
@given(st.data())
def test_pruning_ignored_channels_of_encoder_decoders_is_exact(data):
    g = data.draw(encoder_decoder())
    options = [n for n in widenable(g) if g.shapes()[n][0] > 1]
    if not options:
        return
    node = data.draw(st.sampled_from(options))
    width = g.shapes()[node][0]
    indices = data.draw(st.lists(st.integers(0, width - 1), min_size=1, max_size=width - 1, unique=True))
    ch = analyse(g)
    removed = {ch.cls(ch.slots[node].tokens[i]) for i in indices}
    prune_check(g, node, indices, readers_ignore(g, build(g, dtype=torch.float64).state_dict(), removed))


@SETTINGS
@given(st.data())
def test_pruning_silent_recurrent_units_is_exact(data):
    g = data.draw(language_model())
    options = [n for n, node in g.nodes.items() if node.op in ("lstm", "gru") and node.hidden_size > 1]
    if not options:
        return
    node = data.draw(st.sampled_from(options))
    n = g.nodes[node]
    units = data.draw(st.lists(st.integers(0, n.hidden_size - 1), min_size=1, max_size=n.hidden_size - 1,
                               unique=True))
    weights = build(g, dtype=torch.float64).state_dict()
    gates = 4 if n.op == "lstm" else 3
    for key, w in weights.items():   # the cell-candidate / new-gate rows of the units: they stay silent
        if key.startswith(f"{node}."):
            w.view(gates, n.hidden_size, *w.shape[1:])[2, units] = 0.0
    prune_check(g, node, units, weights)
