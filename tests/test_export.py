"""export_onnx (onnxruntime equals PyTorch) and export_python (a standalone module the weights load into)."""
import importlib.util
import subprocess
import sys

import pytest
import torch

import archgraph
from archgraph.cli import main
from archgraph.errors import ConversionError
from archgraph.fx.builder import build
from archgraph.fx.weights import load_weights, save_weights
from archgraph.interop.equivalence import max_error, randomize_normalization, torchvision_model
from archgraph.interop.export import export_onnx, export_python
from archgraph.interop.importer import from_module
from archgraph.ops.registry import OPS

EVERY_OP = """
archgraph: 1
name: every-op
inputs: {x: [4, 8, 8]}
nodes:
  c1:   {op: conv2d, in: x, out_channels: 8, kernel_size: 3, padding: 1}
  bn:   {op: batchnorm2d, in: c1}
  ln:   {op: layernorm, in: bn}
  r:    {op: relu, in: ln}
  sh:   {op: channel_shuffle, in: r, groups: 2}
  a:    {op: slice, in: sh, start: 0, stop: 4}
  b:    {op: slice, in: sh, start: 4, stop: 8}
  b1:   {op: conv2d, in: b, out_channels: 4, kernel_size: 3, padding: 1, groups: 4}
  b2:   {op: relu6, in: b1}
  b3:   {op: gelu, in: b2}
  b4:   {op: scale, in: b3, init: 0.5}
  b4a:  {op: scale, in: b4, bias: true, shared: true}
  b4g:  {op: grn, in: b4a}
  b5:   {op: stochastic_depth, in: b4g, p: 0.1}
  cat:  {op: concat, in: [a, b5]}
  se_p: {op: adaptive_avgpool2d, in: cat, output_size: 1}
  se_1: {op: conv2d, in: se_p, out_channels: 2, kernel_size: 1}
  se_a: {op: silu, in: se_1}
  se_2: {op: conv2d, in: se_a, out_channels: 8, kernel_size: 1}
  se_g: {op: hardsigmoid, in: se_2}
  se:   {op: mul, in: [cat, se_g]}
  g2:   {op: sigmoid, in: se}
  t:    {op: tanh, in: g2}
  hs:   {op: hardswish, in: t}
  gn:   {op: group_norm, in: hs, num_groups: 2}
  lr:   {op: leaky_relu, in: gn, negative_slope: 0.2}
  rs:   {op: radix_softmax, in: lr, radix: 2, cardinality: 2}
  rsg:  {op: mul, in: [rs, lr]}
  res:  {op: add, in: [rsg, r]}
  win:  {op: window_attention, in: res, num_heads: 2, window_size: 3, shift_size: 1}
  ss:   {op: subsample, in: win, offset: [1, 0]}
  gap3: {op: global_avg_pool, in: ss}
  mp:   {op: maxpool2d, in: win, kernel_size: 3, stride: 2, ceil_mode: true}
  pd:   {op: pad, in: mp, padding: [0, 1, 0, 1], value: -1.5}
  ap:   {op: avgpool2d, in: pd, kernel_size: 2}
  same: {op: identity, in: ap}
  gap:  {op: global_avg_pool, in: mp}
  fl:   {op: flatten, in: same}
  ct:   {op: conv_transpose2d, in: same, out_channels: 8, kernel_size: 3, stride: 2, padding: 1, output_padding: 1}
  up:   {op: upsample, in: ct, scale_factor: 0.5, mode: bilinear, align_corners: false}
  upn:  {op: upsample, in: up, size: 1}
  gap2: {op: global_avg_pool, in: upn}
  cat2: {op: concat, in: [fl, gap, gap2, gap3]}
  fc:   {op: linear, in: cat2, out_features: 6}
  bn1:  {op: batchnorm1d, in: fc}
  ln1:  {op: layernorm, in: bn1}
  drop: {op: dropout, in: ln1, p: 0.1}
  out:  {op: linear, in: drop, out_features: 3}
outputs: [out, gap]
"""


#: the sequence ops (a second graph: its input is token ids)
EVERY_SEQ_OP = """
archgraph: 1
name: every-seq-op
inputs: {tokens: {shape: [5], vocab: 11}, img: [3, 4, 4]}
nodes:
  emb:  {op: embedding, in: tokens, embedding_dim: 8, scale: 2.5}
  pos:  {op: position_embedding, in: emb}
  pat:  {op: conv2d, in: img, out_channels: 8, kernel_size: 2, stride: 2}
  tok:  {op: to_tokens, in: pat}
  cls:  {op: class_token, in: tok}
  mix:  {op: add, in: [pos, cls]}
  n1:   {op: rmsnorm, in: mix, eps: 1.0e-6}
  attn: {op: attention, in: n1, num_heads: 2, kv_heads: 1, causal: true, rotary: true}
  res:  {op: add, in: [mix, attn]}
  up:   {op: linear, in: res, out_features: 12}
  gate: {op: linear, in: res, out_features: 12}
  act:  {op: silu, in: gate}
  glu:  {op: mul, in: [act, up]}
  down: {op: linear, in: glu, out_features: 8}
  drop: {op: dropout, in: down, p: 0.1}
  res2: {op: add, in: [res, drop]}
  n3:   {op: rmsnorm, in: res2, eps: 1.0e-6, offset: 1.0}
  win:  {op: attention, in: n3, num_heads: 2, causal: true, rotary: true, window: 2, softcap: 3.0, scale: 0.4}
  res2b: {op: add, in: [res2, win]}
  moe:  {op: moe, in: res2b, num_experts: 3, top_k: 2, hidden: 6}
  res3: {op: add, in: [res2b, moe]}
  n2:   {op: layernorm, in: res3}
  g:    {op: gelu, in: n2}
  rec:  {op: lstm, in: g, hidden_size: 5, num_layers: 2}
  gru:  {op: gru, in: rec, hidden_size: 4}
  logits: {op: linear, in: gru, out_features: 11}
  head: {op: softcap, in: logits, cap: 2.0}
  pool: {op: token_pool, in: n2, mode: first}
  avg:  {op: token_pool, in: n2}
  both: {op: add, in: [pool, avg]}
outputs: [head, both]
"""


@pytest.fixture(scope="module")
def every_seq_op():
    graph = archgraph.loads(EVERY_SEQ_OP)
    weights = randomize_normalization(build(graph)).state_dict()
    return graph, weights


@pytest.fixture(scope="module")
def every_op():
    graph = archgraph.loads(EVERY_OP)
    weights = randomize_normalization(build(graph)).state_dict()
    return graph, weights


def load_source(path, graph):
    spec = importlib.util.spec_from_file_location("exported", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from archgraph.fx.builder import class_name
    return getattr(mod, class_name(graph.name))()


def test_every_op_graph_covers_the_registry(every_op, every_seq_op):
    # a new op must be added to EVERY_OP (or EVERY_SEQ_OP), so both exports are tested on it
    ops = {n.op for g, _ in (every_op, every_seq_op) for n in g.nodes.values()}
    assert ops == set(OPS)


def test_both_exports_of_every_sequence_op(every_seq_op, tmp_path):
    graph, weights = every_seq_op
    export_python(graph, tmp_path / "seq.py")
    model = load_source(tmp_path / "seq.py", graph)
    model.load_state_dict(weights)
    built = build(graph)
    built.load_state_dict(weights)
    x = (torch.randint(0, 11, (3, 5)), torch.randn(3, 3, 4, 4))
    with torch.no_grad():
        for got, want in zip(model.eval()(*x), built.eval()(*x)):
            assert torch.equal(got, want)
    assert export_onnx(graph, weights, tmp_path / "seq.onnx") <= 1e-4


def test_python_export_of_every_op(every_op, tmp_path):
    graph, weights = every_op
    source = export_python(graph, tmp_path / "net.py")
    assert "archgraph" not in source.replace(f"graph {graph.name!r}", "").replace("generated by archgraph", "")
    model = load_source(tmp_path / "net.py", graph)
    model.load_state_dict(weights)  # strict: keys are <node_id>.<param>
    model.eval()
    built = build(graph)
    built.load_state_dict(weights)
    built.eval()
    x = torch.randn(3, 4, 8, 8)
    with torch.no_grad():
        for got, want in zip(model(x), built(x)):
            assert torch.equal(got, want)


def test_onnx_export_of_every_op(every_op, tmp_path):
    import onnx
    graph, weights = every_op
    error = export_onnx(graph, weights, tmp_path / "net.onnx")
    assert error is not None and error <= 1e-4
    proto = onnx.load(str(tmp_path / "net.onnx"))
    onnx.checker.check_model(proto)
    assert [o.name for o in proto.graph.output] == ["out", "gap"]


@pytest.mark.parametrize("name, size", [("resnet18", 64), ("mobilenet_v3_small", 64), ("shufflenet_v2_x1_0", 64),
                                        ("efficientnet_b0", 64), ("convnext_tiny", 32)])
def test_onnx_export_matches_the_original_model(name, size, tmp_path):
    import onnxruntime as ort
    model = randomize_normalization(torchvision_model(name, num_classes=10))
    graph, weights = from_module(model, input_shape=(3, size, size))
    assert export_onnx(graph, weights, tmp_path / "m.onnx") <= 1e-4
    x = torch.randn(2, 3, size, size)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        want = model(x)
    assert want.std() > 1e-2
    assert float((torch.from_numpy(got) - want).abs().max()) <= 1e-4


def test_python_export_round_trip_through_files(tmp_path):
    model = randomize_normalization(torchvision_model("convnext_tiny", num_classes=10))
    graph, weights = from_module(model, input_shape=(3, 32, 32))
    save_weights(weights, tmp_path / "w.safetensors")
    export_python(graph, tmp_path / "convnext.py")
    exported = load_source(tmp_path / "convnext.py", graph)
    exported.load_state_dict(load_weights(tmp_path / "w.safetensors"))
    assert max_error(model, exported.eval(), torch.randn(2, 3, 32, 32)) <= 1e-4


def test_python_export_runs_without_archgraph(every_op, tmp_path):
    graph, weights = every_op
    export_python(graph, tmp_path / "net.py")
    save_weights(weights, tmp_path / "w.safetensors")
    script = ("import sys; sys.modules['archgraph'] = None\n"  # any import of archgraph fails
              "import torch, safetensors.torch as st, net\n"
              "m = net.EveryOp(); m.load_state_dict(st.load_file('w.safetensors')); m.eval()\n"
              "print(m(torch.randn(2, 4, 8, 8))[0].shape)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([2, 3])" in out.stdout


def test_node_ids_that_clash_with_python_names_still_export(tmp_path):
    graph = archgraph.loads("""
archgraph: 1
inputs: {x: [4]}
nodes:
  channel_slice: {op: linear, in: x, out_features: 3}
  F:        {op: batchnorm1d, in: channel_slice}
  nn:       {op: relu, in: F}
  nn_1:     {op: sigmoid, in: nn}
outputs: [nn_1]
""")
    export_python(graph, tmp_path / "odd.py")
    model = load_source(tmp_path / "odd.py", graph)
    built = build(graph).eval()
    model.load_state_dict(built.state_dict())
    assert max_error(built, model.eval(), torch.randn(2, 4)) == 0
    # ids that would shadow module attributes or the generated code's names never reach the exporter
    for bad in ("training", "torch"):
        with pytest.raises(archgraph.GraphError, match="reserved"):
            archgraph.loads(f"archgraph: 1\ninputs: {{x: [4]}}\nnodes:\n  {bad}: {{op: linear, in: x, out_features: 2}}"
                            f"\noutputs: [{bad}]\n")


def test_cli_import_then_export(tmp_path, capsys):
    out = tmp_path / "sq"
    assert main(["import", "torchvision:squeezenet1_0", "--input-shape", "3,64,64", "--num-classes", "7",
                 "-o", str(out)]) == 0
    graph = archgraph.load(out / "graph.yaml")
    assert graph.shapes()[graph.outputs[0]] == (7,)
    assert main(["export", str(out / "graph.yaml"), "--weights", str(out / "weights.safetensors"),
                 "--onnx", str(tmp_path / "sq.onnx"), "--python", str(tmp_path / "sq.py")]) == 0
    assert (tmp_path / "sq.onnx").stat().st_size > 0 and (tmp_path / "sq.py").exists()
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["import", "torchvision:resnet19", "-o", "x"], "did you mean"),
    (["import", "hub:resnet18", "-o", "x"], "SOURCE:NAME"),
    (["import", "torchvision:resnet18", "--input-shape", "3,a", "-o", "x"], "--input-shape"),
    (["export", "g.yaml"], "nothing to do"),
    (["export", "g.yaml", "--onnx", "x.onnx"], "needs --weights"),
])
def test_cli_errors_exit_2_with_a_message(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_export_rejects_weights_that_do_not_fit(every_op, tmp_path):
    graph, weights = every_op
    bad = dict(weights)
    bad["c1.weight"] = torch.zeros(1)
    with pytest.raises(archgraph.ArchgraphError, match="c1.weight"):
        export_onnx(graph, bad, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()
    assert issubclass(ConversionError, archgraph.ArchgraphError)


@pytest.mark.parametrize("size, out", [(7, 3), (5, 2), (6, 3)])
def test_onnx_export_of_adaptive_pooling_at_any_size(size, out, tmp_path):
    graph = archgraph.loads(f"archgraph: 1\ninputs: {{x: [2, {size}, {size + 1}]}}\nnodes:\n"
                            f"  p: {{op: adaptive_avgpool2d, in: x, output_size: [{out}, {out + 1}]}}\n"
                            f"outputs: [p]\n")
    assert export_onnx(graph, {}, tmp_path / "p.onnx") <= 1e-6
    from archgraph.fx.layers import adaptive_avg_pool2d_exportable
    x = torch.randn(2, 2, size, size + 1, dtype=torch.float64)
    want = torch.nn.functional.adaptive_avg_pool2d(x, (out, out + 1))
    assert float((adaptive_avg_pool2d_exportable(x, (out, out + 1)) - want).abs().max()) <= 1e-12


def test_alexnet_at_96_exports_to_onnx(tmp_path):
    """Its adaptive pooling maps 2x2 to 6x6 (not a divisor): "Unsupported: ONNX export of operator
    adaptive_avg_pool2d" before."""
    model = randomize_normalization(torchvision_model("alexnet", num_classes=10))
    graph, weights = from_module(model, input_shape=(3, 96, 96))
    export_onnx(graph, weights, tmp_path / "alexnet.onnx")   # raises past 1e-4 x max(1, max |y|)


@pytest.mark.parametrize("seed, sizes", [("tiny_cnn", [(20, 20), (36, 44)]), ("unet_tiny", [(16, 16), (48, 64)])])
def test_onnx_with_a_dynamic_height_and_width_runs_at_other_sizes(seed, sizes, tmp_path):
    """``dynamic_hw=True``: the file runs at sizes other than the graph's (a classifier with global pooling, and a
    U-Net whose per-pixel output follows the input), equal to the graph built at that size."""
    import onnxruntime as ort
    graph = archgraph.load(f"examples/seeds/{seed}.yaml")
    weights = build(graph).state_dict()
    assert export_onnx(graph, weights, tmp_path / "d.onnx", dynamic_hw=True) <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    (name, (c, _, _)), = graph.inputs.items()
    for h, w in sizes:
        other = graph.replace(inputs={name: [c, h, w]})
        model = build(other)
        model.load_state_dict(weights)
        x = torch.randn(3, c, h, w)
        (got,) = session.run(None, {name: x.numpy()})
        with torch.no_grad():
            want = model.eval()(x)
        assert got.shape == tuple(want.shape) and tuple(want.shape[1:]) == other.shape(other.outputs[0])
        assert float((torch.from_numpy(got) - want).abs().max()) <= 1e-4


@pytest.mark.parametrize("graph_text, words", [
    ("archgraph: 1\ninputs: {x: [2, 6, 6]}\nnodes:\n  p: {op: adaptive_avgpool2d, in: x, output_size: [3, 3]}\n"
     "outputs: [p]\n", "with a dynamic height and width (export without them): SymbolicValueError: Unsupported"),
    ("archgraph: 1\ninputs: {x: [2, 4, 4]}\nnodes:\n  f: {op: flatten, in: x}\n  fc: {op: linear, in: f, "
     "out_features: 3}\noutputs: [fc]\n", "does not allow a dynamic height and width: at twice its size (4x4 -> 8x8)"),
    ("archgraph: 1\ninputs: {x: [16]}\nnodes:\n  fc: {op: linear, in: x, out_features: 3}\noutputs: [fc]\n",
     "need an image input"),
])
def test_onnx_refuses_a_dynamic_height_and_width_the_graph_does_not_allow(graph_text, words, tmp_path, capfd):
    """One clear sentence, no TorchScript graph printed, and no file written."""
    graph = archgraph.loads(graph_text)
    with pytest.raises(ConversionError) as info:
        export_onnx(graph, build(graph).state_dict(), tmp_path / "d.onnx", dynamic_hw=True)
    assert words in str(info.value) and len(str(info.value).splitlines()) == 1
    assert "Torch IR graph" not in capfd.readouterr().out
    assert not (tmp_path / "d.onnx").exists()


def test_cli_export_with_a_dynamic_height_and_width(tmp_path, capsys):
    graph = archgraph.load("examples/seeds/tiny_cnn.yaml")
    save_weights(build(graph).state_dict(), tmp_path / "w.safetensors")
    assert main(["export", "examples/seeds/tiny_cnn.yaml", "--weights", str(tmp_path / "w.safetensors"),
                 "--onnx", str(tmp_path / "d.onnx"), "--dynamic-hw"]) == 0
    assert "at twice its height and width" in capsys.readouterr().out
    assert main(["export", "examples/seeds/vit_tiny.yaml", "--weights", str(tmp_path / "w.safetensors"),
                 "--onnx", str(tmp_path / "v.onnx"), "--dynamic-hw"]) == 2


def test_onnx_with_external_data_writes_the_weights_beside_the_model_and_runs(tmp_path, monkeypatch):
    """A model over ONNX's 2 GiB needs its weights in a side file; forced here on a small graph (and by lowering the
    automatic threshold), the two files appear only after the checks, and onnxruntime runs the pair."""
    import onnx
    import onnxruntime as ort

    from archgraph.interop import export as export_module

    graph = archgraph.load("examples/seeds/tiny_cnn.yaml")
    weights = randomize_normalization(build(graph)).state_dict()
    error = export_onnx(graph, weights, tmp_path / "out" / "tiny.onnx", external_data=True)
    assert error < 1e-4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tiny.onnx", "tiny.onnx.data"]
    model = onnx.load(str(tmp_path / "out" / "tiny.onnx"), load_external_data=False)
    assert model.graph.initializer and all(t.data_location == onnx.TensorProto.EXTERNAL
                                           for t in model.graph.initializer)
    (name, shape), = graph.inputs.items()
    x = torch.randn(3, *shape)
    session = ort.InferenceSession(str(tmp_path / "out" / "tiny.onnx"), providers=["CPUExecutionProvider"])
    module = build(graph)
    archgraph.fx.weights.load_into(module, weights)
    with torch.no_grad():
        want = module.eval()(x)
    got = torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    assert (got - want).abs().max() < 1e-4 * max(1.0, want.abs().max().item())

    monkeypatch.setattr(export_module, "EXTERNAL_DATA_BYTES", 16)   # automatic: weights over the limit
    export_onnx(graph, weights, tmp_path / "auto.onnx")
    assert (tmp_path / "auto.onnx.data").is_file()
    monkeypatch.setattr(export_module, "EXTERNAL_DATA_BYTES", 10 ** 12)
    export_onnx(graph, weights, tmp_path / "inline.onnx")
    assert not (tmp_path / "inline.onnx.data").exists()


def test_onnx_with_external_data_writes_nothing_when_the_check_fails(tmp_path):
    graph = archgraph.load("examples/seeds/tiny_cnn.yaml")
    weights = randomize_normalization(build(graph)).state_dict()
    with pytest.raises(ConversionError, match="differs"):
        export_onnx(graph, weights, tmp_path / "tiny.onnx", external_data=True, atol=-1.0)
    assert list(tmp_path.iterdir()) == []
