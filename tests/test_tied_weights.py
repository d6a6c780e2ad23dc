"""Tied weights in the format: a linear's ``tied_to`` names the embedding whose table is its weight (a tied LM
head). The graph counts it once, the build shares one tensor, the weights file stores it once, pruning keeps the
tie, the standalone Python export keeps it, and Hugging Face checkpoints with ``tie_word_embeddings`` import tied."""
import importlib.util

import pytest
import torch

import archgraph
from archgraph.errors import ArchgraphError
from archgraph.fx.builder import build, class_name
from archgraph.fx.weights import load_into, load_weights, save_weights

GPT = """
archgraph: 1
name: tied_gpt
inputs: {tokens: {shape: [8], vocab: 40}}
nodes:
  wte: {op: embedding, in: tokens, embedding_dim: 16}
  wpe: {op: position_embedding, in: wte}
  ln1: {op: layernorm, in: wpe}
  attn: {op: attention, in: ln1, num_heads: 2, causal: true}
  res: {op: add, in: [wpe, attn]}
  fc: {op: linear, in: res, out_features: 32}
  act: {op: gelu, in: fc}
  proj: {op: linear, in: act, out_features: 16}
  res2: {op: add, in: [res, proj]}
  ln_f: {op: layernorm, in: res2}
  lm_head: {op: linear, in: ln_f, out_features: 40, bias: false, tied_to: wte}
outputs: [lm_head]
"""


def test_one_tensor_counted_once_stored_once(tmp_path):
    g = archgraph.loads(GPT)
    untied = archgraph.loads(GPT.replace(", tied_to: wte", ""))
    assert g.params == untied.params - 40 * 16
    m = build(g)
    assert m.lm_head.weight is m.wte.weight
    path = tmp_path / "w.safetensors"
    save_weights(m.state_dict(), path)
    from safetensors import safe_open
    with safe_open(str(path), "pt") as fh:
        assert "lm_head.weight" not in fh.keys() and "wte.weight" in fh.keys()
    state = load_weights(path)
    assert torch.equal(state["lm_head.weight"], state["wte.weight"])
    fresh = build(g, seed=1)
    load_into(fresh, {k: v for k, v in state.items() if k != "lm_head.weight"})   # the tied key may be left out
    assert fresh.lm_head.weight is fresh.wte.weight and torch.equal(fresh.wte.weight, m.wte.weight)
    bad = dict(state, **{"lm_head.weight": torch.zeros(40, 16)})
    with pytest.raises(ArchgraphError, match="tied to 'wte.weight'"):
        load_into(fresh, bad)


def test_tie_must_fit():
    with pytest.raises(Exception, match="tied_to 'ln_f' is a layernorm"):
        archgraph.loads(GPT.replace("tied_to: wte", "tied_to: ln_f"))
    with pytest.raises(Exception, match="must be \\[out_features, input width\\]"):
        archgraph.loads(GPT.replace("out_features: 40, bias: false", "out_features: 39, bias: false"))


def test_pruning_keeps_the_tie_and_python_export_loads(tmp_path):
    g = archgraph.loads(GPT)
    m = build(g, dtype=torch.float64).eval()
    pruned, pw = archgraph.prune(g, m.state_dict(), ratio=0.5)
    assert pruned.nodes["wte"].embedding_dim == 8 and pruned.nodes["lm_head"].tied_to == "wte"
    assert torch.equal(pw["lm_head.weight"], pw["wte.weight"])
    built = build(pruned, dtype=torch.float64).eval()
    load_into(built, pw)
    assert built.lm_head.weight is built.wte.weight
    save_weights(built.state_dict(), tmp_path / "p.safetensors")
    path = tmp_path / "m.py"
    archgraph.export_python(pruned, path)
    spec = importlib.util.spec_from_file_location("tied_model", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from safetensors.torch import load_file
    standalone = getattr(mod, class_name(pruned.name))().double().eval()
    standalone.load_state_dict(load_file(str(tmp_path / "p.safetensors")))   # the file holds the table once
    assert standalone.lm_head.weight is standalone.wte.weight
    x = torch.randint(0, 40, (2, 8))
    with torch.no_grad():
        assert float((standalone(x) - built(x)).abs().max()) <= 1e-12


def test_cli_prune_keeps_the_tie(tmp_path):
    from archgraph.cli import main
    (tmp_path / "g.yaml").write_text(GPT)
    m = build(archgraph.loads(GPT))
    save_weights(m.state_dict(), tmp_path / "w.safetensors")
    assert main(["prune", str(tmp_path / "g.yaml"), "--weights", str(tmp_path / "w.safetensors"), "--ratio", "0.25",
                 "-q", "-o", str(tmp_path / "p")]) == 0
    g = archgraph.load(tmp_path / "p" / "graph.yaml")
    state = load_weights(tmp_path / "p" / "weights.safetensors")
    assert g.nodes["lm_head"].tied_to == "wte" and state["lm_head.weight"] is state["wte.weight"]


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_hugging_face_tied_heads_import_tied(model_type):
    pytest.importorskip("transformers")
    from archgraph.interop import hf
    sizes = {"n_layer": 1} if model_type == "gpt2" else {"num_hidden_layers": 1}
    model = hf.build_model(model_type, lm_head=True, tie_word_embeddings=True, **sizes)
    graph, weights = hf.from_model(model, 64)       # GPT-2: its whole position table
    table = "wte" if model_type == "gpt2" else "embed_tokens"
    assert graph.nodes["lm_head"].tied_to == table
    assert weights["lm_head.weight"] is weights[f"{table}.weight"]
    assert graph.params == sum(p.numel() for p in model.parameters())     # HF counts the shared table once


def test_cloning_keeps_the_tie_and_halves_the_final_norm():
    """HyperCloning the stream of a tied model: the head is the widened table [E, E] (one tensor in the built
    module), ``ln_f``'s gain and bias are halved, and the logits are the old ones; a head reading the stream
    without a norm of its own keeps the tie too, but its logits double and the rewrite says so."""
    from archgraph import rules
    from archgraph.fx.apply_plan import transfer
    g = archgraph.loads(GPT)
    old = build(g, dtype=torch.float64).eval()
    with torch.no_grad():
        old.ln_f.weight.normal_()
        old.ln_f.bias.normal_()
    x = torch.randint(0, 40, (2, 8))
    rw = archgraph.apply(g, rules.AddFilters(node="wte", count=16, init="clone", eps=0.1))
    assert rw.exact and rw.graph.nodes["lm_head"].tied_to == "wte"
    new = build(rw.graph, dtype=torch.float64, seed=1).eval()
    transfer(rw.plan, old, new)
    assert new.lm_head.weight is new.wte.weight
    assert torch.equal(new.wte.weight, torch.cat([old.wte.weight] * 2, 1))
    assert torch.allclose(new.ln_f.bias, torch.cat([old.ln_f.bias] * 2) / 2)
    with torch.no_grad():
        assert float((new(x) - old(x)).abs().max()) <= 1e-12 * float(old(x).abs().max())
    bare = archgraph.loads(GPT.replace("lm_head: {op: linear, in: ln_f", "lm_head: {op: linear, in: res2")
                           .replace("  ln_f: {op: layernorm, in: res2}\n", ""))
    rw = archgraph.apply(bare, rules.AddFilters(node="wte", count=32, init="clone"))
    assert not rw.exact and "'lm_head' is tied to 'wte' and reads 'res2'" in rw.plan.note and "3 times" in \
        rw.plan.note
    old = build(bare, dtype=torch.float64).eval()
    new = build(rw.graph, dtype=torch.float64).eval()
    transfer(rw.plan, old, new)
    with torch.no_grad():
        assert torch.allclose(new(x), 3 * old(x))


def test_transfer_refuses_a_plan_that_breaks_a_tie():
    import dataclasses

    from archgraph import rules
    from archgraph.fx.apply_plan import transfer
    g = archgraph.loads(GPT)
    rw = archgraph.apply(g, rules.AddFilters(node="wte", count=16, init="clone"))
    head = rw.plan.tensors["lm_head.weight"]
    (axis, m), = head.axes
    broken = dataclasses.replace(rw.plan, tensors={**rw.plan.tensors, "lm_head.weight": dataclasses.replace(
        head, axes=((axis, dataclasses.replace(m, scale=(0.5,) * m.size)),))})
    with pytest.raises(ArchgraphError, match="tied to 'wte.weight'"):
        transfer(broken, build(g), build(rw.graph))


@pytest.mark.parametrize("init,exact", [("preserve", False), ("masked", True), ("net2net", False), ("zero", False)])
def test_every_widening_of_a_tied_stream_keeps_the_tie(init, exact):
    """Other inits: the tied head reads the new channels as the table holds them (one tensor), and a layer-norm
    stream widened other than by clone or masked says it changes the function."""
    from archgraph import rules
    from archgraph.fx.apply_plan import transfer, transfer_state
    g = archgraph.loads(GPT)
    old = build(g, dtype=torch.float64).eval()
    rw = archgraph.apply(g, rules.AddFilters(node="wte", count=8, init=init))
    assert rw.exact == exact, rw.plan.note
    new = build(rw.graph, dtype=torch.float64, seed=1).eval()
    transfer(rw.plan, old, new)
    state = transfer_state(rw.plan, old.state_dict(), build(rw.graph, dtype=torch.float64, seed=1).state_dict())
    assert torch.equal(state["lm_head.weight"], state["wte.weight"])
    assert torch.equal(state["wte.weight"], new.wte.weight) and new.lm_head.weight is new.wte.weight
    if exact:
        x = torch.randint(0, 40, (2, 8))
        with torch.no_grad():
            assert float((new(x) - old(x)).abs().max()) <= 1e-12 * float(old(x).abs().max())


def test_a_tied_head_that_cannot_divide_its_reads_says_so():
    from archgraph import rules
    g = archgraph.loads("""
archgraph: 1
name: bigram
inputs: {tokens: {shape: [8], vocab: 40}}
nodes:
  wte: {op: embedding, in: tokens, embedding_dim: 16}
  lm_head: {op: linear, in: wte, out_features: 40, bias: false, tied_to: wte}
outputs: [lm_head]
""")
    untied = archgraph.apply(g, rules.AddFilters(node="wte", count=4, init="net2net"))
    assert not untied.exact and "'lm_head' is tied to 'wte', so it reads the new channels" in untied.plan.note
    # preserve: the table's new columns start random and the head is the table, so it reads them
    assert not archgraph.apply(g, rules.AddFilters(node="wte", count=4)).exact
    assert archgraph.apply(g, rules.AddFilters(node="wte", count=4, init="zero")).exact   # zero columns in both
    with pytest.raises(ArchgraphError, match="'lm_head' reads them tied to the table"):
        archgraph.apply(g, rules.AddFilters(node="wte", count=4, init="gradmax"))
