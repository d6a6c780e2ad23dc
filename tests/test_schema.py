"""The committed JSON Schemas are the ones the models generate, and they accept the example seeds."""
import json

import jsonschema
import yaml

from archgraph.schemas import all_schemas, render
from conftest import ROOT, SEEDS


def test_committed_schemas_are_current():
    for name, schema in all_schemas().items():
        path = ROOT / "schemas" / name
        assert path.exists(), f"{path} missing: run 'make schemas'"
        assert path.read_text() == render(schema), f"{path} is stale: run 'make schemas'"


def test_seeds_validate_against_schema():
    schema = json.loads((ROOT / "schemas" / "graph.schema.json").read_text())
    for seed in SEEDS:
        jsonschema.validate(yaml.safe_load(seed.read_text()), schema)


def test_schema_rejects_unknown_field():
    schema = json.loads((ROOT / "schemas" / "graph.schema.json").read_text())
    bad = {"archgraph": 1, "inputs": {"x": [4]}, "outputs": ["fc"],
           "nodes": {"fc": {"op": "linear", "in": "x", "out_features": 2, "out_feature": 3}}}
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        return
    raise AssertionError("schema accepted a misspelled field")
