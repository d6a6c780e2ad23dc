"""from_module on hand-written attention (a fused or split qkv projection, heads as a reshaped view,
``F.scaled_dot_product_attention`` or softmax(q @ k^T * scale) @ v, heads merged back, an output projection: one
``attention`` node), timm's ViT and layer scales on tokens, checked against the originals in float64."""

import torch
from torch import nn

import archgraph
from archgraph.fx.builder import build
from archgraph.fx.weights import load_into
from archgraph.interop.equivalence import max_error

TOL = 1e-9


def built(graph, weights):
    b = build(graph, dtype=torch.float64)
    load_into(b, weights)
    return b.eval()


class LayerScaled(nn.Module):
    """timm's ``LayerScale``: ``x * gamma`` with a ``[D]`` parameter on tokens, and a number times tokens."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.gamma = nn.Parameter(torch.rand(8) + 0.5)

    def forward(self, x):
        return self.lin(x) * self.gamma * 0.5


def test_layer_scale_on_tokens_is_a_scale():
    torch.manual_seed(0)
    m = LayerScaled().double().eval()
    graph, weights = archgraph.from_module(m, input_shape=(5, 8))
    assert [n.op for n in graph.nodes.values()] == ["linear", "scale", "scale"]
    assert max_error(m, built(graph, weights), torch.randn(2, 5, 8, dtype=torch.float64)) <= TOL
