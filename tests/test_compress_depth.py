"""Depth pruning (block influence), the prune and summary commands' calibration, depth, round-to and latency."""
from __future__ import annotations

import json

import pytest
import torch

import archgraph
from archgraph.cli import main
from archgraph.errors import ConfigError
from archgraph.fx.depth import block_influence, prune_depth, residual_blocks
from archgraph.fx.weights import load_weights, save_weights

RES_CNN = """
archgraph: 1
name: res-digits
inputs: {image: [1, 8, 8]}
nodes:
  stem:   {op: conv2d, in: image, out_channels: 8, kernel_size: 3, padding: 1}
  act0:   {op: relu, in: stem}
  b1_c1:  {op: conv2d, in: act0, out_channels: 8, kernel_size: 3, padding: 1}
  b1_bn:  {op: batchnorm2d, in: b1_c1}
  b1_sum: {op: add, in: [act0, b1_bn]}
  b1_out: {op: relu, in: b1_sum}
  b2_c1:  {op: conv2d, in: b1_out, out_channels: 8, kernel_size: 3, padding: 1}
  b2_bn:  {op: batchnorm2d, in: b2_c1}
  b2_sum: {op: add, in: [b1_out, b2_bn]}
  b2_out: {op: relu, in: b2_sum}
  b3_c1:  {op: conv2d, in: b2_out, out_channels: 8, kernel_size: 3, padding: 1}
  b3_bn:  {op: batchnorm2d, in: b3_c1}
  b3_sum: {op: add, in: [b3_bn, b2_out]}
  gap:    {op: global_avg_pool, in: b3_sum}
  fc:     {op: linear, in: gap, out_features: 10}
outputs: [fc]
"""


def _inert(state, bn):
    state = dict(state)
    state[f"{bn}.weight"] = torch.zeros_like(state[f"{bn}.weight"])
    state[f"{bn}.bias"] = torch.zeros_like(state[f"{bn}.bias"])
    return state


@pytest.mark.parametrize("inert", ["b1_bn", "b2_bn", "b3_bn"])
def test_depth_removes_the_block_made_inert_in_a_residual_cnn(inert):
    g = archgraph.loads(RES_CNN)
    assert [b.add for b in residual_blocks(g)] == ["b1_sum", "b2_sum", "b3_sum"]
    state = _inert(archgraph.build(g).state_dict(), inert)
    batches = [torch.randn(4, 1, 8, 8)]
    influence = block_influence(g, _module(g, state), batches)
    assert influence[inert] == pytest.approx(0.0, abs=1e-9) and min(influence.values()) == influence[inert]
    g2, w2, rules = prune_depth(g, state, 1, batches)
    assert [r.node for r in rules] == [inert]
    assert inert not in g2.nodes and inert.replace("bn", "c1") not in g2.nodes
    m2 = _module(g2, w2)
    # the removed block added zeros: the function is unchanged
    with torch.no_grad():
        assert torch.allclose(m2(batches[0]), _module(g, state)(batches[0]), atol=1e-5)


def test_depth_removes_an_inert_transformer_sublayer_and_refuses_too_many():
    g = archgraph.load("examples/seeds/gpt_tiny.yaml")
    state = archgraph.build(g).state_dict()
    state["b0_attn.o_proj.weight"] = torch.zeros_like(state["b0_attn.o_proj.weight"])
    state["b0_attn.o_proj.bias"] = torch.zeros_like(state["b0_attn.o_proj.bias"])
    batches = [torch.randint(0, 65, (2, 32))]
    g2, w2, rules = prune_depth(g, state, 1, batches)
    assert [r.node for r in rules] == ["b0_attn"] and "b0_ln1" not in g2.nodes
    g3, _, rules = prune_depth(g, state, 3, batches)
    assert len(rules) == 3 and len(residual_blocks(g3)) == 1
    with pytest.raises(ConfigError, match="4 removable residual block"):
        prune_depth(g, state, 5, batches)


def _module(g, state):
    m = archgraph.build(g)
    m.load_state_dict(state)
    return m.eval()


@pytest.fixture
def digits_run(tmp_path):
    (tmp_path / "seed.yaml").write_text(RES_CNN)
    run = tmp_path / "run.yaml"
    run.write_text("seed: seed.yaml\ndata: {name: digits, batch_size: 32}\nmethod: {name: dense}\n")
    g = archgraph.loads(RES_CNN)
    state = _inert(archgraph.build(g).state_dict(), "b2_bn")
    save_weights(state, tmp_path / "w.safetensors")
    return tmp_path


def test_prune_command_depth_criterion_round_to_and_latency(digits_run, capsys):
    d = digits_run
    args = ["prune", str(d / "seed.yaml"), "--weights", str(d / "w.safetensors"), "--depth", "1", "--ratio", "0.6",
            "--criterion", "activation", "--calib", str(d / "run.yaml"), "--calib-batches", "2", "--round-to", "4",
            "--report-latency", "-o", str(d / "out")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "collapse_layer node=b2_bn" in text and "prune_channels" in text
    assert "latency batch 1:" in text and "batch 32:" in text and "thread" in text
    g2 = archgraph.load(d / "out" / "graph.yaml")
    assert "b2_c1" not in g2.nodes
    widths = [n.out_channels for n in g2.nodes.values() if n.op == "conv2d"]
    assert widths and all(w % 4 == 0 and w < 8 for w in widths)
    w2 = load_weights(d / "out" / "weights.safetensors")
    _module(g2, w2)
    # taylor needs --calib; the error names it
    assert main(["prune", str(d / "seed.yaml"), "--weights", str(d / "w.safetensors"), "--ratio", "0.5",
                 "--criterion", "taylor", "-o", str(d / "out2")]) == 2
    assert "--calib" in capsys.readouterr().err


def test_summary_latency_json(capsys):
    assert main(["summary", "examples/seeds/tiny_cnn.yaml", "--latency", "--rounds", "2", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    lat = info["latency"]
    assert set(lat["batches"]) == {"1", "32"} and lat["threads"] >= 1 and lat["rounds"] == 2
    assert all(v["median_ms"] > 0 for v in lat["batches"].values()) and info["macs"] > 0
