"""Every op of the format has every entry of the per-op registry, and the registry matches the spec union."""
import dataclasses

import pytest

from archgraph.ops.registry import OPS, OpDef, ROLES
from archgraph.ops.spec import KIND_BY_OP, NODE_KINDS


def test_registry_covers_exactly_the_spec_ops():
    assert set(OPS) == set(KIND_BY_OP)
    assert len(NODE_KINDS) == len(KIND_BY_OP)


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_has_every_entry(op):
    d = OPS[op]
    assert d.op == op and d.kind is KIND_BY_OP[op]
    for field in dataclasses.fields(OpDef):
        if field.name in ("module", "function", "passthrough"):
            continue
        assert callable(getattr(d, field.name)) or field.name in ("op", "kind"), field.name
    # exactly one way to build it
    assert [d.module is not None, d.function is not None, d.passthrough].count(True) == 1, op


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
