"""register_module: a user teaches the importer a custom layer (Torch-Pruning's register_customized_layer)."""
import pytest
import torch
from torch import nn

from archgraph.errors import ConversionError
from archgraph.fx.builder import build
from archgraph.fx.weights import load_into
from archgraph.interop import importer
from archgraph.interop.importer import Val, from_module, register_module


class EinsumLinear(nn.Module):
    """A linear written with einsum, which the importer does not read."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_out, n_in))

    def forward(self, x):
        return torch.einsum("oi,bi->bo", self.w, x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = EinsumLinear(6, 5)
        self.act = nn.ReLU()
        self.b = nn.Linear(5, 3)

    def forward(self, x):
        return self.b(self.act(self.a(x)))


def test_a_registered_layer_imports_exactly(monkeypatch):
    monkeypatch.setattr(importer, "REGISTERED", {})
    net = Net().double().eval()
    with pytest.raises(ConversionError):
        from_module(net, input_shape=(6,))
    register_module(EinsumLinear, lambda c, n, m, x: Val(c.emit(None, "linear", [x.node], {"weight": m.w},
                                                                out_features=m.w.shape[0], bias=False)))
    graph, weights = from_module(net, input_shape=(6,))
    assert [n.op for n in graph.nodes.values()] == ["linear", "relu", "linear"]
    built = build(graph, dtype=torch.float64)
    load_into(built, weights)
    x = torch.randn(4, 6, dtype=torch.float64)
    with torch.no_grad():
        assert float((built(x) - net(x)).abs().max()) <= 1e-12
    with pytest.raises(TypeError):
        register_module(int, lambda *a: None)
