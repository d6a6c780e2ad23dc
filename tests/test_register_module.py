"""register_module: a user teaches the importer a custom layer (Torch-Pruning's register_customized_layer)."""
import pytest
import torch
from torch import nn

from archgraph.errors import ConversionError
from archgraph.fx.builder import build
from archgraph.fx.weights import load_into
from archgraph.interop.importer import Converter, Val, from_module, handlers, register_module, table


@pytest.fixture
def clean_table(monkeypatch):
    """Users' registrations made in a test leave the table as it was."""
    monkeypatch.setattr(table, "_custom", {})
    handlers.cache_clear()
    yield
    handlers.cache_clear()


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


def _as_linear(c, n, m, x):
    return Val(c.emit(None, "linear", [x.node], {"weight": m.w}, out_features=m.w.shape[0], bias=False))


def test_a_registered_layer_imports_exactly(clean_table):
    net = Net().double().eval()
    with pytest.raises(ConversionError, match="einsum"):
        from_module(net, input_shape=(6,))
    register_module(EinsumLinear, _as_linear)
    graph, weights = from_module(net, input_shape=(6,))
    assert [n.op for n in graph.nodes.values()] == ["linear", "relu", "linear"]
    assert list(graph.nodes)[0] == "a"   # the module's own name, as for any layer kept whole
    built = build(graph, dtype=torch.float64)
    load_into(built, weights)
    x = torch.randn(4, 6, dtype=torch.float64)
    with torch.no_grad():
        assert float((built(x) - net(x)).abs().max()) <= 1e-12
    with pytest.raises(TypeError):
        register_module(int, lambda *a: None)
    with pytest.raises(TypeError):
        register_module(EinsumLinear, "not callable")


def test_a_registration_replaces_a_built_in_handler(clean_table):
    """The user's word wins over the importer's own handler for that class (here: nn.ReLU as a GELU)."""
    seen = []

    def as_gelu(c, n, m, x):
        seen.append(n.target)
        return Val(c.emit(None, "gelu", [x.node]))
    register_module(nn.ReLU, as_gelu)
    graph, _ = from_module(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), input_shape=(3,))
    assert [n.op for n in graph.nodes.values()] == ["linear", "gelu"] and seen == ["1"]


def test_the_registration_is_gone_after_the_test():
    assert EinsumLinear not in handlers().modules
    assert handlers().module_handler(nn.ReLU()).__module__.endswith("elementwise")


def test_a_converter_subclass_overrides_one_node_kind():
    """The converter is a torch.fx.Interpreter: one overridable method per node kind."""
    calls = []

    class Counting(Converter):
        def call_module(self, target, args, kwargs):
            calls.append(target)
            return super().call_module(target, args, kwargs)

    assert issubclass(Converter, torch.fx.Interpreter)
    from archgraph.interop.importer.trace import concrete_values, trace
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    example = torch.randn(2, 4)
    gm = trace(net, example)
    converter = Counting(gm, concrete_values(gm, example), (4,))
    converter.run()
    graph, weights = converter.finish("net")
    assert calls == ["0", "1"] and [n.op for n in graph.nodes.values()] == ["linear", "relu"]
    assert sorted(weights) == ["n0.bias", "n0.weight"]
