"""Every example seed builds into the network a person would write by hand.

For each seed there is a plain eager ``nn.Module`` below, written from the architecture (not generated from the
graph). Its submodules are named by node id, so the weights of ``archgraph.build(g)`` load into it by
``<node_id>.<param>`` with ``strict=True``. Both run in float64 on the same random weights, buffers and inputs, in
eval mode and in train mode (same dropout masks from the same RNG seed), and must agree to 1e-9. ``g.params`` must
equal PyTorch's own parameter count and ``g.macs`` the MACs counted by forward hooks on the hand-written convs and
linears.
"""
from __future__ import annotations

import re

import pytest
import torch
from conftest import ROOT
from reference_models import HAND_WRITTEN  # the hand-written twins of every seed
from torch import nn

import archgraph
from archgraph.ops.registry import OPS

SEED_DIR = ROOT / "examples" / "seeds"


def test_every_seed_has_a_hand_written_module():
    assert {p.stem for p in SEED_DIR.glob("*.yaml")} == set(HAND_WRITTEN)


# ---- helpers ----------------------------------------------------------------------------------------------------

def randomise(module: nn.Module, seed: int) -> None:
    """Random weights and BN statistics, so eval mode does not hide a wrong buffer or a swapped parameter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                tensor.fill_(7)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen, dtype=tensor.dtype) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen, dtype=tensor.dtype) * 0.5)


def hook_macs(module: nn.Module, x: torch.Tensor) -> int:
    """MACs per sample of the convs and linears, counted from the shapes seen by forward hooks."""
    total = 0

    def conv(m: nn.Conv2d, inputs, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += m.out_channels * (m.in_channels // m.groups) * kh * kw * out.shape[2] * out.shape[3]

    def transposed(m: nn.ConvTranspose2d, inputs, out):   # every weight entry at every input position
        nonlocal total
        kh, kw = m.kernel_size
        total += m.in_channels * (m.out_channels // m.groups) * kh * kw * inputs[0].shape[2] * inputs[0].shape[3]

    def recurrent(m: nn.RNNBase, inputs, out):   # every weight_ih / weight_hh entry at every step
        nonlocal total
        total += inputs[0].shape[1] * sum(p.numel() for n, p in m.named_parameters() if n.startswith("weight"))

    def linear(m: nn.Linear, inputs, out):
        nonlocal total
        total += m.in_features * m.out_features * (out.shape[1] if out.dim() == 3 else 1)  # every token

    def attention(m, inputs, out):   # the T^2 scores and the T^2 weighted sum of values, every head
        nonlocal total
        total += 2 * out.shape[1] ** 2 * out.shape[2]

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.ConvTranspose2d):
            handles.append(m.register_forward_hook(transposed))
        elif isinstance(m, nn.RNNBase):
            handles.append(m.register_forward_hook(recurrent))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear))
        elif type(m).__name__ in ("SelfAttention", "Attention"):   # D = num_heads * head_dim here
            handles.append(m.register_forward_hook(attention))
    try:
        with torch.no_grad():
            module.eval()(x[:1])
    finally:
        for h in handles:
            h.remove()
    return total


def inputs(shape, batch: int, seed=None, dtype=torch.float64):
    """A batch for a seed's input: token ids for ``{"shape", "vocab"}``, else random floats."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    if isinstance(shape, dict):
        return torch.randint(0, shape["vocab"], (batch, *shape["shape"]), generator=gen)
    return torch.randn(batch, *shape, dtype=dtype, generator=gen)


def pair(name: str):
    g = archgraph.load(SEED_DIR / f"{name}.yaml")
    built = archgraph.build(g, dtype=torch.float64, seed=3)
    cls, shape = HAND_WRITTEN[name]
    ref = cls().to(torch.float64)
    randomise(built, seed=11)
    ref.load_state_dict(built.state_dict(), strict=True)  # copy by <node_id>.<param>; key sets must match
    return g, built, ref, shape


def sample(g, n: int, seed: int) -> torch.Tensor:
    """``n`` random inputs of the seed's (only) input: token ids below its vocabulary, or float64 values."""
    (shape,) = g.inputs.values()
    gen = torch.Generator().manual_seed(seed)
    if getattr(shape, "vocab", None) is not None:
        return torch.randint(0, shape.vocab, (n, *shape), generator=gen)
    return torch.randn(n, *shape, dtype=torch.float64, generator=gen)


# ---- the checks -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_forward_equals_hand_written_in_eval_mode(name):
    g, built, ref, shape = pair(name)
    x = inputs(shape, 5, 1)
    built.eval(), ref.eval()
    with torch.no_grad():
        out, want = built(x), ref(x)
    assert out.shape == want.shape == (5, *g.shapes()[g.outputs[0]])
    assert (out - want).abs().max().item() <= 1e-9


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_forward_equals_hand_written_in_train_mode(name):
    g, built, ref, shape = pair(name)
    x = inputs(shape, 6, 2)
    built.train(), ref.train()
    torch.manual_seed(123)  # dropout draws its masks from the global RNG in the same order in both modules
    out = built(x)
    torch.manual_seed(123)
    want = ref(x)
    assert (out - want).abs().max().item() <= 1e-9
    # batch statistics moved the running buffers identically
    mine, theirs = built.state_dict(), ref.state_dict()
    for key in mine:
        assert torch.equal(mine[key], theirs[key]) or (mine[key] - theirs[key]).abs().max().item() <= 1e-12, key
    # and the gradients agree too
    out.square().sum().backward()
    want.square().sum().backward()
    grads = dict(ref.named_parameters())
    for key, p in built.named_parameters():
        assert (p.grad - grads[key].grad).abs().max().item() <= 1e-9, key


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_dropout_is_really_on_in_train_mode(name):
    g, built, ref, shape = pair(name)
    if not any(n.op == "dropout" for n in g.nodes.values()):
        pytest.skip("no dropout in this seed")
    x = inputs(shape, 6, 2)
    built.train()
    torch.manual_seed(1)
    a = built(x)
    torch.manual_seed(2)
    b = built(x)
    assert (a - b).abs().max().item() > 1e-6  # different masks give different outputs: the train check is not vacuous


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_params_and_macs_equal_pytorch_counts(name):
    g, built, ref, shape = pair(name)
    assert g.params == sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in built.parameters())
    x = inputs(shape, 2)
    assert g.macs == hook_macs(ref, x) == hook_macs(built, x)


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_state_dict_keys_are_node_id_dot_param(name):
    g, built, ref, _ = pair(name)
    expected = set()
    for nid, node in g.nodes.items():
        for param in OPS[node.op].layout(node, g.input_shapes(nid)):
            expected.add(f"{nid}.{param}")
    assert set(built.state_dict()) == expected == set(ref.state_dict())
    # one submodule per parametrised node, named by its id
    assert {name for name, _ in built.named_children()} >= {k.split(".")[0] for k in expected}


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_generated_code_is_readable(name):
    g, built, _, _ = pair(name)
    code = built.code
    for nid, node in g.nodes.items():
        if node.op == "identity":
            continue
        assert re.search(rf"^\s+{nid} = ", code, re.M), f"no line assigns '{nid}' in:\n{code}"
        if OPS[node.op].module is not None:
            assert f"self.{nid}(" in code
    for name_ in g.inputs:
        assert f"def forward(self, {name_}" in code
    assert len(code.splitlines()) < 3 * len(g.nodes) + 10
