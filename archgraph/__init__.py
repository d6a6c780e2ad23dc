"""archgraph: neural networks as declarative graphs that grow and shrink while they learn.

>>> import archgraph
>>> g = archgraph.load("examples/seeds/tiny_cnn.yaml")   # doctest: +SKIP
>>> m = archgraph.build(g)                               # doctest: +SKIP

Names that need torch are imported on first use, so reading and validating graphs stays fast.
"""
from __future__ import annotations

import importlib
import sys
import types

from .errors import ArchgraphError, GraphError, RuleError, YamlError
from .graph import Graph
from .serialize import dumps, load, loads, save

__version__ = "0.1.0"

#: public name -> module that defines it (some modules arrive with later features)
_LAZY = {
    "build": "archgraph.build",
    "apply": "archgraph.engine",
    "rewrite": "archgraph.engine",
    "transfer": "archgraph.transfer",
    "prune": "archgraph.prune",
    "grow": "archgraph.train",
    "replay": "archgraph.history",
    "from_module": "archgraph.importer",
    "export_onnx": "archgraph.export",
    "export_python": "archgraph.export",
    "save_weights": "archgraph.weights",
    "load_weights": "archgraph.weights",
    "render_graph": "archgraph.render",
    "import_torchvision": "archgraph.compat",
}


class _CallableModule(types.ModuleType):
    """A submodule named like the function it defines (``archgraph.build``, ``archgraph.prune``,
    ``archgraph.transfer``). Importing it makes Python set the package attribute to the module, which would hide
    the function; calling the module calls the function instead, so ``archgraph.build(g)`` works whatever was
    imported first, and ``archgraph.build.node_seed`` still reaches the module."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        if type(value) is types.ModuleType and _LAZY.get(name) == value.__name__:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'archgraph' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["ArchgraphError", "Graph", "GraphError", "RuleError", "YamlError", "dumps", "load", "loads", "save",
           *_LAZY]
