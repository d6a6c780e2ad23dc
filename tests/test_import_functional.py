"""Functional forms and small compositions import onto the ops their modules map to, exactly in float64: group norm
(module, F.group_norm, a timm-style subclass), leaky ReLU, a - b, the mean of a channels-last image, a channels-last
pad and a channels-last image reshaped to tokens; the layer norm of a torch.export graph; group norm pruning keeps
every group the same size."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archgraph
from archgraph.fx.builder import build
from archgraph.fx.weights import load_into


def _exact(model: nn.Module, shape, ops=None):
    torch.manual_seed(0)
    model = model.double().eval()
    for m in model.modules():   # random affine parameters, so that each shows in the output
        if isinstance(m, nn.GroupNorm) and m.affine:
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    g, w = archgraph.from_module(model, input_shape=shape)
    built = build(g)
    load_into(built, w)
    x = torch.randn(3, *shape, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(built.double().eval()(x), model(x))
    if ops is not None:
        assert [n.op for n in g.nodes.values()] == ops
    return g


class GroupNorm1(nn.GroupNorm):
    """timm's: a subclass whose forward calls F.group_norm."""

    def __init__(self, channels):
        super().__init__(1, channels)

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class Fn(nn.Module):
    def __init__(self, f, *layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.f = f

    def forward(self, x):
        return self.f(self, x)


def test_group_norm_module_functional_and_subclass():
    _exact(nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(4, 8, eps=1e-3)), (3, 5, 5), ["conv2d", "group_norm"])
    _exact(nn.Sequential(nn.Conv2d(3, 8, 1), GroupNorm1(8)), (3, 5, 5), ["conv2d", "group_norm"])
    _exact(Fn(lambda s, x: F.group_norm(s.layers[0](x), 2), nn.Conv2d(3, 4, 1)), (3, 4, 4), ["conv2d", "group_norm"])


def test_leaky_relu_module_and_function():
    g = _exact(nn.Sequential(nn.Conv2d(3, 4, 1), nn.LeakyReLU(0.1)), (3, 4, 4), ["conv2d", "leaky_relu"])
    assert g.nodes["n1"].negative_slope == 0.1
    g = _exact(Fn(lambda s, x: F.leaky_relu(x, 0.3)), (3, 4, 4), ["leaky_relu"])
    assert list(g.nodes.values())[0].negative_slope == 0.3


def test_difference_of_tensors_is_an_add_of_a_negated_one():
    # PoolFormer's token mixer: pool(x) - x
    _exact(Fn(lambda s, x: s.layers[0](x) - x, nn.AvgPool2d(3, 1, 1, count_include_pad=False)), (3, 5, 5),
           ["avgpool2d", "scale", "add"])
    _exact(Fn(lambda s, x: torch.sub(x, x.sigmoid(), alpha=2) - 0), (4,), ["sigmoid", "scale", "add"])


def test_channels_last_mean_pad_and_tokens():
    _exact(Fn(lambda s, x: s.layers[0](x.permute(0, 2, 3, 1)).mean((1, 2)), nn.LayerNorm(3)), (3, 4, 4),
           ["layernorm", "global_avg_pool"])
    _exact(Fn(lambda s, x: F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 2, 0, 1)).permute(0, 3, 1, 2)), (3, 4, 4),
           ["pad"])
    _exact(Fn(lambda s, x: x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, 3)), (3, 4, 4), ["to_tokens"])


def test_layer_norm_of_a_torch_export_graph():
    class Branchy(nn.Module):   # control flow on a shape: torch.fx cannot trace it, torch.export can
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(6)

        def forward(self, x):
            return self.norm(x) if x.shape[1] > 3 else x

    _exact(Branchy(), (5, 6), ["layernorm"])


def test_group_norm_pruning_keeps_groups_equal():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.GroupNorm(4, 16), nn.ReLU(), nn.Conv2d(16, 5, 1))
    g, w = archgraph.from_module(model, input_shape=(3, 8, 8))
    g2, w2 = archgraph.prune(g, w, ratio=0.5)
    conv = next(n for n in g2.nodes.values() if n.op == "conv2d")
    assert conv.out_channels % 4 == 0 and conv.out_channels < 16
    built = build(g2)
    load_into(built, w2)
    assert built(torch.randn(2, 3, 8, 8)).shape == (2, 5, 6, 6)


def test_group_norm_that_does_not_divide_is_refused():
    with pytest.raises(archgraph.errors.ArchgraphError, match="does not divide"):
        archgraph.loads("archgraph: 1\ninputs: {x: [4, 2, 2]}\nnodes: {n: {op: group_norm, in: x, num_groups: 3}}\n"
                        "outputs: [n]\n")
