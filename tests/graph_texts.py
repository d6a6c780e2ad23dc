"""Small graph files shared by the tests, as YAML text (tests write them to disk, edit them, or load them)."""
from __future__ import annotations

import archgraph
from archgraph.graph import Graph

#: the smallest graph with a hidden layer: linear -> relu -> linear on a 4-vector
MLP = """
archgraph: 1
name: mlp
inputs: {x: [4]}
nodes:
  fc1: {op: linear, in: x, out_features: 3}
  act: {op: relu, in: fc1}
  fc2: {op: linear, in: act, out_features: 2}
outputs: [fc2]
"""


def mlp_named(name: str) -> Graph:
    """:data:`MLP` loaded, under the graph name ``name`` (set after loading, so any text goes through)."""
    return archgraph.loads(MLP).model_copy(update={"name": name})
