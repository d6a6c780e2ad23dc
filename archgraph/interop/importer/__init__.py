"""``nn.Module`` -> (Graph, weights): trace with torch.fx, then convert each fx node to graph nodes.

The module is traced in eval mode and run once on a random input, so every fx node has a concrete value: tensors
give their shapes (each converted node is checked against them), and the Python values a forward computes from
shapes (``x.size()``, ``c // groups``) become constants. Each fx node then maps to a graph value:

* a graph node (or input) holding the tensor in the graph's layout (``N, C, H, W`` or ``N, F``);
* a *view* of one, which needs no node of its own: channels-last (``x.permute(0, 2, 3, 1)``), so ConvNeXt's
  ``permute -> LayerNorm -> Linear -> GELU -> Linear -> permute`` becomes ``layernorm -> conv2d 1x1 -> gelu ->
  conv2d 1x1``; or the grouped ``[N, g, C/g, H, W]`` view of a channel shuffle and its transpose, which becomes one
  ``channel_shuffle`` node when it is flattened back;
* the pieces of a ``chunk``/``split`` along channels (a ``slice`` node per piece that is used);
* a parameter read by ``get_attr`` (a ``scale`` node where it multiplies a tensor per channel).

Anything else raises :class:`~archgraph.errors.ConversionError` naming the op and the fx node: an import is exact
or it fails. Weights are keyed ``<node_id>.<param>``; node ids are the fx node names (module paths with ``_``).

The package, module by module: :mod:`.converter` (:func:`from_module` and the :class:`Converter`, a
``torch.fx.Interpreter`` with a method per fx node kind), :mod:`.table` (the one handler table: ``@module(cls)``,
``@function(fn)``, ``@method(name)``, :func:`register_module`), :mod:`.builder` (the graph builder the Hugging Face
walkers share), :mod:`.trace`, :mod:`.values`, and the handlers by family in :mod:`.handlers`, each imported once,
here.

>>> import torch, archgraph
>>> graph, weights = archgraph.from_module(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()),
...                                        input_shape=(3, 8, 8))
>>> list(graph.nodes), sorted(weights)
(['n0', 'n1'], ['n0.bias', 'n0.weight'])
"""
from .builder import GraphBuilder
from .converter import Converter, from_module
from .handlers import (
                       arithmetic,
                       channels_last,
                       convs,
                       hand_attention,
                       linears,
                       norms,
                       pooling,
                       regularizers,
                       sequences,
                       split_attention,
                       timm_layers,
                       views,
                       windows,
)
from .table import HandlerTable, function, functions_of, handlers, method, module, modules_of, register_module
from .values import Param, Val

#: the handler modules, each registering its handlers in the table as it is imported (once, here)
HANDLER_MODULES = (arithmetic, channels_last, convs, hand_attention, linears, norms, pooling, regularizers, sequences,
                   split_attention, timm_layers, views, windows)

__all__ = ["Converter", "GraphBuilder", "HandlerTable", "Param", "Val", "from_module", "function", "functions_of",
           "handlers", "method", "module", "modules_of", "register_module"]
