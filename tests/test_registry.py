"""Every op of the format has every entry of the per-op registry, and the registry matches the spec union."""
import dataclasses

import pytest

from archgraph.ops.registry import OPS, OpDef, ROLES, channel_width
from archgraph.ops.spec import KIND_BY_OP, NODE_KINDS


def test_registry_covers_exactly_the_spec_ops():
    assert set(OPS) == set(KIND_BY_OP)
    assert len(NODE_KINDS) == len(KIND_BY_OP)


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_has_every_entry(op):
    d = OPS[op]
    assert d.op == op and d.kind is KIND_BY_OP[op]
    for name in ("shape", "channels", "layout", "params", "macs", "nonzero_macs", "resize", "nonneg", "identity",
                 "mixes"):
        assert callable(getattr(d, name)), name
    # exactly one way to build it
    assert [d.module is not None, d.function is not None, d.passthrough].count(True) == 1, op


@pytest.mark.parametrize("op", sorted(OPS))
def test_rewrite_facts_answer(op):
    from strategies import example_node
    g, nid = example_node(op)
    node, ins = g.nodes[nid], g.input_shapes(nid)
    d = OPS[op]
    width = channel_width(g.shapes()[nid])
    changes = d.resize(node, width)
    assert isinstance(changes, dict)
    assert node.replace(**changes) == node  # resizing to its own width changes nothing
    flags = [True] * len(node.inputs)
    assert isinstance(d.nonneg(node, flags), bool) and isinstance(d.nonneg(node, [False] * len(flags)), bool)
    assert isinstance(d.identity(node, flags), bool)
    assert isinstance(d.mixes(node, ins), bool)
    if d.identity(node, [False] * len(flags)):
        assert g.shapes()[nid] == ins[0], "an identity keeps its input's shape"
    if d.module is not None and d.layout(node, ins):
        assert d.identity(node, flags) is False  # layers with weights are never assumed to be identities


def test_resize_sets_widths():
    from archgraph.ops import spec as S
    conv = S.Conv2d.model_validate({"in": "x", "out_channels": 4, "kernel_size": 3})
    dw = S.Conv2d.model_validate({"in": "x", "out_channels": 4, "kernel_size": 3, "groups": 4})
    fc = S.Linear.model_validate({"in": "x", "out_features": 4})
    assert OPS["conv2d"].resize(conv, 6) == {"out_channels": 6}
    assert OPS["conv2d"].resize(dw, 6) == {"out_channels": 6, "groups": 6}
    assert OPS["linear"].resize(fc, 2) == {"out_features": 2}
    assert OPS["relu"].nonneg(None, [False]) and not OPS["gelu"].nonneg(None, [True])
    assert OPS["relu"].identity(None, [True]) and not OPS["relu"].identity(None, [False])
    assert OPS["add"].nonneg(None, [True, True]) and not OPS["add"].nonneg(None, [True, False])
    assert OPS["layernorm"].mixes(None, [(4,)]) and not OPS["batchnorm1d"].mixes(None, [(4,)])


def test_roles_are_known():
    from archgraph import loads
    g = loads("""
archgraph: 1
inputs: {x: [4, 6, 6]}
nodes:
  a: {op: conv2d, in: x, out_channels: 4, kernel_size: 3, padding: 1}
  b: {op: conv2d, in: a, out_channels: 4, kernel_size: 3, padding: 1, groups: 4}
  c: {op: conv2d, in: b, out_channels: 8, kernel_size: 1, groups: 2}
  f: {op: flatten, in: c}
outputs: [f]
""")
    roles = {nid: OPS[n.op].channels(n, g.input_shapes(nid)) for nid, n in g.nodes.items()}
    assert roles == {"a": "source", "b": "through", "c": "grouped", "f": "flatten"}
    assert set(roles.values()) <= set(ROLES)
