"""from_module on hand-written attention (a fused or split qkv projection, heads as a reshaped view,
``F.scaled_dot_product_attention`` or softmax(q @ k^T * scale) @ v, heads merged back, an output projection: one
``attention`` node), timm's ViT and layer scales on tokens, checked against the originals in float64."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import archgraph
from archgraph.compat import import_timm
from archgraph.errors import ConversionError
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


class CausalSelfAttention(nn.Module):
    """nanoGPT's attention: one ``c_attn`` projection split into q, k, v, heads as views, SDPA (``flash``) or the
    explicit softmax(q @ k^T / sqrt(hd)) with a causal buffer, the heads merged, ``c_proj``."""

    def __init__(self, n_embd=16, n_head=4, block_size=8, flash=True, bias=True):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_dropout, self.resid_dropout = nn.Dropout(0.1), nn.Dropout(0.1)
        self.n_head, self.n_embd, self.head_dim, self.flash = n_head, n_embd, n_embd // n_head, flash
        self.register_buffer("bias", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size,
                                                                                            block_size))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            att = self.attn_dropout(F.softmax(att, dim=-1))
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class Block(nn.Module):
    def __init__(self, flash=True, bias=True):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(16), nn.LayerNorm(16)
        self.attn = CausalSelfAttention(flash=flash, bias=bias)
        self.mlp = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


@pytest.mark.parametrize("flash", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_nanogpt_block_imports_exactly(flash, bias):
    torch.manual_seed(0)
    m = Block(flash, bias).double().eval()
    graph, weights = archgraph.from_module(m, input_shape=(8, 16))
    attn = graph.nodes["attn"]
    assert attn.op == "attention" and attn.causal and attn.num_heads == 4 and attn.bias == bias
    assert attn.dropout == (0.0 if flash else 0.1)
    assert [n.op for n in graph.nodes.values()].count("linear") == 2   # c_attn went into the attention node
    assert max_error(m, built(graph, weights), torch.randn(2, 8, 16, dtype=torch.float64)) <= TOL


def test_vit_tiny_from_timm_imports_exactly():
    timm = import_timm()
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2, num_classes=10,
                          init_values=0.5).double().eval()
    with torch.no_grad():
        m.cls_token.normal_()
        m.head.weight.normal_()
        for name, p in m.named_parameters():
            if name.endswith(("bias", "gamma")) or "norm" in name:
                p.add_(torch.rand_like(p))
    graph, weights = archgraph.from_module(m, input_shape=(3, 32, 32))
    ops = [n.op for n in graph.nodes.values()]
    assert ops.count("attention") == 2 and ops.count("scale") == 4 and graph.nodes["blocks_0_attn"].num_heads == 3
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert max_error(m, built(graph, weights), x) <= TOL
    pruned, _ = archgraph.prune(graph, weights, ratio=0.5)
    assert pruned.params < graph.params / 2


class QKNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv, self.proj, self.q_norm = nn.Linear(8, 24), nn.Linear(8, 8), nn.LayerNorm(4)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(self.q_norm(q), k, v)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


def test_qk_norms_are_refused_naming_the_heads():
    with pytest.raises(ConversionError, match="q_norm.*heads .* of the projection 'qkv'.*q/k norms"):
        archgraph.from_module(QKNorm().eval(), input_shape=(5, 8))


def test_unbiased_qkv_with_a_biased_projection_is_qkv_bias_false(tmp_path):
    """timm's ``qkv_bias=False`` (vit_medium_patch16_gap_256 and others): ``bias`` is the output projection's,
    ``qkv_bias: false`` the q/k/v projections'; the built module and its standalone export compute the same."""
    Attention = import_timm().layers.Attention
    torch.manual_seed(0)
    m = nn.Sequential(Attention(16, num_heads=4, qkv_bias=False, proj_bias=True)).double().eval()
    graph, weights = archgraph.from_module(m, input_shape=(6, 16))
    (node,) = [n for n in graph.nodes.values() if n.op == "attention"]
    assert (node.bias, node.qkv_bias) == (True, False) and not any(k.endswith("q_proj.bias") for k in weights)
    assert graph.params == sum(p.numel() for p in m.parameters())
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    assert max_error(m, built(graph, weights), x) <= TOL
    back, _ = archgraph.from_module(built(graph, weights), input_shape=(6, 16))
    assert [n for n in back.nodes.values() if n.op == "attention"] == [node]
    assert "qkv_bias=False" in archgraph.export_python(graph, tmp_path / "a.py")


class AllTokens(nn.Module):
    """timm's average pool after no prefix tokens: ``x[:, num_prefix_tokens:].mean(dim=1)`` with 0 of them."""

    def forward(self, x):
        return x[:, 0:].mean(dim=1)


def test_slicing_every_token_is_the_sequence():
    graph, _ = archgraph.from_module(AllTokens(), input_shape=(5, 8))
    assert [n.op for n in graph.nodes.values()] == ["token_pool"]


class GLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 16)

    def forward(self, x):
        a, b = self.lin(x).chunk(2, dim=-1)
        return a * b


def test_a_split_of_features_not_into_heads_is_refused():
    with pytest.raises(ConversionError, match="rows 0:8 of the linear 'lin'.*no graph op"):
        archgraph.from_module(GLU().eval(), input_shape=(5, 8))


class PrefixTokens(nn.Module):
    """A class token and two register tokens before the patches; the head reads the class token and the mean of the
    patches after them (timm's ``x[:, num_prefix_tokens:].mean(1)``), and the first register token (``x[:, 1]``)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Conv2d(3, 8, 4, stride=4)
        self.cls, self.reg = nn.Parameter(torch.randn(1, 1, 8)), nn.Parameter(torch.randn(1, 2, 8))

    def forward(self, x):
        x = self.proj(x).flatten(2).transpose(1, 2)
        n = x.shape[0]
        x = torch.cat([self.cls.expand(n, -1, -1), self.reg.expand(n, -1, -1), x], dim=1)
        return x[:, 0] + x[:, 3:].mean(dim=1) + x[:, 1]


def test_several_prefix_tokens_are_one_class_token_and_pools_skip_them():
    m = PrefixTokens().double().eval()
    graph, weights = archgraph.from_module(m, input_shape=(3, 8, 8))
    tokens = next(n for n in graph.nodes.values() if n.op == "class_token")
    assert tokens.tokens == 3
    assert sorted((n.mode, n.skip) for n in graph.nodes.values() if n.op == "token_pool") == \
        [("first", 0), ("first", 1), ("mean", 3)]
    assert max_error(m, built(graph, weights), torch.randn(2, 3, 8, 8, dtype=torch.float64)) <= TOL


def test_deit_distilled_from_timm_imports_exactly():
    torch.manual_seed(0)
    m = import_timm().create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32, depth=1,
                                   num_classes=10).double().eval()
    with torch.no_grad():
        for p in (m.cls_token, m.dist_token, m.head.weight, m.head_dist.weight):
            p.normal_()
    graph, weights = archgraph.from_module(m, input_shape=(3, 32, 32))
    assert next(n for n in graph.nodes.values() if n.op == "class_token").tokens == 2
    assert max_error(m, built(graph, weights), torch.randn(2, 3, 32, 32, dtype=torch.float64)) <= TOL
