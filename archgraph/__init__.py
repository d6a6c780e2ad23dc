"""archgraph: neural networks as declarative graphs that grow and shrink while they learn.

>>> import archgraph
>>> g = archgraph.load("examples/seeds/tiny_cnn.yaml")   # doctest: +SKIP
>>> m = archgraph.build(g)                               # doctest: +SKIP

Names that need torch are imported on first use, so reading and validating graphs stays fast; ``dir(archgraph)``
lists them all. The public API and its stability are in the README's "Python" table; every error class is in
:mod:`archgraph.errors` and exported here.
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    ArchgraphError,
    ConfigError,
    ConversionError,
    DistributedError,
    GraphError,
    HistoryError,
    PluginError,
    RuleError,
    TrialFailed,
    YamlError,
)
from .format.yaml_io import dumps, load, loads, save
from .graph import Graph

__version__ = "0.1.0"

#: public name -> module that defines it (some modules arrive with later features)
_LAZY = {
    "build": "archgraph.fx.builder",
    "Network": "archgraph.fx.network",
    "apply": "archgraph.rules.base",
    "Rewrite": "archgraph.rules.base",
    "Edit": "archgraph.rules.base",
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
}


def __getattr__(name: str) -> Any:
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


__all__ = ["ArchgraphError", "ConfigError", "ConversionError", "DistributedError", "GraphError", "HistoryError",
           "PluginError", "RuleError", "TrialFailed", "YamlError", "Graph", "dumps", "load", "loads", "save", *_LAZY]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
