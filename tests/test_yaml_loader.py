"""The safe YAML loader's own behaviour on valid input: merge keys, YAML 1.2 booleans, aliases below the limit."""
import pytest

import archgraph
from archgraph.errors import YamlError
from archgraph.format.yaml_io import MAX_DEPTH, MAX_EXPANDED_NODES, parse_yaml

MERGE = """
archgraph: 1
inputs: {image: [3, 8, 8]}
nodes:
  c1: &conv {op: conv2d, in: image, out_channels: 4, kernel_size: 3, padding: 1, bias: false}
  c2: {<<: *conv, in: c1, out_channels: 8}
outputs: [c2]
"""


def test_merge_keys_work_and_explicit_keys_win():
    g = archgraph.loads(MERGE)
    assert g.nodes["c2"].inputs == ("c1",) and g.nodes["c2"].out_channels == 8
    assert g.nodes["c2"].kernel_size == 3 and g.nodes["c2"].bias is False


def test_booleans_are_yaml_1_2():
    assert parse_yaml("a: [true, false, True, FALSE, on, off, yes, no, y, n]") == {
        "a": [True, False, True, False, "on", "off", "yes", "no", "y", "n"]}
    g = archgraph.loads("archgraph: 1\ninputs: {x: [4]}\nnodes:\n  on: {op: linear, in: x, out_features: 2, "
                        "bias: false}\noutputs: [on]\n")
    assert list(g.nodes) == ["on"] and g.nodes["on"].bias is False


def test_shared_aliases_below_the_limit_are_fine():
    items = ", ".join(["*a"] * 50)
    data = parse_yaml(f"a: &a [1, 2, 3]\nb: [{items}]\n")
    assert len(data["b"]) == 50 and data["b"][0] == [1, 2, 3]
    assert MAX_EXPANDED_NODES >= 100_000  # far above any real graph (a node is about 10 values)


def test_nesting_up_to_the_limit_is_fine_and_past_it_is_refused():
    ok = "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert parse_yaml(ok)["a"] is not None
    with pytest.raises(YamlError, match="nests deeper"):
        parse_yaml("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))


def test_keys_equal_after_construction_are_duplicates():
    with pytest.raises(YamlError, match="duplicate key"):
        parse_yaml("a: {1: x, 0x1: y}")
