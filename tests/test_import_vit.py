"""from_module on vision transformers: torchvision's VisionTransformer (patch conv, reshape + permute to tokens, a
class token concatenated, a position table added, encoder blocks, the first token as the head's input) imports
exactly in float64, prunes and exports back to a working module."""
import importlib.util

import pytest
import torch
from torch import nn

import archgraph
from archgraph.compat import import_torchvision
from archgraph.errors import ConversionError
from archgraph.fx.builder import build, class_name
from archgraph.fx.weights import load_into
from archgraph.interop.equivalence import max_error, randomize_normalization

TOL = 1e-9


def small_vit():
    tv = import_torchvision()
    torch.manual_seed(0)
    m = tv.models.vision_transformer.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                         hidden_dim=16, mlp_dim=32, num_classes=10)
    with torch.no_grad():   # a fresh class token and head are zeros: give them values so that they show
        m.class_token.normal_()
        m.heads.head.weight.normal_()
    return randomize_normalization(m).double().eval()


def built(graph, weights):
    b = build(graph, dtype=torch.float64)
    load_into(b, weights)
    return b.eval()


def exported(graph, path) -> nn.Module:
    """The standalone module :func:`archgraph.export_python` writes for ``graph``, loaded from ``path``."""
    archgraph.export_python(graph, path)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, class_name(graph.name))().double().eval()


def test_torchvision_vit_imports_exactly():
    m = small_vit()
    graph, weights = archgraph.from_module(m, input_shape=(3, 32, 32))
    ops = [n.op for n in graph.nodes.values()]
    assert ops[:4] == ["conv2d", "to_tokens", "class_token", "position_embedding"]
    assert ops.count("attention") == 2 and ops[-2:] == ["token_pool", "linear"]
    assert graph.nodes[next(k for k, n in graph.nodes.items() if n.op == "token_pool")].mode == "first"
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    assert max_error(m, built(graph, weights), x) <= TOL
    assert archgraph.loads(archgraph.dumps(graph)) == graph


def test_torchvision_vit_prunes_and_exports(tmp_path):
    m = small_vit()
    graph, weights = archgraph.from_module(m, input_shape=(3, 32, 32))
    pruned, pw = archgraph.prune(graph, weights, ratio=0.5)
    assert archgraph.build(pruned) is not None and sum(t.numel() for t in pw.values()) < \
        sum(t.numel() for t in weights.values())
    model = exported(pruned, tmp_path / "vit.py")
    model.load_state_dict(pw)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert max_error(model, built(pruned, pw), x) <= TOL


class FlattenTokens(nn.Module):
    """The other spelling of a patch embedding (timm's): ``flatten(2).transpose(1, 2)``, then a class token."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Conv2d(3, 8, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.pos = nn.Parameter(torch.randn(1, 5, 8))
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        x = self.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls.expand(x.shape[0], -1, -1), x), dim=1) + self.pos
        return self.norm(x).mean(dim=1)


def test_flatten_transpose_and_class_token():
    m = FlattenTokens().double().eval()
    graph, weights = archgraph.from_module(m, input_shape=(3, 8, 8))
    assert [n.op for n in graph.nodes.values()] == ["conv2d", "to_tokens", "class_token", "position_embedding",
                                                    "layernorm", "token_pool"]
    assert max_error(m, built(graph, weights), torch.randn(2, 3, 8, 8, dtype=torch.float64)) <= TOL


class AppendedToken(FlattenTokens):
    def forward(self, x):
        x = self.proj(x).flatten(2).transpose(1, 2)
        return torch.cat((x, self.cls.expand(x.shape[0], -1, -1)), dim=1).mean(dim=1)


def test_a_token_appended_is_refused():
    with pytest.raises(ConversionError, match="cat"):
        archgraph.from_module(AppendedToken().eval(), input_shape=(3, 8, 8))
