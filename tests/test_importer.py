"""from_module: torchvision models convert exactly; ops the format cannot express fail naming the op and fx node."""
import pytest
import torch
from torch import nn

import archgraph
from archgraph.errors import ConversionError, GraphError
from archgraph.fx.builder import build
from archgraph.fx.weights import load_into
from archgraph.interop.equivalence import max_error, randomize_normalization, torchvision_model
from archgraph.interop.importer import from_module
from archgraph.ops.registry import OPS, shuffle_permutation

ZOO = ["resnet18", "resnet50", "vgg11_bn", "alexnet", "mobilenet_v2", "mobilenet_v3_small", "densenet121",
       "efficientnet_b0", "regnet_x_400mf", "shufflenet_v2_x1_0", "squeezenet1_0", "googlenet", "convnext_tiny",
       "resnext50_32x4d", "mnasnet0_5", "wide_resnet50_2"]



def converted(module, shape):
    graph, weights = from_module(module, input_shape=shape)
    built = build(graph)
    load_into(built, weights)
    return graph, weights, built.eval()


@pytest.mark.parametrize("name", ZOO)
def test_torchvision_model_converts_exactly(name):
    model = randomize_normalization(torchvision_model(name, num_classes=10))
    graph, weights, built = converted(model, (3, 64, 64))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
    assert reference.std() > 1e-2  # outputs carry signal, so a wrong layer would show
    assert max_error(model, built, x) <= 1e-4
    # the graph counts exactly the parameters it holds, and they are keyed <node_id>.<param>
    held = sum(t.numel() for k, t in weights.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert graph.params == held
    assert all(k.partition(".")[0] in graph.nodes for k in weights)
    assert archgraph.loads(archgraph.dumps(graph)) == graph


def test_channels_last_layers_become_channels_first_ops():
    graph, _, _ = converted(randomize_normalization(torchvision_model("convnext_tiny", num_classes=10)),
                            (3, 32, 32))
    ops = {n.op for n in graph.nodes.values()}
    assert "linear" in ops and "scale" in ops and "stochastic_depth" in ops
    block = graph.nodes["features_1_0_block_3"]  # a Linear over channels-last positions
    assert block.op == "conv2d" and block.kernel_size == 1
    assert graph.nodes["features_0_1"].op == "layernorm"  # LayerNorm2d: permute + layer_norm + permute


def test_channel_shuffle_and_chunk_are_recognised():
    graph, _, _ = converted(torchvision_model("shufflenet_v2_x1_0", num_classes=10), (3, 64, 64))
    shuffles = [n for n in graph.nodes.values() if n.op == "channel_shuffle"]
    slices = [n for n in graph.nodes.values() if n.op == "slice"]
    assert len(shuffles) == 16 and all(n.groups == 2 for n in shuffles)
    assert len(slices) == 2 * 13  # both halves of every stride-1 block's chunk


def test_shuffle_permutation_is_the_channel_shuffle():
    from archgraph.fx.layers import channel_shuffle
    x = torch.arange(12.0).view(1, 12, 1, 1)
    for groups in (1, 2, 3, 4):
        out = channel_shuffle(x, groups).flatten().long().tolist()
        assert out == shuffle_permutation(12, groups)


class Spectral(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.fft.fft2(self.conv(x)).real


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(self.conv(x))


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_unsupported_function_names_the_op_and_fx_node():
    with pytest.raises(ConversionError) as err:
        from_module(Spectral(), input_shape=(3, 8, 8))
    assert err.value.fx_node == "fft_fft2"
    assert "fft2" in str(err.value) and "not supported" in str(err.value)


@pytest.mark.parametrize("module, words", [
    (Shared(), "called twice"),
    (nn.Sequential(nn.Conv2d(3, 4, 1), nn.Dropout2d()), "Dropout2d"),
    (nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1, padding=1, padding_mode="reflect")), "padding_mode"),
    (Lambda(lambda x: x + 1.0), "constant 1.0"),
    (Lambda(lambda x: x.permute(0, 1, 3, 2)), "permute"),
    (Lambda(lambda x: x.mean(1)), "mean over axes 1"),
    (Lambda(lambda x: x.view(x.size(0), 3, 64)), "reshape"),
    (Lambda(lambda x: torch.cat([x, x], dim=2)), "along axis 2"),
    (Lambda(lambda x: x[:, :, 1:]), "indexing"),
    (nn.Sequential(nn.LayerNorm(8)), "layer norm over the last axis"),
])
def test_inexpressible_ops_are_errors(module, words):
    with pytest.raises(ConversionError) as err:
        from_module(module, input_shape=(3, 8, 8))
    assert words in str(err.value)
    assert err.value.fx_node  # the fx node


def test_untraceable_module_is_a_clear_error():
    with pytest.raises(ConversionError, match="torch.fx cannot trace"):
        from_module(Lambda(lambda x: x if x.sum() > 0 else -x), input_shape=(3, 8, 8))


def test_per_channel_parameter_becomes_scale_and_other_shapes_fail():
    class LayerScale(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.gamma = nn.Parameter(torch.rand(shape))

        def forward(self, x):
            return self.gamma * self.conv(x)

    m = LayerScale((4, 1, 1))
    graph, weights, built = converted(m, (3, 5, 5))
    assert graph.nodes["gamma"].op == "scale"
    assert torch.equal(weights["gamma.weight"], m.gamma.detach().flatten())
    assert max_error(m, built, torch.randn(2, 3, 5, 5)) == 0
    with pytest.raises(ConversionError, match="not a per-channel scale"):
        from_module(LayerScale((1, 5, 1)), input_shape=(3, 5, 5))


def test_mlp_and_functional_ops_convert():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 8)
            self.b = nn.Linear(4, 3)
            self.norm = nn.LayerNorm(8)

        def forward(self, x):
            h = torch.relu(self.norm(self.a(x)))
            left, right = torch.split(h, [4, 4], dim=1)
            return self.b(torch.sigmoid(left) * right)

    m = Net().eval()
    graph, _, built = converted(m, (6,))
    assert [n.op for n in graph.nodes.values()].count("slice") == 2
    assert max_error(m, built, torch.randn(3, 6)) <= 1e-6


def test_slice_bounds_are_validated():
    base = "archgraph: 1\ninputs: {x: [4, 2, 2]}\nnodes:\n  s: {op: slice, in: x, %s}\noutputs: [s]\n"
    assert archgraph.loads(base % "start: 1, stop: 3").shapes()["s"] == (2, 2, 2)
    with pytest.raises(GraphError, match="greater than start"):
        archgraph.loads(base % "start: 2, stop: 2")
    with pytest.raises(GraphError, match="past the 4 input channels"):
        archgraph.loads(base % "start: 0, stop: 5")


def test_stochastic_depth_drops_rows_in_training_only():
    from archgraph.fx.layers import StochasticDepth
    sd = StochasticDepth(p=1.0)
    x = torch.randn(4, 3, 2, 2)
    assert torch.equal(sd.eval()(x), x)
    assert torch.count_nonzero(sd.train()(x)) == 0
    kept = StochasticDepth(p=0.5, mode="row").train()(torch.ones(1000, 1))
    assert set(kept.unique().tolist()) <= {0.0, 2.0} and 300 < int((kept > 0).sum()) < 700


def test_new_ops_have_roles():
    g = archgraph.loads("""
archgraph: 1
inputs: {x: [4, 3, 3]}
nodes:
  sh: {op: channel_shuffle, in: x, groups: 2}
  sl: {op: slice, in: sh, start: 0, stop: 2}
  sc: {op: scale, in: sl}
  hs: {op: hardsigmoid, in: sc}
  sd: {op: stochastic_depth, in: hs, p: 0.1}
outputs: [sd]
""")
    roles = {nid: OPS[n.op].channels(n, g.input_shapes(nid)) for nid, n in g.nodes.items()}
    assert roles == {"sh": "shuffle", "sl": "slice", "sc": "through", "hs": "through", "sd": "through"}
    assert g.params == 2


def test_the_module_keeps_its_mode_and_weights():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5)).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    graph, weights = from_module(m, input_shape=(3, 6, 6))
    assert m.training and all(sub.training for sub in m.modules())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # the trace ran in eval mode
    assert graph.nodes["n2"].op == "dropout" and weights["n0.weight"] is not m[0].weight
