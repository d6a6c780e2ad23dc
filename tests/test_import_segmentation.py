"""from_module on torchvision's segmentation models: their forward returns {"out": ...}; dilated convs, ASPP or
LR-ASPP heads (global pooling, bilinear upsampling to a size, concat or gating) and the final F.interpolate to the
input size import exactly; the graph's output is the dense [K, H, W] map."""
import torch

import archgraph
from archgraph.compat import import_torchvision
from archgraph.fx.builder import build
from archgraph.fx.weights import load_into
from archgraph.interop.equivalence import max_error, randomize_normalization

TOL = 1e-9


class Out(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def test_lraspp_mobilenet_v3_imports_exactly():
    tv = import_torchvision()
    torch.manual_seed(0)
    m = tv.models.get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=4,
                            aux_loss=False)
    m = randomize_normalization(m).double().eval()
    graph, weights = archgraph.from_module(m, input_shape=(3, 64, 64))
    (out,) = graph.outputs
    assert tuple(graph.shapes()[out]) == (4, 64, 64) and graph.nodes[out].op == "upsample"
    b = build(graph, dtype=torch.float64)
    load_into(b, weights)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    assert max_error(Out(m), b.eval(), x) <= TOL
