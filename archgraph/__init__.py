"""archgraph: neural networks as declarative graphs that grow and shrink while they learn.

>>> import archgraph
>>> g = archgraph.load("examples/seeds/tiny_cnn.yaml")   # doctest: +SKIP
>>> m = archgraph.build(g)                               # doctest: +SKIP

Names that need torch are imported on first use, so reading and validating graphs stays fast.
"""
from __future__ import annotations

import importlib

from .errors import ArchgraphError, GraphError, RuleError, YamlError
from .graph import Graph
from .format.yaml_io import dumps, load, loads, save

__version__ = "0.1.0"

#: public name -> module that defines it (some modules arrive with later features)
_LAZY = {
    "build": "archgraph.fx.builder",
    "Network": "archgraph.fx.network",
    "apply": "archgraph.rules.base",
    "rewrite": "archgraph.fx.materialise",
    "transfer": "archgraph.fx.apply_plan",
    "prune": "archgraph.fx.magnitude",
    "grow": "archgraph.train",
    "replay": "archgraph.history.run",
    "from_module": "archgraph.interop.importer",
    "export_onnx": "archgraph.interop.export",
    "export_python": "archgraph.interop.export",
    "save_weights": "archgraph.fx.weights",
    "load_weights": "archgraph.fx.weights",
    "render_graph": "archgraph.history.render",
    "import_torchvision": "archgraph.compat",
}


def __getattr__(name: str):
    if name == "methods":   # the subpackage (archgraph.methods.attach), imported on first use
        value = importlib.import_module("archgraph.methods")
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'archgraph' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["ArchgraphError", "Graph", "GraphError", "RuleError", "YamlError", "dumps", "load", "loads", "save",
           *_LAZY]
