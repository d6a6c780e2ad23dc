"""Properties of random valid graphs (tests/strategies.py): YAML round-trip, shape inference against a real forward
pass, and parameter / MAC counts against PyTorch's own."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.fx as fx
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import graph_data, graphs
from torch import nn

import archgraph
from archgraph.format.yaml_io import dumps, graph_from_data, loads
from archgraph.graph import content_hash
from archgraph.topology import topological_order

FAST = settings(max_examples=50, deadline=None)

names = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=24)


@FAST
@given(graph_data(), names)
def test_save_load_round_trip(data, name):
    g = graph_from_data({**data, "name": name})
    text = dumps(g)
    again = loads(text)
    assert again == g
    assert again.name == g.name
    assert dumps(again) == text  # stable: dumping the loaded graph gives the same bytes
    assert content_hash(again) == content_hash(g)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.yaml"
        archgraph.save(g, path)
        assert path.read_text(encoding="utf-8") == text
        assert archgraph.load(path) == g


def real_shapes(module: fx.GraphModule, *inputs) -> dict[str, tuple[int, ...]]:
    """Per-sample shape of every fx node's value in an actual forward pass (fx Interpreter)."""
    seen: dict[str, tuple[int, ...]] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                seen[n.name] = tuple(out.shape[1:])
            return out

    Recorder(module).run(*inputs)
    return seen


def sample_inputs(g, batch=3):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(batch, *shape, generator=gen) for shape in g.inputs.values()]


@FAST
@given(graphs())
def test_shape_inference_matches_a_forward_pass(g):
    module = archgraph.build(g).eval()
    seen = real_shapes(module, *sample_inputs(g))
    inferred = g.shapes()
    for nid in [*g.inputs, *g.nodes]:
        source = nid
        while source in g.nodes and g.nodes[source].op == "identity":  # identity makes no fx node
            source = g.nodes[source].inputs[0]
        assert seen[source] == inferred[nid], nid
    out = module(*sample_inputs(g))
    assert tuple(out.shape[1:]) == inferred[g.outputs[0]]


@FAST
@given(graphs())
def test_params_and_macs_match_pytorch(g):
    module = archgraph.build(g)
    assert g.params == sum(p.numel() for p in module.parameters())
    macs = 0

    def conv(m, inputs, out):
        nonlocal macs
        kh, kw = m.kernel_size
        macs += m.out_channels * (m.in_channels // m.groups) * kh * kw * out.shape[2] * out.shape[3]

    def linear(m, inputs, out):
        nonlocal macs
        macs += m.in_features * m.out_features

    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(conv)
        elif isinstance(m, nn.Linear):
            m.register_forward_hook(linear)
    with torch.no_grad():
        module.eval()(*sample_inputs(g, batch=1))
    assert g.macs == macs


@FAST
@given(graph_data(), st.randoms(use_true_random=False))
def test_node_order_in_the_file_does_not_matter(data, rnd):
    """Listing the nodes in any order gives the same network: same shapes, counts and (seeded per node id)
    the same initial weights, hence the same outputs."""
    g = graph_from_data(data)
    items = list(data["nodes"].items())
    rnd.shuffle(items)
    shuffled = graph_from_data({**data, "nodes": dict(items)})
    order = topological_order(shuffled)
    assert sorted(order) == sorted(g.nodes)
    position = {nid: i for i, nid in enumerate(order)}
    for nid, node in shuffled.nodes.items():
        assert all(position.get(i, -1) < position[nid] for i in node.inputs)
    assert topological_order(g) == list(g.nodes)  # a file already in order keeps its order
    assert shuffled.shapes() == g.shapes() and shuffled.params == g.params and shuffled.macs == g.macs
    x = sample_inputs(g)
    a, b = archgraph.build(g, seed=5).eval(), archgraph.build(shuffled, seed=5).eval()
    with torch.no_grad():
        assert torch.equal(a(*x), b(*x))
