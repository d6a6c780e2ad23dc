"""Hugging Face transformers (tiny configs, random weights, nothing downloaded): GPT-2, BERT, Llama, Qwen2, Mistral
and ViT import exactly in float64, their heads and MLP neurons prune, and they export back to working modules;
the attention op's rotary embedding equals Llama's attention."""
import importlib.util

import pytest
import torch

pytest.importorskip("transformers")

import archgraph  # noqa: E402
from archgraph import rules  # noqa: E402
from archgraph.errors import ConversionError  # noqa: E402
from archgraph.fx.apply_plan import transfer  # noqa: E402
from archgraph.fx.builder import build, class_name  # noqa: E402
from archgraph.fx.layers import Attention  # noqa: E402
from archgraph.fx.weights import load_into  # noqa: E402
from archgraph.interop import hf  # noqa: E402
from archgraph.interop.equivalence import randomize_normalization  # noqa: E402

TOL = 1e-9
T = 6
CASES = [("gpt2", False), ("bert", False), ("llama", False), ("vit", False), ("gpt2", True), ("llama", True),
         ("qwen2", False), ("mistral", True)]


def model(model_type, lm_head=False):
    m = hf.build_model(model_type, lm_head=lm_head, num_hidden_layers=1) if model_type != "gpt2" else \
        hf.build_model(model_type, lm_head=lm_head, n_layer=1)
    return randomize_normalization(m)   # HF starts norms at 1 and biases at 0: give them values that show


def built(graph, weights):
    b = build(graph, dtype=torch.float64)
    load_into(b, {k: v.double() for k, v in weights.items()})
    return b.eval()


def example(graph, n=2):
    (name, shape), = graph.inputs.items()
    gen = torch.Generator().manual_seed(3)
    if getattr(shape, "vocab", None):
        return torch.randint(0, shape.vocab, (n, *shape), generator=gen)
    return torch.randn(n, *shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("model_type,lm_head", CASES)
def test_imports_exactly(model_type, lm_head):
    m = model(model_type, lm_head)
    err, scale = hf.max_error(m, T)
    assert scale > 0.1 and err <= TOL
    graph, weights = hf.from_model(m, T)     # checks the same and raises above 1e-9
    ops = [n.op for n in graph.nodes.values()]
    assert ops.count("attention") == 1 and ops[-1] == ("linear" if lm_head else ops[-1])
    attn = next(n for n in graph.nodes.values() if n.op == "attention")
    llama_like = model_type in ("llama", "qwen2", "mistral")
    assert attn.causal == (model_type == "gpt2" or llama_like) and attn.rotary == llama_like
    if llama_like:
        assert attn.kv_heads == 2 and "mul" in ops and not attn.bias
        assert attn.qkv_bias == (True if model_type == "qwen2" else None)   # Qwen2: q/k/v biased, o_proj not
    assert archgraph.loads(archgraph.dumps(graph)) == graph


@pytest.mark.parametrize("model_type", ["gpt2", "bert", "llama", "qwen2", "vit"])
def test_prunes_heads_and_neurons_and_exports(model_type, tmp_path):
    graph, weights = hf.from_model(model(model_type), T, check=False)
    graph = archgraph.loads(archgraph.dumps(graph))
    attn = next(k for k, n in graph.nodes.items() if n.op == "attention")
    # prune_heads: exact when the removed heads' o_proj columns are zero (heads 2, 3: one kv group of Llama's)
    m = built(graph, weights)
    hd = graph.nodes[attn].head_dim or graph.shape(attn)[-1] // graph.nodes[attn].num_heads
    with torch.no_grad():
        getattr(m, attn).o_proj.weight[:, 2 * hd:] = 0
    rw = archgraph.apply(graph, rules.PruneHeads(node=attn, indices=(2, 3)))
    new = build(rw.graph, dtype=torch.float64).eval()
    transfer(rw.plan, m, new)
    x = example(graph)
    with torch.no_grad():
        assert all(float((a - b).abs().max()) <= TOL for a, b in zip(outputs(m(x)), outputs(new(x))))
    assert rw.graph.nodes[attn].num_heads == 2
    # MLP neurons and the residual stream: archgraph.prune, then the standalone export runs the pruned graph
    pruned, pw = archgraph.prune(rw.graph, {k: v.double() for k, v in new.state_dict().items()}, ratio=0.5)
    d = graph.shape(attn)[-1]
    mlp = next(k for k, n in graph.nodes.items() if n.op == "linear" and n.out_features > d)
    assert pruned.nodes[mlp].out_features == graph.nodes[mlp].out_features // 2
    path = tmp_path / "model.py"
    archgraph.export_python(pruned, path)
    spec = importlib.util.spec_from_file_location("exported", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    standalone = getattr(mod, class_name(pruned.name))().double().eval()
    standalone.load_state_dict(pw)
    with torch.no_grad():
        assert all(float((a - b).abs().max()) <= TOL for a, b in zip(outputs(standalone(x)),
                                                                     outputs(built(pruned, pw)(x))))


def outputs(y):
    """A graph's outputs as a list (BERT and ViT: the last hidden state and the pooler's output)."""
    return list(y) if isinstance(y, (tuple, list)) else [y]


@pytest.mark.parametrize("model_type", ["bert", "vit"])
def test_encoders_pooler_is_the_second_output(model_type):
    m = model(model_type)
    graph, weights = hf.from_model(m, T)     # both outputs checked in float64
    assert list(graph.outputs)[1] == "pooler_activation" and graph.nodes["pooler_activation"].op == "tanh"
    assert graph.nodes["pooler_first_token"].mode == "first"
    no_pooler = randomize_normalization(hf.import_transformers().AutoModel.from_config(m.config,
                                                                                      add_pooling_layer=False))
    assert list(hf.from_model(no_pooler.eval(), T)[0].outputs) == [list(graph.outputs)[0]]


def test_rotary_attention_equals_llamas():
    tr = hf.import_transformers()
    from transformers.models.llama import modeling_llama
    cfg = tr.AutoConfig.for_model("llama", hidden_size=24, num_attention_heads=6, num_key_value_heads=2,
                                  head_dim=8, rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    theirs = modeling_llama.LlamaAttention(cfg, layer_idx=0).double().eval()
    rope = modeling_llama.LlamaRotaryEmbedding(cfg).double()
    ours = Attention(24, 6, 8, 2, causal=True, bias=False, rotary=True, rope_theta=500.0).double().eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 7, 24, dtype=torch.float64)
    with torch.no_grad():
        y = theirs(x, position_embeddings=rope(x, torch.arange(7)[None]), attention_mask=None)[0]
        assert float((y - ours(x)).abs().max()) <= 1e-12 and float(y.abs().max()) > 0.1


def test_refusals():
    with pytest.raises(ConversionError, match="not supported"):
        hf.from_config("t5")
    tied = randomize_normalization(hf.build_model("gpt2", lm_head=True, tie_word_embeddings=True, n_layer=1))
    graph, weights = hf.from_model(tied, T)      # a tied head is read as a copy of the table
    assert torch.equal(weights["lm_head.weight"], weights["wte.weight"])
    with pytest.raises(ConversionError, match="seq_len"):
        hf.from_model(model("gpt2"), 1000)


def test_cli_import_hf(tmp_path, capsys):
    from archgraph.cli import main
    out = tmp_path / "gpt2"
    assert main(["import", "hf:gpt2", "--config", "n_layer=1", "--seq-len", "5", "--lm-head", "-o", str(out)]) == 0
    graph = archgraph.load(out / "graph.yaml")
    assert graph.inputs["input_ids"].vocab == 100 and graph.nodes["lm_head"].out_features == 100
    assert main(["import", "hf:t5", "-o", str(tmp_path / "t5")]) == 2
    assert "not supported" in capsys.readouterr().err and not (tmp_path / "t5").exists()
