"""The committed JSON Schemas are the ones the models generate, and they accept the example seeds."""
import json

import jsonschema
import pytest
import yaml
from conftest import ROOT, SEEDS

from archgraph.format.schemas import all_schemas, render


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


MALFORMED = sorted((ROOT / "tests" / "malformed").glob("*.yaml"))


def _schema_verdict(data) -> bool:
    from archgraph.format.schemas import all_schemas
    try:
        jsonschema.validate(data, all_schemas()["graph.schema.json"])
    except jsonschema.ValidationError:
        return False
    return True


@pytest.mark.parametrize("path", SEEDS + MALFORMED, ids=[p.stem for p in SEEDS + MALFORMED])
def test_the_schema_and_the_validator_agree(path):
    """What the JSON Schema (an editor's view) refuses, ``validate`` refuses too: no silent conversion of
    ``out_channels: true`` or ``"16"``. (The validator also checks what a schema cannot: references, shapes.)"""
    import archgraph
    from archgraph.errors import ArchgraphError
    try:
        from archgraph.format.yaml_io import parse_yaml, read_text
        data = parse_yaml(read_text(path))  # refuses alias bombs, which yaml.safe_load would expand
        assert json.loads(json.dumps(data)) == data
    except Exception:
        pytest.skip("not YAML a schema can read (no JSON equivalent)")
    try:
        archgraph.load(path)
        loaded = True
    except ArchgraphError:
        loaded = False
    if not _schema_verdict(data):
        assert not loaded, f"the schema refuses {path.name} but validate accepts it"
    if path in SEEDS:
        assert loaded and _schema_verdict(data)
