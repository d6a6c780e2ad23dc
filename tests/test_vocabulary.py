"""One strict vocabulary for every field of every op: a field takes a string, a boolean or a float only where its
JSON Schema says it does (``conv_transpose2d`` refuses ``bias: "yes"`` exactly as ``conv2d`` does), and a graph is
read-only once validated."""
import copy
import pickle

import pytest
from strategies import EXAMPLE_NODES

from archgraph import loads
from archgraph.ops.spec import NODE_KINDS

#: a value of each JSON type YAML gives as a scalar, each one a lax validator would turn into another type ("1" and
#: 1.0 read as true or 1, True as 1): no enum holds "1", and 1.0 is no int in strict mode
PROBES = {"string": "1", "boolean": True, "number": 1.0}


def _types(schema: dict, defs: dict) -> set[str]:
    """The JSON types a field's schema allows (``integer`` counts as ``number`` only for whole values)."""
    if "$ref" in schema:
        return _types(defs[schema["$ref"].split("/")[-1]], defs)
    found: set[str] = set()
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            found |= _types(sub, defs)
    kind = schema.get("type")
    found |= set(kind if isinstance(kind, list) else [kind] if kind else [])
    if "const" in schema or "enum" in schema:
        values = schema.get("enum", [schema.get("const")])
        found |= {"string" for v in values if isinstance(v, str)}
    return found


def _cases():
    for kind in NODE_KINDS:
        op = kind.model_fields["op"].default
        for name in kind.model_fields:
            if name not in ("op", "inputs"):
                yield pytest.param(kind, name, id=f"{op}.{name}")


@pytest.mark.parametrize("kind,name", list(_cases()))
def test_every_field_takes_only_its_own_scalar_types(kind, name):
    op = kind.model_fields["op"].default
    schema = kind.model_json_schema()
    allowed = _types(schema["properties"][name], schema.get("$defs", {}))
    inputs, fields = EXAMPLE_NODES[op]
    base = {"op": op, "in": "x", **fields}
    for json_type, value in PROBES.items():
        data = {**base, name: value}
        try:
            kind.model_validate(data)
            accepted, errors = True, []
        except ValueError as e:
            accepted, errors = False, e.errors()
        if json_type not in allowed:
            assert not accepted, f"{op}.{name} accepted {value!r} though its schema allows only {sorted(allowed)}"
        elif json_type != "string":   # a string the schema allows is one of an enum's words, not "3"
            # allowed by type: refused, if at all, by a rule across fields (exactly one of size / scale_factor ...)
            assert accepted or all(err["type"] == "value_error" for err in errors), (op, name, value, errors)


def test_the_issue_example_bias_yes_is_refused_by_every_conv():
    for op in ("conv2d", "conv_transpose2d"):
        with pytest.raises(Exception, match="bias"):
            loads(f"archgraph: 1\ninputs: {{x: [3, 8, 8]}}\nnodes: {{c: {{op: {op}, in: x, out_channels: 4, "
                  f"kernel_size: 3, bias: 'yes'}}}}\noutputs: [c]\n")


GRAPH = """\
archgraph: 1
inputs: {x: [4]}
nodes:
  fc1: {op: linear, in: x, out_features: 3}
  fc2: {op: linear, in: fc1, out_features: 2}
outputs: [fc2]
"""


def test_a_validated_graph_is_read_only():
    g = loads(GRAPH)
    before = g.shapes()
    with pytest.raises(TypeError, match="read-only"):
        g.nodes.pop("fc1")
    with pytest.raises(TypeError, match="read-only"):
        g.nodes["fc3"] = g.nodes["fc1"]
    with pytest.raises(TypeError, match="read-only"):
        del g.inputs["x"]
    with pytest.raises(TypeError, match="read-only"):
        g.nodes.update({})
    with pytest.raises(AttributeError):
        g.outputs.append("fc1")
    with pytest.raises(Exception):
        g.nodes = {}   # the model itself is frozen
    assert g.shapes() == before and list(g.nodes) == ["fc1", "fc2"] and g.outputs == ("fc2",)


def test_a_read_only_graph_still_copies_compares_and_rebuilds():
    g = loads(GRAPH)
    assert pickle.loads(pickle.dumps(g)) == g and copy.deepcopy(g) == g
    nodes = dict(g.nodes)   # a mutable copy to build a new graph from
    nodes.pop("fc2")
    g2 = g.replace(nodes=nodes, outputs=["fc1"])
    assert list(g2.nodes) == ["fc1"] and list(g.nodes) == ["fc1", "fc2"]
    assert g.to_dict()["outputs"] == ["fc2"] and g.nodes == {"fc1": g.nodes["fc1"], "fc2": g.nodes["fc2"]}
