"""Window attention: torchvision's Swin (v1, v2) and MaxViT import exactly in float64 as ``window_attention`` nodes
(small configurations built from torchvision's classes), the graphs round-trip through YAML, prune (channels through
patch merging; heads with their position tables), and export to standalone Python and ONNX; bad fields are clear
pydantic errors."""
import importlib.util

import pytest
import torch
from pydantic import ValidationError

import archgraph
from archgraph import rules
from archgraph.compat import import_torchvision
from archgraph.fx.builder import build, class_name
from archgraph.fx.weights import load_into
from archgraph.interop.equivalence import max_error, randomize_normalization

TOL = 1e-9


def _ready(m):
    """Random norms and position tables, linears of unit gain (torchvision's std 0.02 would make every attention
    nearly uniform, so a wrong window would hardly show), float64, eval mode."""
    torch.manual_seed(1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.normal_(0, mod.in_features ** -0.5)
    return randomize_normalization(m).double().eval()


def swin(v2: bool = False, window=(3, 3)):
    S = import_torchvision().models.swin_transformer
    torch.manual_seed(0)
    kw = {"block": S.SwinTransformerBlockV2, "downsample_layer": S.PatchMergingV2} if v2 else {}
    return _ready(S.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                    window_size=list(window), num_classes=10, **kw))


def maxvit():
    M = import_torchvision().models.maxvit
    torch.manual_seed(0)
    return _ready(M.MaxVit(input_size=(64, 64), stem_channels=8, partition_size=4, block_channels=[16, 32],
                           block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.1, num_classes=10))


def built(graph, weights):
    b = build(graph, dtype=torch.float64)
    load_into(b, weights)
    return b.eval()


def windows(graph):
    return [n for n in graph.nodes.values() if n.op == "window_attention"]


# 36x44 with 3x3 windows: stage 1 is 9x11 (padded to 9x12, shifted), patch merging pads 9x11 to 10x12
SWIN_SHAPE = (3, 36, 44)


def test_swin_v1_imports_exactly_with_padding_shift_and_odd_merging():
    m = swin()
    graph, weights = archgraph.from_module(m, input_shape=SWIN_SHAPE)
    att = windows(graph)
    assert [(a.window_size, a.shift_size, a.position_bias) for a in att] == \
        [(3, 0, "table"), (3, 1, "table"), (3, 0, "table"), (3, 1, "table")]
    assert [n.op for n in graph.nodes.values()].count("subsample") == 4
    assert any(n.op == "pad" for n in graph.nodes.values())
    x = torch.randn(2, *SWIN_SHAPE, dtype=torch.float64)
    b = built(graph, weights)
    assert max_error(m, b, x) <= TOL
    assert archgraph.loads(archgraph.dumps(graph)) == graph
    # the shift and the mask matter: without them the output is different
    nid = next(k for k, n in graph.nodes.items() if n.op == "window_attention" and n.shift_size)
    unshifted = graph.replace(nodes={**graph.nodes, nid: graph.nodes[nid].replace(shift_size=0)})
    assert max_error(m, built(unshifted, weights), x) > 1e-3


def test_swin_v2_imports_exactly():
    m = swin(v2=True, window=(4, 4))
    graph, weights = archgraph.from_module(m, input_shape=(3, 32, 32))
    att = windows(graph)
    assert all(a.position_bias == "mlp" and a.cosine for a in att) and [a.shift_size for a in att][:2] == [0, 2]
    key = next(k for k in weights if k.endswith("logit_scale"))
    assert weights[key].shape == (2, 1, 1) and not any(k.endswith("k_proj.bias") for k in weights)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert max_error(m, built(graph, weights), x) <= TOL
    assert archgraph.loads(archgraph.dumps(graph)) == graph


def test_maxvit_imports_exactly_with_window_and_grid_attention():
    m = maxvit()
    graph, weights = archgraph.from_module(m, input_shape=(3, 64, 64))
    att = windows(graph)
    assert [a.grid for a in att] == [False, True, False, True]
    assert [a.scale for a in att] == [16 ** -0.5, 16 ** -0.5, 32 ** -0.5, 32 ** -0.5]   # MaxViT scales by C
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    b = built(graph, weights)
    assert max_error(m, b, x) <= TOL
    assert archgraph.loads(archgraph.dumps(graph)) == graph
    nid = next(k for k, n in graph.nodes.items() if n.op == "window_attention" and n.grid)
    blocks = graph.replace(nodes={**graph.nodes, nid: graph.nodes[nid].replace(grid=False)})
    assert max_error(m, built(blocks, weights), x) > 1000 * TOL   # the average pool at the end blurs it


@pytest.mark.parametrize("fields, message", [
    ({"shift_size": 3}, "must be smaller than window_size"),
    ({"grid": True, "shift_size": 1}, "grid attention has no shift"),
    ({"cosine": True, "scale": 0.5}, "not a fixed scale"),
    ({"position_bias": "learned"}, "'table', 'mlp' or 'none'"),
    ({"window_size": 0}, "greater than 0"),
])
def test_bad_window_attention_fields_are_clear_errors(fields, message):
    from archgraph.ops.spec import WindowAttention
    with pytest.raises(ValidationError, match=message):
        WindowAttention.model_validate({"in": "x", "num_heads": 2, "window_size": 3, **fields})


def test_window_attention_shapes_are_checked():
    text = ("archgraph: 1\ninputs: {x: [8, 6, 6]}\n"
            "nodes: {a: {op: window_attention, in: x, num_heads: 2, window_size: 4, grid: true}}\noutputs: [a]\n")
    with pytest.raises(archgraph.ArchgraphError, match="grid attention needs window_size"):
        archgraph.loads(text)
    with pytest.raises(archgraph.ArchgraphError, match="num_heads=3 does not divide the 8 channels"):
        archgraph.loads(text.replace("num_heads: 2", "num_heads: 3").replace(", grid: true", ""))


def test_swin_prunes_channels_through_patch_merging():
    m = swin()
    graph, weights = archgraph.from_module(m, input_shape=SWIN_SHAPE)
    rule = rules.PruneChannels(node="features_0_0", indices=(0, 3))
    pruned = archgraph.apply(graph, rule).graph
    assert pruned.shape("features_2_concat")[0] == 4 * 14
    att = pruned.nodes["features_1_0_attn"]
    assert att.head_dim == 8 and pruned.shape("features_1_0_attn")[0] == 14   # the heads keep their size
    _, new = archgraph.rewrite(graph, built(graph, weights), rule)
    keep = [c for c in range(16) if c not in (0, 3)]
    columns = [k * 16 + c for k in range(4) for c in keep]   # every phase of the merge loses the same channels
    assert torch.equal(new.state_dict()["features_2_reduction.weight"][:, :, 0, 0],
                       weights["features_2_reduction.weight"][:, columns, 0, 0])
    small, small_w = archgraph.prune(graph, weights, ratio=0.5, heads=True)
    assert [n.num_heads for n in windows(small)] == [1, 1, 2, 2]
    assert built(small, small_w)(torch.randn(1, *SWIN_SHAPE, dtype=torch.float64)).shape == (1, 10)


@pytest.mark.parametrize("v2", [False, True], ids=["table", "mlp"])
def test_window_attention_heads_prune_and_grow_exactly(v2):
    """A head whose o_proj columns are zero goes with its q/k/v rows and its position tables' entry (the table's
    column, the MLP's output row, the logit scale); new heads start with zero o_proj columns."""
    m = swin(v2=v2, window=(4, 4))
    graph, weights = archgraph.from_module(m, input_shape=(3, 32, 32))
    nid = "features_3_1_attn"
    weights = dict(weights)
    weights[f"{nid}.o_proj.weight"] = weights[f"{nid}.o_proj.weight"].clone()
    weights[f"{nid}.o_proj.weight"][:, 8:16] = 0   # head 1 of 4
    before = built(graph, weights)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    g2, after = archgraph.rewrite(graph, before, rules.PruneHeads(node=nid, indices=(1,)))
    per_head = {"cpb_mlp.2.weight": 0, "logit_scale": 0} if v2 else {"relative_position_bias_table": 1}
    for name, axis in per_head.items():
        key = f"{nid}.{name}"
        assert torch.equal(after.state_dict()[key], weights[key].index_select(axis, torch.tensor([0, 2, 3])))
    assert g2.nodes[nid].num_heads == 3 and max_error(before.eval(), after.eval(), x) <= TOL
    g3, grown = archgraph.rewrite(graph, before, rules.AddHeads(node=nid, count=2))
    assert g3.nodes[nid].num_heads == 6 and max_error(before, grown.eval(), x) <= TOL


def _exported(graph, path):
    archgraph.export_python(graph, path)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, class_name(graph.name))().double().eval()


@pytest.mark.parametrize("make, shape", [(swin, SWIN_SHAPE), (lambda: swin(v2=True, window=(4, 4)), (3, 32, 32)),
                                         (maxvit, (3, 64, 64))], ids=["swin", "swin_v2", "maxvit"])
def test_window_models_export_to_python(make, shape, tmp_path):
    m = make()
    graph, weights = archgraph.from_module(m, input_shape=shape)
    model = _exported(graph, tmp_path / "net.py")
    model.load_state_dict(weights)
    assert max_error(m, model, torch.randn(2, *shape, dtype=torch.float64)) <= TOL


def test_window_attention_exports_to_onnx(tmp_path):
    """Every variant in one small graph (a whole model takes ~10 s to export): Swin v2's shifted cosine attention
    with its position MLP on a padded image, then MaxViT's grid attention with a bias table."""
    pytest.importorskip("onnxruntime")
    g = archgraph.loads("archgraph: 1\ninputs: {x: [8, 6, 6]}\nnodes:\n"
                        "  a: {op: window_attention, in: x, num_heads: 2, window_size: 4, shift_size: 2, "
                        "position_bias: mlp, cpb_hidden: 16, cosine: true}\n"
                        "  b: {op: window_attention, in: a, num_heads: 2, window_size: 3, grid: true}\n"
                        "outputs: [b]\n")
    weights = {k: torch.randn(v.shape) * 0.3 for k, v in build(g).state_dict().items()}
    assert archgraph.export_onnx(g, weights, tmp_path / "net.onnx") <= 1e-4


def test_built_window_attention_and_subsample_import_back():
    g = archgraph.loads("archgraph: 1\ninputs: {x: [8, 6, 7]}\nnodes:\n"
                        "  a: {op: window_attention, in: x, num_heads: 2, window_size: [3, 4], shift_size: [1, 2], "
                        "position_bias: mlp, cpb_hidden: 16, cosine: true}\n"
                        "  s: {op: subsample, in: a, stride: [2, 3], offset: [1, 2]}\noutputs: [s]\n")
    back, _ = archgraph.from_module(build(g), input_shape=(8, 6, 7))
    assert list(back.nodes.values()) == [g.nodes["a"], g.nodes["s"].replace(inputs=list(back.nodes)[:1])]
