"""Split attention imports exactly in float64 and prunes: hand-written twins of timm's ``SplitAttn`` (ResNeSt; radix
1 and 2, cardinality 1 and 2) and ``SelectiveKernel`` (SKNet; 2 and 3 paths, the input split or not) become convs,
slices, adds, muls and one ``radix_softmax``; pruning at ratio 0.5 removes the channels tied across the radix groups
(the paths) together and the pruned graph runs with the output's shape; a bad ``radix_softmax`` field is a clear
pydantic error."""
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

import archgraph
from archgraph.channels import analyse
from archgraph.fx.apply_plan import transfer_state
from archgraph.fx.builder import build
from archgraph.fx.weights import load_into
from archgraph.ops.registry import radix_permutation
from archgraph.ops.spec import RadixSoftmax

torch.set_num_threads(1)


class RadixSoftmaxTwin(nn.Module):
    """timm's RadixSoftmax."""

    def __init__(self, radix, cardinality):
        super().__init__()
        self.radix, self.cardinality = radix, cardinality

    def forward(self, x):
        batch = x.size(0)
        if self.radix > 1:
            x = x.view(batch, self.cardinality, self.radix, -1).transpose(1, 2)
            x = F.softmax(x, dim=1)
            x = x.reshape(batch, -1)
        else:
            x = torch.sigmoid(x)
        return x


class SplitAttnTwin(nn.Module):
    """timm's SplitAttn (ResNeSt's split-attention conv), with a batchnorm after the conv, as ResNeSt builds it."""

    def __init__(self, cin, cout, radix=2, groups=1, attn=8):
        super().__init__()
        self.radix = radix
        mid = cout * radix
        self.conv = nn.Conv2d(cin, mid, 3, 1, 1, groups=groups * radix, bias=False)
        self.bn0 = nn.BatchNorm2d(mid)
        self.act0 = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(cout, attn, 1, groups=groups)
        self.bn1 = nn.BatchNorm2d(attn)
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(attn, mid, 1, groups=groups)
        self.rsoftmax = RadixSoftmaxTwin(radix, groups)

    def forward(self, x):
        x = self.act0(self.bn0(self.conv(x)))
        B, RC, H, W = x.shape
        if self.radix > 1:
            x = x.reshape((B, self.radix, RC // self.radix, H, W))
            x_gap = x.sum(dim=1)
        else:
            x_gap = x
        x_gap = x_gap.mean((2, 3), keepdim=True)
        x_attn = self.fc2(self.act1(self.bn1(self.fc1(x_gap))))
        x_attn = self.rsoftmax(x_attn).view(B, -1, 1, 1)
        if self.radix > 1:
            out = (x * x_attn.reshape((B, self.radix, RC // self.radix, 1, 1))).sum(dim=1)
        else:
            out = x * x_attn
        return out.contiguous()


class SelectiveKernelTwin(nn.Module):
    """timm's SelectiveKernel with its SelectiveKernelAttn: one conv-bn-relu per path (3x3, dilation 1, 2, ...)."""

    def __init__(self, cin, cout, paths=2, split_input=True, attn=8):
        super().__init__()
        self.split_input, self.num_paths, self.cin = split_input, paths, cin
        pin = cin // paths if split_input else cin
        self.paths = nn.ModuleList(nn.Sequential(nn.Conv2d(pin, cout, 3, padding=d, dilation=d, bias=False),
                                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
                                   for d in range(1, paths + 1))
        self.fc_reduce = nn.Conv2d(cout, attn, 1, bias=False)
        self.bn = nn.BatchNorm2d(attn)
        self.act = nn.ReLU(inplace=True)
        self.fc_select = nn.Conv2d(attn, cout * paths, 1, bias=False)

    def attn(self, x):
        x = x.sum(1).mean((2, 3), keepdim=True)
        x = self.fc_select(self.act(self.bn(self.fc_reduce(x))))
        B, C, H, W = x.shape
        x = x.view(B, self.num_paths, C // self.num_paths, H, W)
        return torch.softmax(x, dim=1)

    def forward(self, x):
        if self.split_input:
            x_split = torch.split(x, self.cin // self.num_paths, 1)
            x_paths = [op(x_split[i]) for i, op in enumerate(self.paths)]
        else:
            x_paths = [op(x) for op in self.paths]
        x = torch.stack(x_paths, dim=1)
        x = x * self.attn(x)
        return torch.sum(x, dim=1)


class Block(nn.Module):
    """A prunable setting: a conv before the split attention and a conv (then a classifier) after it."""

    def __init__(self, attention, cin, cmid):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, cin, 3, padding=1), nn.BatchNorm2d(cin), nn.ReLU())
        self.attention = attention
        self.head = nn.Sequential(nn.Conv2d(cmid, 6, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))

    def forward(self, x):
        return self.head(self.attention(self.stem(x)))


def _randomise(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():   # random batchnorm statistics and affine parameters, so that every one shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    return model.double().eval()


def _imported(model, shape=(3, 8, 8)):
    model = _randomise(model)
    g, w = archgraph.from_module(model, input_shape=shape)
    built = build(g, dtype=torch.float64)
    load_into(built, w)
    x = torch.randn(4, *shape, dtype=torch.float64)
    with torch.no_grad():
        want, got = model(x), built.eval()(x)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-12 * want.abs().max().item()
    return g, w, x


CASES = {
    "splitattn_r2": lambda: SplitAttnTwin(8, 6, radix=2),
    "splitattn_r2_c2": lambda: SplitAttnTwin(8, 8, radix=2, groups=2),
    "splitattn_r1": lambda: SplitAttnTwin(8, 6, radix=1),
    "splitattn_r1_c2": lambda: SplitAttnTwin(8, 6, radix=1, groups=2),
    "splitattn_r3_c2": lambda: SplitAttnTwin(12, 4, radix=3, groups=2),
    "sk_2_split": lambda: SelectiveKernelTwin(8, 6, paths=2),
    "sk_3": lambda: SelectiveKernelTwin(6, 6, paths=3, split_input=False),
}
MIDS = {"splitattn_r2": 6, "splitattn_r2_c2": 8, "splitattn_r1": 6, "splitattn_r1_c2": 6, "splitattn_r3_c2": 4,
        "sk_2_split": 6, "sk_3": 6}
INS = {"splitattn_r3_c2": 12, "sk_3": 6}


def _block(name):
    return Block(CASES[name](), INS.get(name, 8), MIDS[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_imports_exactly(name):
    g, _, _ = _imported(_block(name))
    ops = [n.op for n in g.nodes.values()]
    radix = 1 if "r1" in name else 0
    if radix:   # timm's radix 1 is a sigmoid gate (squeeze-excitation): no stack, no radix_softmax
        assert "radix_softmax" not in ops and "sigmoid" in ops
    else:
        assert ops.count("radix_softmax") == 1 and "add" in ops


def test_split_attention_graph_reads_as_the_module():
    g, _, _ = _imported(_block("splitattn_r2"))
    soft = next(n for n in g.nodes.values() if n.op == "radix_softmax")
    assert (soft.radix, soft.cardinality) == (2, 1)
    assert [n.op for n in g.nodes.values()].count("slice") == 4   # two sums over the radix, of two slices each
    g, _, _ = _imported(_block("splitattn_r2_c2"))
    soft = next(n for n in g.nodes.values() if n.op == "radix_softmax")
    assert (soft.radix, soft.cardinality) == (2, 2)
    g, _, _ = _imported(_block("sk_3"))
    adds = [n for n in g.nodes.values() if n.op == "add"]
    assert len(adds[0].inputs) == 3 and all(g.nodes[i].op == "relu" for i in adds[0].inputs)   # the paths' sum
    soft = next(n for n in g.nodes.values() if n.op == "radix_softmax")
    assert (soft.radix, soft.cardinality) == (3, 1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_prunes_and_keeps_shapes(name):
    g, w, x = _imported(_block(name))
    pruned, pw = archgraph.prune(g, w, ratio=0.5, criterion="l2")
    assert pruned.params < g.params
    model = build(pruned, dtype=torch.float64)
    load_into(model, pw)
    with torch.no_grad():
        assert model.eval()(x).shape == (4, 5)
    soft = [n for n, node in g.nodes.items() if node.op == "radix_softmax"]
    for nid in soft:   # the attention lost channels too: every radix group (path) alike
        assert pruned.shapes()[nid][0] < g.shapes()[nid][0]
        assert pruned.shapes()[nid][0] % (g.nodes[nid].radix * g.nodes[nid].cardinality) == 0


def test_pruning_ties_the_radix_groups():
    g, _, _ = _imported(_block("splitattn_r2_c2"))
    ch = analyse(g)
    conv = next(n for n, node in g.nodes.items() if node.op == "conv2d" and node.groups == 4)
    classes = ch.classes(conv)
    half = len(classes) // 2
    assert classes[:half] == classes[half:]   # channel i of radix group 0 goes with channel i of radix group 1
    soft = next(n for n, node in g.nodes.items() if node.op == "radix_softmax")
    fc2 = g.nodes[soft].inputs[0]
    perm = radix_permutation(len(classes), 2, 2)
    assert [ch.classes(fc2)[p] for p in perm] == ch.classes(soft) == classes


@pytest.mark.parametrize("name", ["splitattn_r2", "splitattn_r2_c2", "splitattn_r3_c2", "sk_2_split", "sk_3"])
def test_pruning_a_zero_channel_through_the_attention_is_exact(name):
    """A channel that is zero in every radix group (path), removed with its attention rows, keeps the function:
    the softmax of the other channels does not read it, and the cardinality groups keep their layout."""
    g, w, x = _imported(_block(name))
    ch = analyse(g)
    soft = next(n for n, node in g.nodes.items() if node.op == "radix_softmax")
    gone = ch.classes(soft)[-1]
    w = {k: v.clone() for k, v in w.items()}
    norms = [n for n, node in g.nodes.items() if node.op == "batchnorm2d" and gone in ch.classes(n)]
    assert norms
    for nid in norms:   # the stack's batchnorms give zeros there (then the relus do)
        at = [i for i, c in enumerate(ch.classes(nid)) if c == gone]
        for key in ("weight", "bias", "running_mean"):
            w[f"{nid}.{key}"][at] = 0
    fc = g.nodes[soft].inputs[0]
    rule = archgraph.rules.PruneChannels(node=fc, indices=(ch.classes(fc).index(gone),))
    rw = archgraph.apply(g, rule)
    radix, cardinality = g.nodes[soft].radix, g.nodes[soft].cardinality
    assert rw.graph.shapes()[soft][0] == g.shapes()[soft][0] - radix * cardinality
    before, after = build(g, dtype=torch.float64), build(rw.graph, dtype=torch.float64)
    load_into(before, w)
    load_into(after, transfer_state(rw.plan, w))
    with torch.no_grad():
        want, got = before.eval()(x), after.eval()(x)
    assert (got - want).abs().max().item() <= 1e-12 * want.abs().max().item()


def test_radix_softmax_ties_each_place_across_radix_and_cardinality():
    g = archgraph.loads("""
archgraph: 1
inputs: {x: [3, 4, 4]}
nodes:
  c: {op: conv2d, in: x, out_channels: 8, kernel_size: 1}
  s: {op: radix_softmax, in: c, radix: 2, cardinality: 2}
  o: {op: conv2d, in: s, out_channels: 2, kernel_size: 1}
outputs: [o]
""")
    ch = analyse(g)
    classes = ch.classes("c")   # [cardinality, radix, i]: place i of every block goes together
    assert classes[0::2] == [classes[0]] * 4 and classes[1::2] == [classes[1]] * 4 and classes[0] != classes[1]
    perm = radix_permutation(8, 2, 2)
    assert ch.slots["s"].tokens == tuple(ch.slots["c"].tokens[p] for p in perm)
    rw = archgraph.apply(g, archgraph.rules.PruneChannels(node="c", indices=(1,)))
    assert rw.graph.shapes()["s"] == (4, 4, 4) and rw.graph.nodes["s"] == g.nodes["s"]


def test_radix_softmax_matches_timm_order():
    torch.manual_seed(1)
    x = torch.randn(2, 12, 1, 1, dtype=torch.float64)
    g = archgraph.Graph.model_validate({"archgraph": 1, "inputs": {"x": [12, 1, 1]},
                                        "nodes": {"s": {"op": "radix_softmax", "in": "x", "radix": 3,
                                                        "cardinality": 2}}, "outputs": ["s"]})
    got = build(g, dtype=torch.float64)(x)
    want = RadixSoftmaxTwin(3, 2)(x).view(2, -1, 1, 1)
    assert torch.equal(got, want)


def test_bad_radix_softmax_fields_are_clear_errors():
    with pytest.raises(ValidationError, match="radix"):
        RadixSoftmax.model_validate({"in": "x", "radix": 0})
    with pytest.raises(ValidationError, match="cardinality"):
        RadixSoftmax.model_validate({"in": "x", "radix": 2, "cardinality": "2"})
    with pytest.raises(archgraph.errors.ArchgraphError, match="does not divide the 6 channels"):
        archgraph.Graph.model_validate({"archgraph": 1, "inputs": {"x": [6, 1, 1]},
                                        "nodes": {"s": {"op": "radix_softmax", "in": "x", "radix": 2,
                                                        "cardinality": 2}}, "outputs": ["s"]}).shapes()
