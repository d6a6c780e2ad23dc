"""timm's GlobalResponseNorm (ConvNeXt-V2) imports as a ``grn`` node and its LearnableAffineBlock (HGNet-V2) as a
shared, biased ``scale``, exactly in float64, on small modules built from those timm layers (nothing downloaded);
the imported graphs prune; bad fields of the two ops are clear validation errors."""
import pytest
import torch
from pydantic import ValidationError
from torch import nn

import archgraph
from archgraph import rules
from archgraph.errors import ConversionError
from archgraph.fx import layers
from archgraph.fx.builder import build
from archgraph.fx.weights import load_into
from archgraph.interop.equivalence import randomize_normalization


@pytest.fixture(scope="module")
def timm():
    try:
        from archgraph.compat import import_timm
        return import_timm()
    except ImportError:
        pytest.skip("timm is not installed")


class ConvNeXtV2Block(nn.Module):
    """ConvNeXt-V2's block as timm writes it: depthwise conv; then either channels-last (``permute``, LayerNorm,
    Linear, GELU, GRN, Linear, ``permute``) or channels-first (``conv_mlp``: LayerNorm2d, 1x1 convs, GRN); the
    residual add."""

    def __init__(self, timm, dim: int, conv_mlp: bool):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.conv_mlp = conv_mlp
        if conv_mlp:
            self.norm = timm.layers.LayerNorm2d(dim)
        else:
            self.norm = nn.LayerNorm(dim)
        self.mlp = timm.layers.GlobalResponseNormMlp(dim, 4 * dim, use_conv=conv_mlp)

    def forward(self, x):
        shortcut = x
        x = self.conv_dw(x)
        if self.conv_mlp:
            x = self.mlp(self.norm(x))
        else:
            x = self.mlp(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return x + shortcut


class Stem(nn.Module):
    """HGNet-V2's ConvBNAct with ``use_lab``: conv, batchnorm, ReLU, LearnableAffineBlock; twice, then a head."""

    def __init__(self, timm):
        super().__init__()
        lab = timm.models.hgnet.LearnableAffineBlock
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), lab(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), lab(0.5, 0.2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x):
        return self.head(self.body(x))


def imported(model: nn.Module, shape=(8, 6, 6)):
    """(graph, weights, max abs error of the built graph against ``model`` in float64, input)."""
    model = randomize_normalization(model.double().eval())
    graph, weights = archgraph.from_module(model, input_shape=shape)
    built = build(graph, dtype=torch.float64)
    load_into(built, weights)
    x = torch.randn(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x)
        error = float((built.eval()(x) - want).abs().max() / want.abs().max())
    return graph, weights, error, x


def ops(graph) -> list[str]:
    """The ops of ``graph`` in order, its dropouts (timm's ``Dropout(0)`` in the MLP) left out."""
    return [n.op for n in graph.nodes.values() if n.op != "dropout"]


@pytest.mark.parametrize("conv_mlp", [True, False], ids=["channels_first", "channels_last"])
def test_convnextv2_block_imports_exactly(timm, conv_mlp):
    graph, weights, error, _ = imported(ConvNeXtV2Block(timm, 8, conv_mlp))
    assert error <= 1e-12
    assert ops(graph) == ["conv2d", "layernorm", "conv2d", "gelu", "grn", "conv2d", "add"]
    grn = next(nid for nid, n in graph.nodes.items() if n.op == "grn")
    assert graph.nodes[grn].eps == 1e-6 and graph.nodes[grn].fields() == {"eps": 1e-6}
    assert {k: list(v.shape) for k, v in weights.items() if k.startswith(grn)} == \
        {f"{grn}.weight": [32], f"{grn}.bias": [32]}


def test_grn_weights_show_in_the_output(timm):
    """The GRN node computes something: zeroing its weight and bias changes the output (the identity then)."""
    graph, weights, _, x = imported(ConvNeXtV2Block(timm, 8, True))
    grn = next(nid for nid, n in graph.nodes.items() if n.op == "grn")
    built = build(graph, dtype=torch.float64)
    load_into(built, weights)
    zeroed = {k: (torch.zeros_like(v) if k.startswith(grn + ".") else v) for k, v in weights.items()}
    other = build(graph, dtype=torch.float64)
    load_into(other, zeroed)
    with torch.no_grad():
        assert (built.eval()(x) - other.eval()(x)).abs().max() > 1e-3


def test_grn_that_does_not_match_its_layout_is_refused(timm):
    """A channels-last GRN on a channels-first tensor (it runs when W equals C) normalises the wrong axes."""
    model = nn.Sequential(nn.Conv2d(4, 4, 1), timm.layers.grn.GlobalResponseNorm(4, channels_last=True))
    with pytest.raises(ConversionError, match="spatial_dim \\[1, 2\\] and channel_dim -1 does not normalise"):
        archgraph.from_module(model, input_shape=(4, 4, 4))


def test_learnable_affine_block_imports_as_a_shared_biased_scale(timm):
    graph, weights, error, _ = imported(Stem(timm), shape=(3, 6, 6))
    assert error <= 1e-12
    scales = [nid for nid, n in graph.nodes.items() if n.op == "scale"]
    assert len(scales) == 2
    for nid in scales:
        assert graph.nodes[nid].shared and graph.nodes[nid].bias
        assert list(weights[f"{nid}.weight"].shape) == [1] and list(weights[f"{nid}.bias"].shape) == [1]
    assert graph.params == sum(p.numel() for p in Stem(timm).parameters())


def test_imported_graphs_prune_and_run(timm):
    for model, shape in ((ConvNeXtV2Block(timm, 8, True), (8, 6, 6)), (ConvNeXtV2Block(timm, 8, False), (8, 6, 6)),
                         (Stem(timm), (3, 6, 6))):
        graph, weights, _, x = imported(model, shape)
        g2, w2 = archgraph.prune(graph, weights, ratio=0.5, criterion="l2")
        assert g2.params < graph.params
        built = build(g2, dtype=torch.float64)
        load_into(built, w2)
        with torch.no_grad():
            assert built.eval()(x).shape == model(x).shape
        for nid, node in g2.nodes.items():
            if node.op == "grn":   # the MLP's hidden channels, halved
                assert list(w2[f"{nid}.weight"].shape) == [16] == list(w2[f"{nid}.bias"].shape)
            if node.op == "scale":   # one number whatever the width
                assert list(w2[f"{nid}.weight"].shape) == [1]


def test_pruning_under_a_grn_says_it_is_not_exact(timm):
    graph, _, _, _ = imported(ConvNeXtV2Block(timm, 8, True))
    fc1 = next(nid for nid, n in graph.nodes.items() if n.op == "conv2d" and n.out_channels == 32)
    rw = archgraph.apply(graph, rules.PruneChannels(node=fc1, indices=(0, 5)))
    assert not rw.plan.exact
    assert "(grn) normalises over these channels" in rw.plan.note and "L2 norms" in rw.plan.note


def test_scale_through_shared_one_is_exact_to_prune():
    """A shared scale has no channel axis: pruning the conv before it leaves its two numbers alone and the kept
    channels compute what they did."""
    g = archgraph.loads("archgraph: 1\ninputs: {x: [3, 5, 5]}\nnodes:\n"
                        "  c: {op: conv2d, in: x, out_channels: 6, kernel_size: 1}\n"
                        "  s: {op: scale, in: c, shared: true, bias: true, init: 0.5}\n"
                        "  d: {op: conv2d, in: s, out_channels: 2, kernel_size: 1}\noutputs: [d]\n")
    assert g.params == 3 * 6 + 6 + 2 + 6 * 2 + 2
    rw = archgraph.apply(g, rules.PruneChannels(node="c", indices=(1, 4)))
    assert rw.graph.params == g.params - 2 * (3 + 1 + 2)
    assert rw.graph.nodes["s"] == g.nodes["s"]


def test_own_modules_import_back():
    g = archgraph.loads("archgraph: 1\ninputs: {x: [4, 5, 5]}\nnodes:\n"
                        "  s: {op: scale, in: x, shared: true, bias: true}\n"
                        "  t: {op: scale, in: s, bias: true, init: 0.5}\n"
                        "  g: {op: grn, in: t, eps: 1.0e-4}\noutputs: [g]\n")
    built = randomize_normalization(build(g, dtype=torch.float64))
    back, w = archgraph.from_module(built, input_shape=(4, 5, 5))
    assert [(n.op, n.fields()) for n in back.nodes.values()] == [(n.op, n.fields()) for n in g.nodes.values()]
    again = build(back, dtype=torch.float64)
    load_into(again, w)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), built.eval()(x))


@pytest.mark.parametrize("node, field", [
    ("{op: grn, in: x, eps: -1.0}", "eps"),
    ("{op: grn, in: x, eps: 0}", "eps"),
    ("{op: grn, in: x, epsilon: 1.0e-6}", "epsilon"),
    ("{op: scale, in: x, shared: 'yes'}", "shared"),
    ("{op: scale, in: x, bias: 1}", "bias"),
])
def test_bad_fields_are_clear_errors(node, field):
    with pytest.raises(archgraph.errors.GraphError) as err:
        archgraph.loads(f"archgraph: 1\ninputs: {{x: [4, 5, 5]}}\nnodes:\n  n: {node}\noutputs: [n]\n")
    assert f"node 'n': field '{field}'" in str(err.value)


def test_bad_fields_are_pydantic_errors_on_one_field():
    from archgraph.ops.spec import GRN, Scale
    for kind, data, field, words in ((GRN, {"eps": -1.0}, "eps", "greater than 0"),
                                     (Scale, {"shared": "yes"}, "shared", "valid boolean"),
                                     (Scale, {"bias": 1}, "bias", "valid boolean")):
        with pytest.raises(ValidationError) as err:
            kind.model_validate({"in": "x", **data})
        (only,) = err.value.errors()
        assert only["loc"] == (field,) and words in only["msg"]


def test_grn_needs_an_image():
    with pytest.raises(archgraph.errors.ArchgraphError, match=r"needs a \[C, H, W\] input"):
        archgraph.loads("archgraph: 1\ninputs: {x: [6]}\nnodes:\n  n: {op: grn, in: x}\noutputs: [n]\n")


def test_grn_module_is_timm_s_formula(timm):
    """archgraph's GRN module and timm's, channels-first, on the same weights: the same numbers."""
    ours, theirs = layers.GRN(6, eps=1e-5).double(), timm.layers.grn.GlobalResponseNorm(6, 1e-5, False).double()
    randomize_normalization(ours)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
