"""The committed JSON Schemas are the ones the models generate, and they accept the example seeds."""
import json

import jsonschema
import pytest
import yaml

from archgraph.format.schemas import all_schemas, render
from conftest import ROOT, SEEDS


def test_committed_schemas_are_current():
    for name, schema in all_schemas().items():
        path = ROOT / "schemas" / name
        assert path.exists(), f"{path} missing: run 'make schemas'"
        assert path.read_text() == render(schema), f"{path} is stale: run 'make schemas'"


def graph_schema() -> dict:
    return json.loads((ROOT / "schemas" / "graph.schema.json").read_text())


def test_seeds_validate_against_schema():
    schema = graph_schema()
    for seed in SEEDS:
        jsonschema.validate(yaml.safe_load(seed.read_text()), schema)


@pytest.mark.parametrize("node", [{"op": "linear", "in": "x", "out_features": 2, "out_feature": 3},
                                  {"in": "x", "out_features": 2}],
                         ids=["a misspelled field", "a node without op"])
def test_schema_rejects(node):
    bad = {"archgraph": 1, "inputs": {"x": [4]}, "outputs": ["fc"], "nodes": {"fc": node}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, graph_schema())


def test_schema_requires_op_for_every_node_kind():
    """Editors pick the node kind by ``op`` (the discriminator), so every kind's schema must require it."""
    from archgraph.ops.spec import NODE_KINDS
    schema = graph_schema()
    defs = schema["$defs"]
    for kind in NODE_KINDS:
        assert defs[kind.__name__]["required"][0] == "op", kind.__name__
    node_schema = schema["properties"]["nodes"]["patternProperties"]
    (union,) = node_schema.values()
    assert union["discriminator"]["propertyName"] == "op"
    assert set(union["discriminator"]["mapping"]) == {k.model_fields["op"].default for k in NODE_KINDS}


def test_python_construction_needs_no_op():
    from archgraph.ops.spec import Conv2d, Linear
    assert Conv2d(inputs="x", out_channels=8, kernel_size=3).op == "conv2d"
    assert Linear.model_validate({"in": "x", "out_features": 2}).op == "linear"
