"""The graph under construction, shared by the fx importer (:class:`~.converter.Converter`) and the Hugging Face
walkers (:mod:`archgraph.interop.hf`): each node is validated and its shape inferred as it is added, so an error
names the node that first goes wrong.

>>> from archgraph.interop.importer.builder import GraphBuilder
>>> b = GraphBuilder()
>>> x = b.input("x", [4], (4,))
>>> b.add("fc", "linear", [x], out_features=2), b.shapes["fc"]
('fc', (2,))
>>> graph, weights = b.finish("tiny", ["fc"])
>>> graph.nodes["fc"].out_features
2
"""
from __future__ import annotations

import keyword
import re
from typing import Any, Callable, Optional, Sequence

import torch
from pydantic import ValidationError

from ...errors import ArchgraphError, ConversionError
from ...graph import RESERVED_IDS, Graph
from ...ops.registry import OPS
from ...ops.spec import KIND_BY_OP


def identifier(text: str) -> str:
    """A valid node id from an fx/module name: 'features.0' -> 'features_0', '0' -> 'n0', 'forward' -> 'forward_1'."""
    ident = re.sub(r"\W", "_", text).lstrip("_")
    if not ident or ident[0].isdigit():
        ident = "n" + ident
    if keyword.iskeyword(ident) or ident in RESERVED_IDS:
        ident += "_1"
    return ident


class GraphBuilder:
    """Inputs, nodes (the format's dicts), their shapes and weights, in the making. ``copy``: weights are copied
    (``False``: they share the source's tensors, for a model read from disk and then dropped)."""

    def __init__(self, copy: bool = True):
        self.copy = copy
        self.inputs: dict[str, Any] = {}
        self.nodes: dict[str, dict] = {}
        self.shapes: dict[str, Any] = {}
        self.weights: dict[str, torch.Tensor] = {}

    def input(self, name: str, spec, shape) -> str:
        """A graph input ``name`` (``spec`` as the format writes it, ``shape`` as shapes are inferred)."""
        self.inputs[name] = spec
        self.shapes[name] = shape
        return name

    def add(self, nid: str, op: str, inputs: Sequence[str], weights: Optional[dict] = None,
            fail: Optional[Callable[[str], Exception]] = None, **fields) -> str:
        """Add node ``nid`` (validated, its shape inferred now) and its weights; returns ``nid``. An invalid node
        raises ``fail(detail)`` (default: a :class:`~archgraph.errors.ConversionError` naming the node)."""
        data = {"op": op, "in": list(inputs), **fields}
        try:
            spec = KIND_BY_OP[op].model_validate(data)
            shape = tuple(OPS[op].shape(spec, [self.shapes[i] for i in spec.inputs]))
        except ValidationError as err:
            first = err.errors()[0]
            detail = f" field {'.'.join(map(str, first['loc']))}: {first['msg']}"
        except ArchgraphError as err:
            detail = f": {err.message}"
        else:
            self.nodes[nid] = data
            self.shapes[nid] = shape
            for key, tensor in (weights or {}).items():
                tensor = tensor.detach()
                self.weights[f"{nid}.{key}"] = tensor.clone().contiguous() if self.copy else tensor.contiguous()
            return nid
        if fail is not None:
            raise fail(detail)
        raise ConversionError(f"node '{nid}' ({op}){detail}", node=nid)

    def finish(self, name: str, outputs: Sequence[str], keep: Optional[set[str]] = None,
               ) -> tuple[Graph, dict[str, torch.Tensor]]:
        """The graph and its weights; ``keep``: only these nodes (and their weights)."""
        nodes = self.nodes if keep is None else {k: v for k, v in self.nodes.items() if k in keep}
        weights = self.weights if keep is None else {k: v for k, v in self.weights.items()
                                                     if k.partition(".")[0] in keep}
        data = {"archgraph": 1, "name": name, "inputs": self.inputs, "nodes": nodes, "outputs": list(outputs)}
        try:
            return Graph.model_validate(data), dict(weights)
        except ValidationError as err:
            raise ConversionError(f"the converted graph is not valid: {err.errors()[0]['msg']}") from None
