"""Any sequence length: a graph built for T tokens runs on 1..T tokens (position tables) or on any number of
tokens (rotary or no positions); causal masks follow the length; the ONNX export has a dynamic sequence axis."""
import pytest
import torch

import archgraph
from archgraph.fx.builder import build

GPT = "examples/seeds/gpt_tiny.yaml"


def test_position_table_runs_shorter_and_refuses_longer():
    g = archgraph.load(GPT)
    m = build(g, dtype=torch.float64).eval()
    x = torch.randint(0, 65, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = m(x)
        for t in (1, 7, 31):   # causal: the first t positions see only themselves and earlier tokens
            assert float((m(x[:, :t]) - full[:, :t]).abs().max()) <= 1e-12
        with pytest.raises(ValueError, match="longer than the position table"):
            m(torch.randint(0, 65, (2, 33)))
    assert g.shape("lm_head") == (32, 65)      # summary and MACs keep the declared length
    assert g.macs == archgraph.load(GPT).macs


def test_rotary_runs_at_any_length():
    g = archgraph.loads("""
archgraph: 1
inputs: {ids: {shape: [8], vocab: 20}}
nodes:
  emb: {op: embedding, in: ids, embedding_dim: 16}
  att: {op: attention, in: emb, num_heads: 2, causal: true, rotary: true}
  out: {op: linear, in: att, out_features: 20}
outputs: [out]
""")
    m = build(g, dtype=torch.float64).eval()
    x = torch.randint(0, 20, (2, 24))
    with torch.no_grad():
        full = m(x)
        assert full.shape == (2, 24, 20)
        assert float((m(x[:, :5]) - full[:, :5]).abs().max()) <= 1e-12


def test_onnx_has_a_dynamic_sequence_axis(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    g = archgraph.load(GPT)
    m = build(g).eval()
    path = tmp_path / "gpt.onnx"
    assert archgraph.export_onnx(g, m.state_dict(), path) < 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randint(0, 65, (3, 32))
    with torch.no_grad():
        full = m(x)
    for t in (3, 32):
        y = session.run(None, {"tokens": x[:, :t].numpy()})[0]
        assert y.shape == (3, t, 65)
        assert float((torch.from_numpy(y) - full[:, :t]).abs().max()) <= 1e-4


def test_onnx_of_an_imported_rotary_model_runs_at_any_length(tmp_path):
    # Qwen3: rotary positions, q/k norms, grouped-query attention; no position table, so any length
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("transformers")
    from archgraph.fx.weights import load_into
    from archgraph.interop import hf
    g, w = hf.from_config("qwen3", seq_len=8, lm_head=True)
    path = tmp_path / "qwen3.onnx"
    archgraph.export_onnx(g, w, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    m = build(g)
    load_into(m, w)
    m.eval()
    x = torch.randint(0, 100, (2, 20))
    with torch.no_grad():
        full = m(x)
    for t in (3, 20):    # shorter and longer than the declared 8 tokens
        y = session.run(None, {"input_ids": x[:, :t].numpy()})[0]
        assert float((torch.from_numpy(y) - full[:, :t]).abs().max()) <= 1e-4 * max(1.0, float(full.abs().max()))
