"""Dense prediction: conv_transpose2d, upsample and [K, H, W] outputs; the U-Net seed against a hand-written twin,
and growth and pruning through transposed convs, upsampling and encoder-decoder skip concats (float64, exact)."""
import json

import pytest
import torch
from reference_models import UNetTiny  # the hand-written twin of the seed
from torch import nn

import archgraph
from archgraph import rules
from archgraph.channels import SOURCE, analyse
from archgraph.errors import ArchgraphError
from archgraph.fx.apply_plan import transfer
from archgraph.fx.builder import build
from archgraph.interop.equivalence import randomize_normalization
from archgraph.ops.registry import OPS

SEED = "examples/seeds/unet_tiny.yaml"
TOL = 1e-9


@pytest.fixture(scope="module")
def unet():
    g = archgraph.load(SEED)
    torch.manual_seed(0)
    twin = randomize_normalization(UNetTiny().double()).eval()
    return g, twin


def x_image(n=2):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def built_like(graph, twin):
    m = build(graph, dtype=torch.float64).eval()
    m.load_state_dict(twin.state_dict())   # strict: the twin's keys are <node_id>.<param>
    return m


def test_seed_is_dense_and_matches_its_twin(unet):
    g, twin = unet
    assert g.shapes()["head"] == (4, 32, 32)   # per-pixel class scores
    m = built_like(g, twin)
    x = x_image()
    with torch.no_grad():
        assert (m(x) - twin(x)).abs().max().item() <= TOL
    assert g.params == sum(p.numel() for p in twin.parameters())


def _rules(g):
    ch = analyse(g)
    shapes = g.shapes()
    out = []
    for nid, role in ch.roles.items():
        if role == SOURCE and not ch.space(nid).frozen:
            out += [rules.AddFilters(node=nid, count=3), rules.AddFilters(node=nid, count=2, init="net2net", seed=1),
                    rules.SplitFilters(node=nid, indices=(0,), eps=0.0)]
    for v in (*g.inputs, *g.nodes):
        if len(shapes[v]) == 3:
            out.append(rules.InsertLayer(after=v))
    return out


@pytest.mark.parametrize("rule", _rules(archgraph.load(SEED)), ids=repr)
def test_growth_keeps_the_unet_function(unet, rule):
    g, twin = unet
    m = built_like(g, twin)
    rw = archgraph.apply(g, rule)
    assert rw.exact
    m2 = build(rw.graph, dtype=torch.float64).eval()
    transfer(rw.plan, m, m2)
    x = x_image()
    with torch.no_grad():
        assert (m2(x) - m(x)).abs().max().item() <= TOL


def test_add_filters_on_conv_transpose_widens_axis_1_and_its_skip_concat_reader(unet):
    g, twin = unet
    rw = archgraph.apply(g, rules.AddFilters(node="up2", count=3))
    assert rw.graph.nodes["up2"].out_channels == 19 and rw.graph.shapes()["cat2"] == (35, 16, 16)
    m2 = build(rw.graph, dtype=torch.float64)
    transfer(rw.plan, built_like(g, twin), m2)
    assert torch.equal(m2.up2.weight[:, :16], twin.up2.weight)        # [in, out, kh, kw]: new outputs on axis 1
    assert m2.d2_conv.weight[:, 16:19].abs().sum() == 0                # read with zero weights
    assert torch.equal(m2.d2_conv.weight[:, 19:], twin.d2_conv.weight[:, 16:])   # the skip moved along


def test_widening_the_bottleneck_grows_the_transposed_convs_input_axis_0(unet):
    g, twin = unet
    rw = archgraph.apply(g, rules.AddFilters(node="mid_conv", count=2))
    m2 = build(rw.graph, dtype=torch.float64)
    transfer(rw.plan, built_like(g, twin), m2)
    assert m2.up2.weight.shape == (34, 16, 2, 2) and m2.up2.weight[32:].abs().sum() == 0


def readers_ignore(graph, weights, removed):
    """``weights`` with every reader's input weights on the ``removed`` classes zeroed (no grouped conv2d readers)."""
    ch = analyse(graph)
    shapes = graph.shapes()
    out = {k: v.clone() for k, v in weights.items()}
    for nid, node in graph.nodes.items():
        slots = ch.slots[node.inputs[0]]
        positions, start = [], 0
        for token, block in zip(slots.tokens, slots.block_sizes()):
            if ch.cls(token) in removed:
                positions.extend(range(start, start + block))
            start += block
        layout = OPS[node.op].layout(node, [shapes[i] for i in node.inputs])
        for param, (_, in_axis) in layout.items():
            if positions and in_axis is not None:
                out[f"{nid}.{param}"].index_fill_(in_axis, torch.tensor(positions), 0.0)
    return out


def check_prune_exact(g, weights, node, indices, x):
    ch = analyse(g)
    removed = {ch.cls(ch.slots[node].tokens[i]) for i in indices}
    ignored = readers_ignore(g, weights, removed)
    m = build(g, dtype=torch.float64).eval()
    m.load_state_dict(ignored)
    rw = archgraph.apply(g, rules.PruneChannels(node=node, indices=tuple(indices)))
    m2 = build(rw.graph, dtype=torch.float64).eval()
    transfer(rw.plan, m, m2)
    with torch.no_grad():
        assert (m2(x) - m(x)).abs().max().item() <= TOL
    return rw


@pytest.mark.parametrize("node, indices", [("up2", (0, 5, 15)), ("mid_conv", (1, 2)), ("e2_conv", (0, 3, 9)),
                                           ("e1_conv", (7,)), ("d2_conv", (2, 4)), ("up1_conv", (0,))])
def test_prune_through_transposed_convs_upsampling_and_skips_is_exact(unet, node, indices):
    g, twin = unet
    rw = check_prune_exact(g, twin.state_dict(), node, indices, x_image())
    assert rw.graph.shapes()["head"] == (4, 32, 32)


GROUPED = """
archgraph: 1
inputs: {x: [3, 5, 5]}
nodes:
  a:  {op: conv2d, in: x, out_channels: 4, kernel_size: 3, padding: 1}
  t:  {op: conv_transpose2d, in: a, out_channels: 6, kernel_size: 3, stride: 2, padding: 1, output_padding: 1,
       groups: 2}
  dw: {op: conv_transpose2d, in: t, out_channels: 6, kernel_size: 2, groups: 6}
  r:  {op: relu, in: dw}
  up: {op: upsample, in: r, size: [13, 14], mode: bilinear, align_corners: true}
  o:  {op: conv2d, in: up, out_channels: 2, kernel_size: 1}
outputs: [o]
"""


@pytest.mark.parametrize("node, indices", [("a", (1, 2)), ("t", (0, 4)), ("t", (2, 4))])  # one per group
def test_grouped_and_depthwise_transposed_convs_prune_exactly(node, indices):
    g = archgraph.loads(GROUPED)
    assert analyse(g).roles["t"] == "grouped" and analyse(g).roles["dw"] == "through"
    w = build(g, dtype=torch.float64, seed=3).state_dict()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    rw = check_prune_exact(g, w, node, indices, x)
    t = rw.graph.nodes["t"]
    assert t.out_channels % t.groups == 0 and rw.graph.nodes["dw"].groups == rw.graph.nodes["dw"].out_channels


def test_optimizer_state_follows_the_transposed_conv(unet):
    g, twin = unet
    m = built_like(g, twin).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    m(x_image()).square().mean().backward()
    opt.step()
    before = {k: opt.state[p]["exp_avg"].clone() for k, p in m.named_parameters()}
    _, m2 = archgraph.rewrite(g, m, rules.AddFilters(node="up2", count=2), optimizer=opt)
    st = opt.state[m2.up2.weight]["exp_avg"]
    assert st.shape == (32, 18, 2, 2) and torch.equal(st[:, :16], before["up2.weight"])
    assert st[:, 16:].abs().sum() == 0
    reader = opt.state[m2.d2_conv.weight]["exp_avg"]
    assert torch.equal(reader[:, 18:], before["d2_conv.weight"][:, 16:]) and reader[:, 16:18].abs().sum() == 0


def test_magnitude_pruning_of_the_unet(unet):
    g, twin = unet
    g2, w2 = archgraph.prune(g, twin.state_dict(), ratio=0.5)
    assert g2.shapes()["head"] == (4, 32, 32)
    assert g2.nodes["up2"].out_channels == 8 and g2.params < g.params / 2
    m2 = build(g2, dtype=torch.float64).eval()
    m2.load_state_dict(w2)
    assert m2(x_image(1)).shape == (1, 4, 32, 32)


def test_import_of_transposed_convs_and_upsampling_is_exact():
    from archgraph.interop.importer import from_module

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 8, 3, padding=1)
            self.t = nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
            self.u = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.b = nn.UpsamplingBilinear2d(size=(10, 12))

        def forward(self, x):
            x = self.u(self.t(self.c(x)))
            return self.b(nn.functional.interpolate(x, scale_factor=(1.5, 2.0), mode="nearest"))

    net = Net().eval()
    g, w = from_module(net, input_shape=(3, 8, 8))
    assert [n.op for n in g.nodes.values()] == ["conv2d", "conv_transpose2d", "upsample", "upsample", "upsample"]
    m = build(g).eval()
    m.load_state_dict(w)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(m(x), net(x))


@pytest.mark.parametrize("fields, message", [
    ({"op": "upsample", "scale_factor": 2, "size": 4}, "exactly one"),
    ({"op": "upsample"}, "exactly one"),
    ({"op": "upsample", "scale_factor": 2, "align_corners": True}, "bilinear"),
    ({"op": "conv_transpose2d", "out_channels": 2, "kernel_size": 3, "stride": 2, "output_padding": 2},
     "output_padding"),
    ({"op": "conv_transpose2d", "out_channels": 3, "kernel_size": 3, "groups": 2}, "groups"),
])
def test_bad_fields_are_errors_naming_the_node(fields, message):
    text = json.dumps({"archgraph": 1, "inputs": {"x": [4, 5, 5]}, "nodes": {"n": {"in": "x", **fields}},
                       "outputs": ["n"]})
    with pytest.raises((ArchgraphError, ValueError)) as info:
        archgraph.loads(text)   # JSON is YAML
    assert message in str(info.value) and "n" in str(info.value)
