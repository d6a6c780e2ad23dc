"""from_module on sequence models: float [T, D] and token [T] inputs, attention, encoder layers, LSTM/GRU, all
exact in float64; what the graph cannot express fails naming the module."""
import math

import pytest
import torch
from torch import nn

import archgraph
from archgraph.errors import ConversionError
from archgraph.fx.builder import build
from archgraph.fx.weights import load_into
from archgraph.interop.equivalence import max_error, randomize_normalization
from archgraph.interop.importer import from_module

T, D = 5, 8


def imported(model: nn.Module, shape=(T, D), vocab=None):
    """``(graph, max abs error)`` of the imported graph against ``model``, in float64 on a fresh input."""
    model = randomize_normalization(model).double().eval()
    graph, weights = from_module(model, input_shape=shape, vocab=vocab)
    built = build(graph)
    load_into(built, weights)
    built.eval()
    gen = torch.Generator().manual_seed(7)
    x = torch.randint(0, vocab, (3, *shape), generator=gen) if vocab else \
        torch.randn(3, *shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        assert model(x).abs().max() > 1e-2   # outputs carry signal
    assert archgraph.loads(archgraph.dumps(graph)) == graph
    return graph, max_error(model, built, x)


def ops(graph) -> list[str]:
    return [n.op for n in graph.nodes.values()]


class SelfAttention(nn.Module):
    def __init__(self, batch_first=True, bias=True, causal=False, need_weights=False):
        super().__init__()
        torch.manual_seed(0)
        self.attn = nn.MultiheadAttention(D, 2, bias=bias, batch_first=batch_first)
        self.batch_first, self.causal, self.need_weights = batch_first, causal, need_weights
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(T))

    def forward(self, x):
        if not self.batch_first:
            x = x.transpose(0, 1)
        mask = self.mask if self.causal else None
        if self.need_weights:
            y = self.attn(x, x, x, attn_mask=mask)[0]
        else:
            y, _ = self.attn(x, x, x, need_weights=False, attn_mask=mask)
        return y.transpose(0, 1) if not self.batch_first else y


@pytest.mark.parametrize("batch_first,bias,causal,need_weights", [
    (True, True, False, False), (False, True, True, False), (True, False, True, True), (False, False, False, True)])
def test_multihead_attention_is_one_attention_node(batch_first, bias, causal, need_weights):
    graph, err = imported(SelfAttention(batch_first, bias, causal, need_weights))
    assert err <= 1e-9
    assert ops(graph) == ["attention"]
    node = graph.nodes["attn"]
    assert (node.num_heads, node.bias, node.causal) == (2, bias, causal)


class Encoder(nn.Module):
    def __init__(self, layer=None, layers=0, final_norm=False, batch_first=True, causal=False, **kw):
        super().__init__()
        torch.manual_seed(0)
        self.batch_first, self.causal = batch_first, causal
        block = nn.TransformerEncoderLayer(D, 2, dim_feedforward=16, dropout=0.1, batch_first=batch_first, **kw)
        self.block = nn.TransformerEncoder(block, layers, norm=nn.LayerNorm(D) if final_norm else None,
                                           enable_nested_tensor=False) if layers else block

    def forward(self, x):
        if not self.batch_first:
            x = x.transpose(0, 1)
        if self.causal:
            mask = nn.Transformer.generate_square_subsequent_mask(x.size(1 if self.batch_first else 0))
            y = self.block(x, mask, is_causal=True) if isinstance(self.block, nn.TransformerEncoder) else \
                self.block(x, src_mask=mask, is_causal=True)
        else:
            y = self.block(x)
        return y.transpose(0, 1) if not self.batch_first else y


@pytest.mark.parametrize("norm_first,activation,batch_first", [
    (True, "relu", True), (False, "relu", False), (True, "gelu", False), (False, "gelu", True)])
def test_encoder_layer_converts_node_by_node(norm_first, activation, batch_first):
    graph, err = imported(Encoder(norm_first=norm_first, activation=activation, batch_first=batch_first))
    assert err <= 1e-9
    got = [op for op in ops(graph) if op != "dropout"]
    block = ["attention", "add", "linear", activation, "linear", "add"]
    if norm_first:
        assert got == ["layernorm", *block[:2], "layernorm", *block[2:]]
    else:
        assert got == [*block[:2], "layernorm", *block[2:], "layernorm"]
    assert {n.p for n in graph.nodes.values() if n.op == "dropout"} == {0.1}
    assert graph.nodes["block_self_attn"].dropout == 0.1


def test_encoder_with_final_norm_and_causal_mask():
    graph, err = imported(Encoder(layers=2, final_norm=True, causal=True, norm_first=True,
                                  activation=nn.SiLU()))
    assert err <= 1e-9
    attention = [n for n in graph.nodes.values() if n.op == "attention"]
    assert len(attention) == 2 and all(n.causal for n in attention)
    assert ops(graph)[-1] == "layernorm" and "block_norm" in graph.nodes
    assert ops(graph).count("silu") == 2


def test_an_encoder_layer_with_tanh_gelu_is_refused():
    # torch's eval fast path computes the exact GELU for any nn.GELU, the other path the tanh approximation
    assert "fast path" in refusal(Encoder(activation=nn.GELU(approximate="tanh")))


def test_a_bare_encoder_layer_is_the_model():
    torch.manual_seed(0)
    graph, err = imported(nn.TransformerEncoderLayer(D, 2, dim_feedforward=16, batch_first=True))
    assert err <= 1e-9
    assert graph.name == "transformerencoderlayer" and "layer_self_attn" in graph.nodes
    assert "returns a tuple" in refusal(nn.LSTM(D, 4, batch_first=True))


class TinyGPT(nn.Module):
    """nanoGPT in miniature: token and position embeddings, causal pre-norm blocks, a head."""

    def __init__(self, vocab=11, positions="parameter"):
        super().__init__()
        torch.manual_seed(0)
        self.wte = nn.Embedding(vocab, D)
        self.positions = positions
        if positions == "parameter":
            self.wpe = nn.Parameter(torch.randn(1, T + 3, D))
        else:
            self.wpe = nn.Embedding(T + 3, D)
        self.ln1, self.ln2, self.ln_f = nn.LayerNorm(D), nn.LayerNorm(D), nn.RMSNorm(D)
        self.attn = nn.MultiheadAttention(D, 2, batch_first=True)
        self.fc, self.proj = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)
        self.head = nn.Linear(D, vocab, bias=False)
        self.register_buffer("mask", torch.ones(T + 3, T + 3, dtype=torch.bool).triu(1))

    def forward(self, idx):
        t = idx.size(1)
        pos = self.wpe[:, :t] if self.positions == "parameter" else self.wpe(torch.arange(t))
        x = self.wte(idx) + pos
        h = self.ln1(x)
        mask = self.mask[:t, :t]
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        x = x + self.proj(nn.functional.gelu(self.fc(self.ln2(x))))
        return self.head(self.ln_f(x))


@pytest.mark.parametrize("positions", ["parameter", "embedding"])
def test_tiny_gpt_imports_exactly(positions):
    graph, err = imported(TinyGPT(positions=positions), (T,), vocab=11)
    assert err <= 1e-9
    assert archgraph.dumps(graph).count("vocab: 11") == 1
    assert ops(graph)[:2] == ["embedding", "position_embedding"]
    assert [n.causal for n in graph.nodes.values() if n.op == "attention"] == [True]
    assert "rmsnorm" in ops(graph)


class NanoEmbedding(nn.Module):
    """nanoGPT's way: positions from ``torch.arange(t, device=idx.device)``, ``F.layer_norm`` with
    ``self.weight.shape``."""

    def __init__(self, vocab=11):
        super().__init__()
        torch.manual_seed(0)
        self.wte, self.wpe = nn.Embedding(vocab, D), nn.Embedding(T, D)
        self.weight, self.bias = nn.Parameter(torch.rand(D) + 0.5), nn.Parameter(torch.randn(D))

    def forward(self, idx):
        pos = torch.arange(0, idx.size(1), dtype=torch.long, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        return nn.functional.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


def test_positions_from_arange_on_the_input_device():
    graph, err = imported(NanoEmbedding(), (T,), vocab=11)
    assert err <= 1e-9
    assert ops(graph) == ["embedding", "position_embedding", "layernorm"]
    assert "wpe" in graph.nodes


class Recurrent(nn.Module):
    def __init__(self, cls, batch_first, num_layers, bias=True):
        super().__init__()
        torch.manual_seed(0)
        self.batch_first = batch_first
        self.rnn = cls(D, 6, num_layers=num_layers, bias=bias, batch_first=batch_first,
                       dropout=0.2 if num_layers > 1 else 0.0)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        if not self.batch_first:
            x = x.permute(1, 0, 2)
        y, _ = self.rnn(x)
        if not self.batch_first:
            y = y.transpose(0, 1)
        return self.out(torch.relu(y))


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("batch_first,num_layers,bias", [(True, 1, True), (False, 2, False), (True, 3, True),
                                                         (False, 1, True)])
def test_recurrent_layers_import_exactly(cls, batch_first, num_layers, bias):
    graph, err = imported(Recurrent(cls, batch_first, num_layers, bias))
    assert err <= 1e-9
    node = graph.nodes["rnn"]
    assert ops(graph) == [cls.__name__.lower(), "relu", "linear"]
    assert (node.hidden_size, node.num_layers, node.bias) == (6, num_layers, bias)
    assert node.dropout == (0.2 if num_layers > 1 else 0.0)


class LSTMLM(nn.Module):
    def __init__(self, vocab=13):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, D)
        self.lstm = nn.LSTM(D, 12, num_layers=2, batch_first=True, dropout=0.1)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(12, vocab)

    def forward(self, idx):
        out, _ = self.lstm(self.embed(idx))
        return self.head(self.drop(out))


def test_lstm_language_model_imports_exactly():
    graph, err = imported(LSTMLM(), (T,), vocab=13)
    assert err <= 1e-9
    assert ops(graph) == ["embedding", "lstm", "dropout", "linear"]


class Pooled(nn.Module):
    def __init__(self, mode):
        super().__init__()
        torch.manual_seed(0)
        self.mode, self.norm, self.fc = mode, nn.LayerNorm(D), nn.Linear(D, 3)
        self.pos = nn.Parameter(torch.randn(T, D))

    def forward(self, x):
        x = nn.functional.silu(self.norm(x + self.pos)) * x
        return self.fc(x.mean(dim=1) if self.mode == "mean" else x[:, 0])


@pytest.mark.parametrize("mode", ["mean", "first"])
def test_token_pooling_and_elementwise_ops(mode):
    graph, err = imported(Pooled(mode))
    assert err <= 1e-9
    assert ops(graph) == ["position_embedding", "layernorm", "silu", "mul", "token_pool", "linear"]
    assert graph.nodes["mean" if mode == "mean" else "getitem"].mode == mode


def test_imported_sequence_graph_exports_to_standalone_python(tmp_path):
    import importlib.util

    from archgraph.fx.builder import class_name
    from archgraph.interop.export import export_python
    graph, weights = from_module(TinyGPT().double(), input_shape=(T,), vocab=11)
    export_python(graph, tmp_path / "gpt.py")
    spec = importlib.util.spec_from_file_location("exported_gpt", tmp_path / "gpt.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = getattr(mod, class_name(graph.name))().double()
    model.load_state_dict(weights)
    built = build(graph)
    load_into(built, weights)
    x = torch.randint(0, 11, (2, T))
    assert max_error(model.eval(), built.eval(), x) <= 1e-12


# ---- refusals ----------------------------------------------------------------------------------------------------

def refusal(model, shape=(T, D), vocab=None) -> str:
    with pytest.raises(ConversionError) as info:
        from_module(model, input_shape=shape, vocab=vocab)
    return str(info.value)


class Wrap(nn.Module):
    def __init__(self, inner, transpose=False):
        super().__init__()
        self.inner, self.transpose = inner, transpose

    def forward(self, x):
        return self.inner(x.transpose(0, 1) if self.transpose else x)[0]


def test_bidirectional_and_projected_lstms_are_refused_naming_the_module():
    text = refusal(Wrap(nn.LSTM(D, 4, bidirectional=True, batch_first=True)))
    assert "'inner'" in text and "bidirectional" in text
    assert "proj_size" in refusal(Wrap(nn.LSTM(D, 4, proj_size=2, batch_first=True)))


def test_a_time_first_module_given_a_batch_first_sequence_is_refused():
    assert "transpose(0, 1)" in refusal(Wrap(nn.GRU(D, 4)))
    assert "batch_first=True" in refusal(Wrap(nn.GRU(D, 4, batch_first=True), transpose=True))


class Attend(nn.Module):
    def __init__(self, mask=None, cross=False):
        super().__init__()
        self.attn = nn.MultiheadAttention(D, 2, batch_first=True)
        self.cross = cross
        if mask is not None:
            self.register_buffer("mask", mask)
        else:
            self.mask = None

    def forward(self, x):
        return self.attn(x, torch.relu(x) if self.cross else x, x, attn_mask=self.mask)[0]


def test_cross_attention_and_other_masks_are_refused():
    assert "self-attention" in refusal(Attend(cross=True))
    assert "not the causal mask" in refusal(Attend(mask=torch.zeros(T, T, dtype=torch.bool).tril()))
    band = torch.full((T, T), -math.inf).triu(1) + torch.full((T, T), -math.inf).tril(-2)
    assert "not the causal mask" in refusal(Attend(mask=band))


def test_embedding_refusals():
    assert "padding_idx" in refusal(nn.Sequential(nn.Embedding(9, D, padding_idx=0)), (T,), vocab=9)
    assert "vocab=9" in refusal(nn.Sequential(nn.Embedding(9, D)), (T,), vocab=7)
    assert "token ids" in refusal(nn.Sequential(nn.ReLU()), (T,), vocab=9)
    tied = TinyGPT(vocab=D)
    tied.head.weight = tied.wte.weight
    assert "shares a parameter" in refusal(tied, (T,), vocab=D)


def test_cli_import_checks_the_token_input_shape(capsys, tmp_path, monkeypatch):
    from archgraph.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["import", "torchvision:resnet18", "--input-shape", "3,4", "--vocab", "5", "-o", "x"]) == 2
    assert "--vocab" in capsys.readouterr().err
