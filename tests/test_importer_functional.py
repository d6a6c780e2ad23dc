"""from_module on functional forms (timm's norm-act layers, F.conv2d/F.linear with parameters, casts that change
nothing, scalar scales, weights computed from parameters) and on small timm models: exact in float64."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archgraph.errors import ConversionError
from archgraph.fx.builder import build
from archgraph.fx.weights import load_into
from archgraph.interop.equivalence import randomize_normalization
from archgraph.interop.importer import from_module


def error64(module, shape, graph, weights) -> float:
    """max |imported - original| on a batch of 2, both run in float64."""
    built = build(graph)
    load_into(built, weights)
    built = built.eval().double()
    x = torch.randn(2, *shape, dtype=torch.float64)
    with torch.no_grad():
        return float((built(x) - module.double()(x)).abs().max())


def ops(graph) -> list[str]:
    return [n.op for n in graph.nodes.values()]


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: an nn.BatchNorm2d subclass calling F.batch_norm, then an activation."""
    def __init__(self, c):
        super().__init__(c, momentum=0.05)
        self.act = nn.ReLU()

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         self.training, self.momentum, self.eps)
        return self.act(x)


def test_functional_batch_norm_is_a_batchnorm():
    m = randomize_normalization(nn.Sequential(nn.Conv2d(3, 4, 3), BatchNormAct(4))).eval()
    m[1].num_batches_tracked.fill_(7)
    graph, weights = from_module(m, input_shape=(3, 8, 8))
    assert ops(graph) == ["conv2d", "batchnorm2d", "relu"]
    bn = graph.nodes["n1"]
    assert bn.momentum == 0.05 and bn.eps == m[1].eps
    assert int(weights["n1.num_batches_tracked"]) == 7
    assert torch.equal(weights["n1.running_var"], m[1].running_var)
    assert error64(m, (3, 8, 8), graph, weights) == 0


class FunctionalLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 3, 3, 3))
        self.b = nn.Parameter(torch.randn(6))
        self.fc = nn.Parameter(torch.randn(5, 6))

    def forward(self, x):
        x = F.conv2d(x.contiguous().to(x.dtype), self.w, self.b, stride=2, padding=1)
        x = x.type_as(x) * 0.5 + 0
        x = x[:, :4, :, :] / 4
        x = torch.cat([x, x[:, 2:, ...]], dim=1)
        return F.linear(x.mean((2, 3)), self.fc)


def test_functional_conv_linear_casts_scalars_and_slices():
    m = FunctionalLayers().eval()
    graph, weights = from_module(m, input_shape=(3, 9, 9))
    assert ops(graph) == ["conv2d", "scale", "slice", "scale", "slice", "concat", "global_avg_pool", "linear"]
    conv = next(n for n in graph.nodes.values() if n.op == "conv2d")
    assert (conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == (6, 3, 2, 1)
    assert error64(m, (3, 9, 9), graph, weights) <= 1e-12


class StdConv(nn.Conv2d):
    """timm's StdConv2d: the weight is standardised in forward (a function of parameters only, folded)."""
    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True,
                         momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


def test_weights_computed_from_parameters_are_folded():
    m = nn.Sequential(StdConv(3, 4, 3)).eval()
    graph, weights = from_module(m, input_shape=(3, 6, 6))
    assert ops(graph) == ["conv2d"]
    w = weights["n0.weight"]
    assert w.shape == (4, 3, 3, 3) and abs(float(w.mean())) < 1e-5
    assert error64(m, (3, 6, 6), graph, weights) <= 1e-5   # the fold ran in float32


def test_casts_to_the_same_dtype_make_no_node():
    class Casts(nn.Module):
        def forward(self, x):
            return torch.relu(x.float().to(torch.float32).to(x.dtype).type(torch.float32))
    graph, _ = from_module(Casts(), input_shape=(3, 4, 4))
    assert ops(graph) == ["relu"]


@pytest.mark.parametrize("fn, words", [
    (lambda x: x.half(), "cast from torch.float32 to torch.float16"),
    (lambda x: x / x, "division by a non-zero number"),
])
def test_what_the_new_forms_cannot_express_is_an_error(fn, words):
    class Lambda(nn.Module):
        def forward(self, x):
            return fn(x)
    with pytest.raises(ConversionError, match=words):
        from_module(Lambda(), input_shape=(3, 4, 4))


@pytest.mark.parametrize("name", ["mobilenetv3_small_050", "efficientnet_b0", "convnext_atto", "resnet18d"])
def test_timm_model_imports_exactly(name):
    from archgraph.compat import import_timm
    from archgraph.interop.equivalence import timm_model
    try:
        import_timm()
    except ImportError:
        pytest.skip("timm is not installed")
    m = randomize_normalization(timm_model(name, num_classes=10))
    graph, weights = from_module(m, input_shape=(3, 32, 32))
    assert error64(m, (3, 32, 32), graph, weights) == 0


class PadThenConv(nn.Module):
    def __init__(self, pad, value=0.0):
        super().__init__()
        self.pad, self.value = pad, value
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2)

    def forward(self, x):
        return self.pool(self.conv(F.pad(x, self.pad, value=self.value)))


@pytest.mark.parametrize("pad, value, kept", [
    ((2, 2, 1, 1), 0.0, False),        # symmetric zero padding: the conv's padding grows to (2, 3)
    ((0, 1, 0, 1), 0.0, True),         # TF-'same' padding at stride 2 is asymmetric: a pad node
    ((1, 1, 1, 1), -float("inf"), True),
])
def test_padding_is_a_pad_node_or_folded_into_the_conv(pad, value, kept):
    m = PadThenConv(pad, value).eval()
    if value != 0:
        m.conv = nn.Identity()
    graph, weights = from_module(m, input_shape=(3, 7, 7))
    assert ("pad" in ops(graph)) == kept
    if not kept:
        assert tuple(graph.nodes["conv"].padding) == (2, 3)
    assert error64(m, (3, 7, 7), graph, weights) == 0


class Reflect(nn.Module):
    def forward(self, x):
        return F.pad(x, (1, 1, 1, 1), mode="reflect")


def test_padding_modules_and_their_limits():
    m = nn.Sequential(nn.ZeroPad2d((1, 0, 2, 0)), nn.ConstantPad2d(1, 0.5), nn.ReLU()).eval()
    graph, weights = from_module(m, input_shape=(3, 4, 4))
    assert ops(graph) == ["pad", "pad", "relu"] and graph.shapes()["n2"] == (3, 8, 7)
    assert error64(m, (3, 4, 4), graph, weights) == 0
    with pytest.raises(ConversionError, match="padding mode 'reflect'"):
        from_module(Reflect(), input_shape=(3, 4, 4))


def test_minus_infinity_padding_exports_to_python_and_onnx(tmp_path):
    import archgraph
    from archgraph.interop.export import export_onnx, python_source
    g = archgraph.loads("archgraph: 1\ninputs: {x: [3, 4, 4]}\nnodes:\n"
                        "  p: {op: pad, in: x, padding: [0, 1, 0, 1], value: -.inf}\n"
                        "  m: {op: maxpool2d, in: p, kernel_size: 2}\noutputs: [m]\n")
    namespace: dict = {}
    exec(compile(python_source(g), "pad", "exec"), namespace)
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(namespace["Graph"]()(x), build(g)(x))
    assert export_onnx(g, {}, tmp_path / "pad.onnx") == 0


class ShapeBranch(nn.Module):
    """Control flow on a shape (as timm's pad_same): torch.fx cannot trace it, torch.export can."""
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        if x.shape[-1] % 2 == 1:
            x = F.pad(x, (0, 1, 0, 1))
        y = torch.relu(self.bn(self.conv(x)))
        a, b = y.split([1, 3], dim=1)
        return torch.cat([a * 2.0, b[:, 1:]], dim=1).mean((2, 3))


def test_models_fx_cannot_trace_go_through_torch_export():
    m = randomize_normalization(ShapeBranch()).eval()
    with pytest.raises(Exception):
        torch.fx.symbolic_trace(m)
    graph, weights = from_module(m, input_shape=(3, 7, 7))
    assert sorted(ops(graph)) == sorted(["pad", "conv2d", "batchnorm2d", "relu", "slice", "scale", "slice", "slice",
                                         "concat", "global_avg_pool"])
    assert error64(m, (3, 7, 7), graph, weights) == 0


def test_optional_forward_arguments_are_bound_to_their_defaults():
    class Optional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x, mask=None, scale: float = 1.0):
            if mask is not None:
                x = x * mask
            return self.fc(x) * scale

    m = Optional().eval()
    graph, weights = from_module(m, input_shape=(4,))
    assert ops(graph) == ["linear"]
    assert error64(m, (4,), graph, weights) == 0


def test_cli_imports_a_timm_model(tmp_path, capsys):
    import archgraph
    from archgraph.cli import main
    from archgraph.compat import import_timm
    try:
        import_timm()
    except ImportError:
        pytest.skip("timm is not installed")
    out = tmp_path / "m"
    assert main(["import", "timm:mobilenetv3_small_050", "--input-shape", "3,32,32", "--num-classes", "5",
                 "-o", str(out)]) == 0
    graph = archgraph.load(out / "graph.yaml")
    assert graph.shapes()[graph.outputs[0]] == (5,)
    assert main(["import", "timm:mobilenetv3_smal_050", "-o", str(tmp_path / "typo")]) == 2
    assert "did you mean" in capsys.readouterr().err
