"""archgraph.build: deterministic initialisation, dtype and device, several inputs and outputs, reserved ids, CUDA,
and the torchvision compatibility import."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.fx as fx
from conftest import ROOT, SEEDS

import archgraph
from archgraph.format.yaml_io import loads
from archgraph.fx.builder import build, node_seed
from archgraph.graph import RESERVED_IDS

TINY = ROOT / "examples" / "seeds" / "tiny_cnn.yaml"
RESNET = ROOT / "examples" / "seeds" / "resnet_cifar.yaml"


def widen(g, node: str, out_channels: int):
    nodes = dict(g.nodes)
    nodes[node] = nodes[node].replace(out_channels=out_channels)
    return g.replace(nodes=nodes)


# ---- deterministic initialisation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed_file", SEEDS, ids=[s.stem for s in SEEDS])
def test_same_seed_same_weights(seed_file):
    g = archgraph.load(seed_file)
    a, b = build(g, seed=4).state_dict(), build(g, seed=4).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_different_seed_different_weights():
    g = archgraph.load(RESNET)
    a, b = build(g, seed=1).state_dict(), build(g, seed=2).state_dict()
    weights = [k for k in a if k.endswith(".weight") and a[k].dim() > 1]
    assert weights and all(not torch.equal(a[k], b[k]) for k in weights)


def test_nodes_of_the_same_shape_get_different_weights():
    w = build(archgraph.load(RESNET)).state_dict()
    assert w["b1_c1.weight"].shape == w["b1_c2.weight"].shape
    assert not torch.equal(w["b1_c1.weight"], w["b1_c2.weight"])
    assert node_seed(0, "b1_c1") != node_seed(0, "b1_c2") and node_seed(0, "c1") != node_seed(1, "c1")


def test_growing_one_node_leaves_the_others_init_unchanged():
    """node_seed(seed, node_id): a node's initial weights depend on the seed and its own id only, so widening c2
    changes c2 (and the widths read from it: bn2, c3) but not one value of the other nodes."""
    g = archgraph.load(TINY)
    grown = widen(g, "c2", 12)
    before, after = build(g, seed=9).state_dict(), build(grown, seed=9).state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if before[k].shape != after[k].shape}
    assert {k.split(".")[0] for k in changed} == {"c2", "bn2", "c3"}
    for key in before.keys() - changed:
        assert torch.equal(before[key], after[key]), key


def test_adding_a_node_leaves_the_others_init_unchanged():
    g = archgraph.load(TINY)
    data = g.to_dict()
    nodes = {}
    for nid, node in data["nodes"].items():
        nodes[nid] = node
        if nid == "r2":
            nodes["extra"] = {"op": "conv2d", "in": "r2", "out_channels": 8, "kernel_size": 3, "padding": 1}
    nodes["p2"] = {**nodes["p2"], "in": "extra"}
    deeper = archgraph.Graph.model_validate({**data, "nodes": nodes})
    before, after = build(g, seed=3).state_dict(), build(deeper, seed=3).state_dict()
    assert set(after) - set(before) == {"extra.weight", "extra.bias"}
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_build_does_not_touch_the_global_rng():
    g = archgraph.load(RESNET)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build(g, seed=123)
    assert torch.equal(torch.rand(3), expected)


def test_init_is_the_same_for_every_dtype():
    g = archgraph.load(RESNET)
    f32, f64 = build(g, seed=5).state_dict(), build(g, seed=5, dtype=torch.float64).state_dict()
    for key in f32:
        assert torch.equal(f32[key].to(f64[key].dtype), f64[key]), key


# ---- dtype and device -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_dtype(dtype):
    g = archgraph.load(RESNET)
    m = build(g, dtype=dtype)
    for key, tensor in m.state_dict().items():
        expected = torch.int64 if key.endswith("num_batches_tracked") else dtype
        assert tensor.dtype == expected, key
    if dtype is not torch.float16:  # CPU half convolutions are not everywhere
        out = m.eval()(torch.randn(2, 3, 32, 32, dtype=dtype))
        assert out.dtype == dtype and out.shape == (2, 10)


def test_device_argument():
    g = archgraph.load(TINY)
    m = build(g, device="cpu")
    assert {p.device.type for p in m.parameters()} == {"cpu"}
    meta = build(g, device="meta", dtype=torch.float64)
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    out = meta(torch.empty(2, 1, 28, 28, device="meta", dtype=torch.float64))
    assert out.shape == (2, 10) and out.device.type == "meta"


# building on CUDA against the CPU, every seed: tests/test_cuda.py


# ---- several inputs and outputs ----------------------------------------------------------------------------------

TWO_HEADS = """
archgraph: 1
name: two heads
inputs:
  image: [2, 6, 6]
  meta: [3]
nodes:
  conv: {op: conv2d, in: image, out_channels: 4, kernel_size: 3, padding: 1}
  pool: {op: global_avg_pool, in: conv}
  side: {op: linear, in: meta, out_features: 4}
  mix:  {op: add, in: [pool, side]}
  same: {op: identity, in: mix}
  cls:  {op: linear, in: same, out_features: 5}
  aux:  {op: mul, in: [pool, side, side]}
outputs: [cls, aux, meta]
"""


def test_several_inputs_and_outputs():
    g = loads(TWO_HEADS)
    m = build(g, dtype=torch.float64)
    image, meta = torch.randn(2, 2, 6, 6, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    cls, aux, passthrough = m(image, meta)  # inputs positional in declared order; outputs in listed order
    pool = m.conv(image).mean(dim=(2, 3))
    side = m.side(meta)
    assert torch.allclose(cls, m.cls(pool + side), atol=1e-12)
    assert torch.allclose(aux, pool * side * side, atol=1e-12)
    assert passthrough is meta
    assert "def forward(self, image, meta)" in m.code
    assert g.shapes()["aux"] == (4,) and g.shapes()["cls"] == (5,)


def test_single_output_is_a_tensor_not_a_tuple():
    m = build(archgraph.load(TINY))
    assert isinstance(m(torch.randn(1, 1, 28, 28)), torch.Tensor)


def test_module_is_a_graph_module_built_from_the_graph():
    g = archgraph.load(RESNET)
    m = build(g)
    assert isinstance(m, fx.GraphModule)
    assert type(m).__name__ == "ResnetCifar"
    calls = [n.target for n in m.graph.nodes if n.op == "call_module"]
    assert calls == [nid for nid, node in g.nodes.items() if node.op in ("conv2d", "batchnorm2d", "linear")]
    m.graph.lint()


# ---- reserved ids -------------------------------------------------------------------------------------------------

def test_reserved_ids_cover_this_torch():
    """Every attribute of a built module and every global of its generated code is a reserved id, so a node id
    can never shadow one (a node named 'forward' or 'training' would break the module)."""
    m = build(archgraph.load(TINY))
    attributes = {n for n in set(dir(m)) | set(vars(m)) if not n.startswith("_")} - set(m._modules)
    code_globals = {n for n in m.forward.__globals__ if not n.startswith("__")}
    assert attributes <= RESERVED_IDS, sorted(attributes - RESERVED_IDS)
    assert code_globals <= RESERVED_IDS | {"_tensor_constant0"}, sorted(code_globals - RESERVED_IDS)


@pytest.mark.parametrize("name", ["forward", "training", "to", "self", "torch", "_private"])
def test_reserved_ids_are_refused(name):
    text = (f"archgraph: 1\ninputs: {{x: [4]}}\nnodes:\n  {name}: {{op: linear, in: x, out_features: 2}}\n"
            f"outputs: [{name}]\n")
    with pytest.raises(archgraph.GraphError) as info:
        loads(text)
    assert info.value.node == name or name.startswith("_")


@pytest.mark.parametrize("name", ["on", "off", "yes", "no", "sum", "input", "float_", "layer", "x1"])
def test_ordinary_ids_build_and_run(name):
    """YAML 1.1 booleans (on/yes/...) are ids like any other here, and builtins' names do not break the module."""
    text = (f"archgraph: 1\ninputs: {{x: [4]}}\nnodes:\n  {name}: {{op: linear, in: x, out_features: 2}}\n"
            f"  act: {{op: relu, in: {name}}}\noutputs: [act]\n")
    g = loads(text)
    assert list(g.nodes) == [name, "act"]
    assert loads(archgraph.dumps(g)) == g
    m = build(g)
    assert set(m.state_dict()) == {f"{name}.weight", f"{name}.bias"}
    m.train()(torch.randn(2, 4))
    assert m.eval().training is False and getattr(m, name).training is False


# ---- torchvision ----------------------------------------------------------------------------------------------------

def test_import_torchvision_gives_working_datasets_transforms_and_models():
    from archgraph.compat import import_torchvision
    tv = import_torchvision()
    from torchvision import datasets, models, transforms
    assert tv.__version__.startswith("0.")
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
    x, y = datasets.FakeData(size=2, image_size=(3, 8, 8), num_classes=3, transform=tf)[0]
    assert x.shape == (3, 8, 8) and 0 <= int(y) < 3
    model = models.resnet18(num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    assert import_torchvision() is tv  # a second call is a no-op


def test_plain_import_torchvision_fails_here_with_the_nms_message():
    """In a fresh interpreter: a plain ``import torchvision`` fails with the nms message on this machine (a CPU
    torch with the PyPI torchvision wheel), and import_torchvision() then works in that same interpreter."""
    code = ("import sys; sys.path.insert(0, %r)\n"
            "try:\n"
            "    import torchvision\n"
            "    print('PLAIN-OK')\n"
            "except RuntimeError as err:\n"
            "    print('PLAIN-FAILED:', err)\n"
            "from archgraph.compat import import_torchvision\n"
            "tv = import_torchvision()\n"
            "from torchvision import transforms\n"
            "print('COMPAT-OK', tv.__version__)") % str(ROOT)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "COMPAT-OK" in result.stdout
    if "PLAIN-OK" in result.stdout:
        pytest.skip("torchvision imports on its own on this machine (a working install): nothing to work around")
    assert "PLAIN-FAILED: operator torchvision::nms does not exist" in result.stdout


# ---- shape arithmetic against PyTorch on a grid ----------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv_and_pool_output_sizes_match_torch_on_a_grid():
    """Shape inference (including refusals) agrees with what PyTorch computes or refuses, for every combination of
    input size, kernel, stride, padding, dilation and ceil_mode on a small grid, plus padding 'same' / 'valid'."""
    import itertools

    import torch.nn.functional as F

    from archgraph.errors import GraphError
    from archgraph.format.yaml_io import graph_from_data

    mismatches, cases = [], 0
    grid = itertools.product(["maxpool2d", "avgpool2d", "conv2d"], [1, 2, 3, 6], [1, 2, 3, 4], [1, 2, 3],
                             [0, 1, 2, "same", "valid"], [1, 2], [False, True])
    for op, size, k, s, p, d, ceil in grid:
        if (op == "avgpool2d" and d > 1) or (op == "conv2d" and ceil) or (op != "conv2d" and isinstance(p, str)):
            continue
        node = {"op": op, "in": "x", "kernel_size": [k, max(1, k - 1)], "stride": s, "padding": p}
        if op != "avgpool2d":
            node["dilation"] = d
        if op == "conv2d":
            node["out_channels"] = 2
        else:
            node["ceil_mode"] = ceil
        try:
            ours = graph_from_data({"archgraph": 1, "inputs": {"x": [2, size, size]}, "nodes": {"n": node},
                                    "outputs": ["n"]}).shapes()["n"]
        except GraphError:
            ours = None
        x = torch.randn(1, 2, size, size)
        kernel = (k, max(1, k - 1))
        try:
            if op == "maxpool2d":
                y = F.max_pool2d(x, kernel, s, p, d, ceil_mode=ceil)
            elif op == "avgpool2d":
                y = F.avg_pool2d(x, kernel, s, p, ceil_mode=ceil)
            else:
                y = F.conv2d(x, torch.randn(2, 2, *kernel), None, s, p, d)
            theirs = tuple(y.shape[1:]) if y.numel() else None
        except RuntimeError:
            theirs = None
        cases += 1
        if ours != theirs:
            mismatches.append((op, size, k, s, p, d, ceil, ours, theirs))
    assert cases > 500 and not mismatches, mismatches[:10]


# ---- every op computes what PyTorch computes --------------------------------------------------------------------

F_ = torch.nn.functional
IMG, FLAT, SEQ, TOKENS = [4, 7, 6], [5], [6, 5], {"shape": [6], "vocab": 9}
def reference_rnn(op: str, x, w, layers: int):
    """An LSTM or GRU written out step by step (PyTorch's equations and gate order), from a zero state."""
    for k in range(layers):
        wi, wh = w[f"weight_ih_l{k}"], w[f"weight_hh_l{k}"]
        bi, bh = w.get(f"bias_ih_l{k}", 0), w.get(f"bias_hh_l{k}", 0)
        h = x.new_zeros(x.shape[0], wh.shape[1])
        c = torch.zeros_like(h)
        outs = []
        for t in range(x.shape[1]):
            a, b = x[:, t] @ wi.T + bi, h @ wh.T + bh
            if op == "lstm":
                i, f, g, o = (a + b).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:
                (ar, az, an), (br, bz, bn) = a.chunk(3, dim=1), b.chunk(3, dim=1)
                r, z = torch.sigmoid(ar + br), torch.sigmoid(az + bz)
                h = (1 - z) * torch.tanh(an + r * bn) + z * h
            outs.append(h)
        x = torch.stack(outs, dim=1)
    return x


#: op -> (input shapes, node fields, reference(inputs, weights of the node))
OP_CASES = {
    "conv2d": ([IMG], {"out_channels": 6, "kernel_size": [3, 2], "stride": [2, 1], "padding": [1, 0],
                       "dilation": [1, 2], "groups": 2},
               lambda xs, w: F_.conv2d(xs[0], w["weight"], w["bias"], (2, 1), (1, 0), (1, 2), 2)),
    "linear": ([FLAT], {"out_features": 3}, lambda xs, w: F_.linear(xs[0], w["weight"], w["bias"])),
    "batchnorm2d": ([IMG], {"eps": 1e-3}, lambda xs, w: F_.batch_norm(
        xs[0], w["running_mean"], w["running_var"], w["weight"], w["bias"], False, 0.1, 1e-3)),
    "batchnorm1d": ([FLAT], {}, lambda xs, w: F_.batch_norm(
        xs[0], w["running_mean"], w["running_var"], w["weight"], w["bias"], False, 0.1, 1e-5)),
    "layernorm": ([IMG], {"eps": 1e-4}, lambda xs, w: F_.layer_norm(
        xs[0].permute(0, 2, 3, 1), (4,), w["weight"], w["bias"], 1e-4).permute(0, 3, 1, 2)),
    "relu": ([IMG], {}, lambda xs, w: F_.relu(xs[0])),
    "relu6": ([IMG], {}, lambda xs, w: F_.relu6(xs[0])),
    "gelu": ([FLAT], {"approximate": "tanh"}, lambda xs, w: F_.gelu(xs[0], approximate="tanh")),
    "silu": ([FLAT], {}, lambda xs, w: F_.silu(xs[0])),
    "sigmoid": ([FLAT], {}, lambda xs, w: torch.sigmoid(xs[0])),
    "tanh": ([FLAT], {}, lambda xs, w: torch.tanh(xs[0])),
    "softcap": ([FLAT], {"cap": 2.5}, lambda xs, w: 2.5 * torch.tanh(xs[0] / 2.5)),
    "hardswish": ([IMG], {}, lambda xs, w: F_.hardswish(xs[0])),
    "maxpool2d": ([IMG], {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
                  lambda xs, w: F_.max_pool2d(xs[0], 3, 2, 1, ceil_mode=True)),
    "avgpool2d": ([IMG], {"kernel_size": 2, "padding": 1, "count_include_pad": False},
                  lambda xs, w: F_.avg_pool2d(xs[0], 2, 2, 1, count_include_pad=False)),
    "adaptive_avgpool2d": ([IMG], {"output_size": [2, 3]}, lambda xs, w: F_.adaptive_avg_pool2d(xs[0], (2, 3))),
    "global_avg_pool": ([IMG], {}, lambda xs, w: xs[0].mean(dim=(2, 3))),
    "flatten": ([IMG], {}, lambda xs, w: xs[0].reshape(xs[0].shape[0], -1)),
    "dropout": ([FLAT], {"p": 0.3}, lambda xs, w: xs[0]),  # eval mode
    "add": ([IMG, IMG, IMG], {}, lambda xs, w: xs[0] + xs[1] + xs[2]),
    "mul": ([IMG, [4, 1, 1]], {}, lambda xs, w: xs[0] * xs[1]),
    "concat": ([IMG, [2, 7, 6]], {}, lambda xs, w: torch.cat(xs, dim=1)),
    "identity": ([FLAT], {}, lambda xs, w: xs[0]),
    "hardsigmoid": ([IMG], {}, lambda xs, w: F_.hardsigmoid(xs[0])),
    "leaky_relu": ([IMG], {"negative_slope": 0.2}, lambda xs, w: F_.leaky_relu(xs[0], 0.2)),
    "group_norm": ([IMG], {"num_groups": 2, "eps": 1e-4}, lambda xs, w: F_.group_norm(xs[0], 2, w["weight"], w["bias"],
                                                                                     1e-4)),
    "scale": ([IMG], {"init": 0.5}, lambda xs, w: xs[0] * w["weight"].reshape(1, -1, 1, 1)),
    "grn": ([IMG], {"eps": 1e-3}, lambda xs, w: reference_grn(xs[0], w, 1e-3)),
    "stochastic_depth": ([IMG], {"p": 0.2}, lambda xs, w: xs[0]),  # eval mode
    "channel_shuffle": ([[6, 3, 2]], {"groups": 2}, lambda xs, w: xs[0].reshape(3, 2, 3, 3, 2).transpose(1, 2)
                        .reshape(3, 6, 3, 2)),
    "slice": ([IMG], {"start": 1, "stop": 3}, lambda xs, w: xs[0][:, 1:3]),
    "conv_transpose2d": ([IMG], {"out_channels": 6, "kernel_size": [3, 2], "stride": [2, 3], "padding": [1, 0],
                                 "output_padding": [1, 2], "dilation": [1, 2], "groups": 2},
                         lambda xs, w: F_.conv_transpose2d(xs[0], w["weight"], w["bias"], (2, 3), (1, 0), (1, 2), 2,
                                                           (1, 2))),
    "upsample": ([IMG], {"size": [9, 13], "mode": "bilinear", "align_corners": False},
                 lambda xs, w: F_.interpolate(xs[0], size=(9, 13), mode="bilinear", align_corners=False)),
    "lstm": ([SEQ], {"hidden_size": 3, "num_layers": 2}, lambda xs, w: reference_rnn("lstm", xs[0], w, 2)),
    "gru": ([SEQ], {"hidden_size": 4, "bias": False}, lambda xs, w: reference_rnn("gru", xs[0], w, 1)),
    "rmsnorm": ([SEQ], {"eps": 1e-4}, lambda xs, w: F_.rms_norm(xs[0], (5,), w["weight"], 1e-4)),
    "embedding": ([TOKENS], {"embedding_dim": 4}, lambda xs, w: F_.embedding(xs[0], w["weight"])),
    "position_embedding": ([SEQ], {}, lambda xs, w: xs[0] + w["weight"]),
    "attention": ([SEQ], {"num_heads": 1, "causal": True}, lambda xs, w: F_.linear(F_.scaled_dot_product_attention(
        F_.linear(xs[0], w["q_proj.weight"], w["q_proj.bias"]), F_.linear(xs[0], w["k_proj.weight"], w["k_proj.bias"]),
        F_.linear(xs[0], w["v_proj.weight"], w["v_proj.bias"]), is_causal=True), w["o_proj.weight"],
        w["o_proj.bias"])),
    "to_tokens": ([IMG], {}, lambda xs, w: xs[0].reshape(3, 4, 42).transpose(1, 2)),
    "class_token": ([SEQ], {}, lambda xs, w: torch.cat([w["weight"].expand(3, 1, 5), xs[0]], 1)),
    "token_pool": ([SEQ], {"mode": "mean"}, lambda xs, w: xs[0].mean(1)),
    "pad": ([IMG], {"padding": [1, 0, 2, 3], "value": -0.5}, lambda xs, w: F_.pad(xs[0], (1, 0, 2, 3), value=-0.5)),
    "subsample": ([IMG], {"stride": [2, 3], "offset": [1, 0]}, lambda xs, w: xs[0][:, :, 1::2, 0::3]),
    "window_attention": ([IMG], {"num_heads": 2, "window_size": [3, 3], "shift_size": 1},
                         lambda xs, w: reference_swin(xs[0], w, (3, 3), 2, [1, 1])),
    # split attention: timm's RadixSoftmax on [cardinality=2, radix=2, 2 channels] at every position
    "radix_softmax": ([[8, 3, 2]], {"radix": 2, "cardinality": 2}, lambda xs, w: torch.softmax(
        xs[0].reshape(3, 2, 2, 2, 3, 2), dim=2).transpose(1, 2).reshape(3, 8, 3, 2)),
}


def reference_grn(x, w, eps):
    """ConvNeXt-V2's GRN written from its paper's formula, channels-last (as timm's ``channels_last=True``)."""
    x = x.permute(0, 2, 3, 1)
    g = torch.sqrt((x * x).sum(dim=(1, 2), keepdim=True))
    n = g / (g.mean(dim=-1, keepdim=True) + eps)
    return (w["weight"] * (x * n) + w["bias"] + x).permute(0, 3, 1, 2)


def reference_swin(x, w, window, heads, shift):
    """torchvision's shifted-window attention (Swin v1) on channels-first ``x``, its bias from the node's table."""
    from archgraph.compat import import_torchvision
    swin = import_torchvision().models.swin_transformer
    coords = torch.stack(torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + torch.tensor([window[0] - 1, window[1] - 1])
    index = rel[..., 0] * (2 * window[1] - 1) + rel[..., 1]
    bias = swin._get_relative_position_bias(w["relative_position_bias_table"], index.flatten(), list(window))
    qkv = torch.cat([w[f"{p}_proj.weight"] for p in "qkv"]), torch.cat([w[f"{p}_proj.bias"] for p in "qkv"])
    out = swin.shifted_window_attention(x.permute(0, 2, 3, 1), qkv[0], w["o_proj.weight"], bias, list(window), heads,
                                        shift, qkv_bias=qkv[1], proj_bias=w["o_proj.bias"], training=False)
    return out.permute(0, 3, 1, 2)


def reference_moe(x, w, top_k: int):
    """Routed the way a sparse implementation does it: per token, the top_k experts by router probability
    (renormalised), each computed alone."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            v = x[b, t]
            probs = torch.softmax(w["router.weight"] @ v, dim=-1)
            top, idx = torch.topk(probs, top_k)
            for p, e in zip(top / top.sum(), idx.tolist()):
                h = F_.silu(w["gate_proj"][e] @ v) * (w["up_proj"][e] @ v)
                out[b, t] += p * (w["down_proj"][e] @ h)
    return out


OP_CASES["moe"] = ([SEQ], {"num_experts": 4, "top_k": 2, "hidden": 3},
                   lambda xs, w: reference_moe(xs[0], w, 2))


def test_every_op_has_a_reference_case():
    from archgraph.ops.registry import OPS
    assert set(OP_CASES) == set(OPS)


@pytest.mark.parametrize("op", sorted(OP_CASES))
def test_every_op_matches_torch(op):
    shapes, fields, reference = OP_CASES[op]
    names = [f"x{i}" for i in range(len(shapes))]
    g = archgraph.Graph.model_validate({
        "archgraph": 1, "inputs": dict(zip(names, shapes)),
        "nodes": {"n": {"op": op, "in": names if len(names) > 1 else names[0], **fields}}, "outputs": ["n"]})
    m = build(g, dtype=torch.float64, seed=1).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, t in m.state_dict().items():  # random buffers too, so eval-mode norms are not the identity
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) + 0.5)
        xs = [torch.randint(0, s["vocab"], (3, *s["shape"]), generator=gen) if isinstance(s, dict)
              else torch.randn(3, *s, generator=gen, dtype=torch.float64) for s in shapes]
        out = m(*xs)
        weights = {k.split(".", 1)[1]: t for k, t in m.state_dict().items()}
        want = reference(xs, weights)
    assert out.shape == want.shape == (3, *g.shapes()["n"])
    assert (out - want).abs().max().item() <= 1e-12


def test_archgraph_build_is_callable_whatever_was_imported_first():
    """``archgraph.build`` is a plain function, whatever module was imported first: no module of the package is
    named like a public function (``archgraph.build``, ``archgraph.prune``, ``archgraph.transfer``)."""
    code = ("import sys; sys.path.insert(0, %r)\n"
            "import archgraph.fx.builder\n"
            "from archgraph.fx.builder import node_seed\n"
            "import archgraph\n"
            "g = archgraph.load(%r)\n"
            "m = archgraph.build(g)\n"
            "from archgraph import build\n"
            "assert build(g).state_dict().keys() == m.state_dict().keys()\n"
            "assert archgraph.fx.builder.node_seed is node_seed\n"
            "import types\n"
            "assert all(isinstance(getattr(archgraph, n), types.FunctionType) for n in ('build', 'prune', 'transfer', "
            "'apply', 'rewrite'))\n"
            "print(type(m).__name__)") % (str(ROOT), str(TINY))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "TinyCnn"
