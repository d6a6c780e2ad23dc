"""Graph -> ``torch.fx.GraphModule``, built directly from the graph (no tracing of a hand-written module).

One submodule per node that holds parameters or buffers (or depends on train/eval mode, like dropout), named by
node id, so ``state_dict()`` keys are ``<node_id>.<param>``; stateless ops become ``call_function`` nodes, so
``module.code`` reads like the forward a person would write.

>>> import archgraph
>>> m = archgraph.build(archgraph.load("examples/seeds/mlp.yaml"))  # doctest: +SKIP
"""
from __future__ import annotations

import operator
import zlib
from types import SimpleNamespace
from typing import Callable, Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..graph import Graph, tied_parameters
from ..ops.registry import CHAIN, LIST, OPS
from ..topology import topological_order
from . import layers as extra

TORCH = SimpleNamespace(torch=torch, nn=nn, F=F, extra=extra)


def node_seed(seed: int, node_id: str) -> int:
    """Initialisation seed of one node: fixed by the run's seed and the node id, so growing one layer leaves the
    initial weights of every other layer as they were."""
    return zlib.crc32(f"{seed}:{node_id}".encode()) & 0x7FFFFFFF


def _make_module(graph: Graph, node_id: str, seed: int) -> Optional[nn.Module]:
    node = graph.nodes[node_id]
    opdef = OPS[node.op]
    if opdef.build.module is None:
        return None
    # seed only the CPU generator modules initialise from: torch.manual_seed would also queue a seed for every
    # accelerator backend (and format a stack trace for each), which made building a graph several times slower
    torch.default_generator.manual_seed(node_seed(seed, node_id))
    return opdef.build.module(TORCH, node, graph.input_shapes(node_id))


def build(graph: Graph, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
          seed: int = 0) -> fx.GraphModule:
    """Build ``graph`` into a ``torch.fx.GraphModule`` on ``device`` with floating tensors in ``dtype``.

    Initialisation is deterministic: the same graph and seed give the same weights on every device.
    The module takes the graph's inputs positionally, in the order they are declared, and returns the output
    tensor (or a tuple when the graph has several outputs).
    """
    with torch.random.fork_rng(devices=[]):
        return _build(graph, device, dtype, seed)


def _build(graph: Graph, device: torch.device | str | None, dtype: torch.dtype | None, seed: int) -> fx.GraphModule:
    modules: dict[str, nn.Module] = {}
    g = fx.Graph()
    env: dict[str, fx.Node] = {}
    for name in graph.inputs:
        env[name] = g.placeholder(name)
    for nid in topological_order(graph):
        node = graph.nodes[nid]
        opdef = OPS[node.op]
        args = [env[i] for i in node.inputs]
        if opdef.build.passthrough:
            env[nid] = args[0]
            continue
        module = _make_module(graph, nid, seed)
        if module is not None:
            modules[nid] = module
            if opdef.build.tuple_output:   # nn.LSTM / nn.GRU return (output, state)
                call = g.create_node("call_module", nid, tuple(args), {}, name=f"{nid}_all")
                env[nid] = g.create_node("call_function", operator.getitem, (call, 0), {}, name=nid)
                continue
            env[nid] = g.create_node("call_module", nid, tuple(args), {}, name=nid)
            continue
        function = opdef.build.function
        assert function is not None, f"op {node.op}: the registry gives no module, function or passthrough"
        target, kwargs = function(TORCH, node)
        if opdef.build.packing == LIST:
            env[nid] = g.create_node("call_function", target, (args,), kwargs, name=nid)
        elif opdef.build.packing == CHAIN:
            env[nid] = _chain(g, target, args, nid)
        else:
            env[nid] = g.create_node("call_function", target, tuple(args), kwargs, name=nid)
    for key, source in tied_parameters(graph).items():   # one tensor for both (a tied LM head)
        (nid, _, name), (src, _, src_name) = key.partition("."), source.partition(".")
        setattr(modules[nid], name, getattr(modules[src], src_name))
    outs = [env[o] for o in graph.outputs]
    g.output(outs[0] if len(outs) == 1 else tuple(outs))
    gm = fx.GraphModule(modules, g, class_name=class_name(graph.name))
    if device is not None or dtype is not None:
        gm = gm.to(device=device, dtype=dtype)
    return gm


def _chain(g: fx.Graph, target: Callable, args: list[fx.Node], nid: str) -> fx.Node:
    if len(args) == 1:
        return args[0]
    acc = args[0]
    for i, arg in enumerate(args[1:], 1):
        name = nid if i == len(args) - 1 else f"{nid}_{i}"
        acc = g.create_node("call_function", target, (acc, arg), {}, name=name)
    return acc


def class_name(name: str) -> str:
    """The Python class name of the module built from a graph named ``name`` (the generated code's class, and the
    class ``export --python`` writes): its words capitalised and joined, non-alphanumerics dropped, ``Graph`` for
    none, a leading ``G`` when it would start with a digit."""
    words = "".join(ch if ch.isalnum() else " " for ch in name).split()
    cls = "".join(w[:1].upper() + w[1:] for w in words) or "Graph"
    return cls if cls[0].isalpha() else "G" + cls
