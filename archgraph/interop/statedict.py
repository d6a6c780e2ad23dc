"""Weights back under the original module's names: ``archgraph export GRAPH --weights W --state-dict OUT
--like torchvision:NAME|timm:NAME``.

A graph imported from a torchvision or timm model keeps that model's structure while it grows or is pruned (node
ids, ops and wiring stay; widths change). The correspondence between a node's tensors (``<node_id>.<param>``) and
the original module's parameter names is found the way the importer made it: the original model (built for the
graph's input and output sizes) is given a distinct random value in every entry, imported again, and each imported
tensor is matched to the original tensor it was copied from. A node whose tensors the importer computed rather than
copied (a folded constant, q/k/v split out of one projection), a node the graph no longer has or that changed op or
inputs, and a node the graph added, break the correspondence: the error names it.

>>> from archgraph.interop.statedict import original_names      # doctest: +SKIP
>>> names = original_names(graph, "torchvision:resnet18")         # doctest: +SKIP
>>> names["conv1.weight"]                                         # doctest: +SKIP
'conv1.weight'
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..errors import ConfigError
from ..graph import Graph
from .equivalence import timm_model, torchvision_model
from .importer import from_module


def like_model(spec: str, graph: Graph, seed: int = 0) -> torch.nn.Module:
    """The original model ``spec`` (``torchvision:NAME`` or ``timm:NAME``) built with ``graph``'s number of
    classes (its output's first size), randomly initialised, in eval mode."""
    source, _, name = spec.partition(":")
    if source not in ("torchvision", "timm") or not name:
        raise ConfigError(f"--like {spec!r} must be torchvision:NAME or timm:NAME", field="like")
    outs = graph.shapes()[graph.outputs[0]] if len(graph.outputs) == 1 else None
    classes = int(outs[0]) if outs else None
    try:
        if source == "timm":
            return timm_model(name, num_classes=classes, seed=seed)
        return torchvision_model(name, seed=seed, **({} if classes is None else {"num_classes": classes}))
    except ImportError as err:
        raise ConfigError(f"cannot build {spec}: {err}", field="like") from None
    except (ValueError, RuntimeError, KeyError) as err:
        raise ConfigError(f"cannot build {spec}: {err}", field="like") from None


def original_names(graph: Graph, like: str) -> dict[str, str]:
    """``{"<node_id>.<param>": original name}`` for every tensor of ``graph``, or a :class:`ConfigError` naming the
    node that breaks the correspondence with the original model ``like``."""
    model = like_model(like, graph)
    _fill_distinct(model)
    original = model.state_dict()
    base, weights = _import_like(model, graph, like)
    names = _match_by_value(original, weights)
    names.update(_match_integer_buffers(names, original, weights))
    _same_structure(graph, base, like)
    for key in weights:
        if key not in names:
            node = key.partition(".")[0]
            raise ConfigError(f"the importer computed tensor '{key}' of {like} rather than copying one of its "
                              f"parameters, so it has no name in the original module", node=node, field="like")
    return names


def _fill_distinct(model: torch.nn.Module) -> None:
    """A distinct random value in every floating-point entry of ``model``'s state dict, so that each imported tensor
    can be traced back to the entry it was copied from."""
    gen = torch.Generator().manual_seed(12345)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype))


def _import_like(model: torch.nn.Module, graph: Graph, like: str) -> tuple[Graph, dict[str, torch.Tensor]]:
    """``model`` imported at ``graph``'s input size: the graph and its weights."""
    if len(graph.inputs) != 1:
        raise ConfigError("--like needs a graph with one input", field="like")
    shape = graph.shape(next(iter(graph.inputs)))   # a TokenShape (with its vocab) for token ids
    vocab = getattr(shape, "vocab", None)
    try:
        base, weights = from_module(model, input_shape=tuple(shape), vocab=vocab)
    except Exception as err:  # the model does not import at this input size: say so
        raise ConfigError(f"{like} does not import at the graph's input size {list(shape)}: {err}",
                          field="like") from None
    return base, weights


def _value_key(t: torch.Tensor) -> tuple[tuple[int, ...], bytes]:
    return tuple(t.shape), t.detach().cpu().numpy().tobytes()


def _match_by_value(original: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Each floating-point imported tensor's original name: the original entry holding the same values."""
    by_value: dict[tuple[tuple[int, ...], bytes], str] = {}
    for key, t in original.items():
        if t.is_floating_point():
            by_value.setdefault(_value_key(t), key)
    names: dict[str, str] = {}
    for key, t in weights.items():
        found = by_value.get(_value_key(t)) if t.is_floating_point() else None
        if found is not None:
            names[key] = found
    return names


def _match_integer_buffers(names: Mapping[str, str], original: Mapping[str, torch.Tensor],
                           weights: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Names for the tensors not matched by value (integer buffers such as ``num_batches_tracked``): the one entry
    of that name and shape beside a matched tensor of the same node."""
    found: dict[str, str] = {}
    for key in weights:
        if key in names:
            continue
        node, _, param = key.partition(".")
        prefixes = {v.rsplit(".", 1)[0] for k, v in names.items() if k.partition(".")[0] == node and "." in v}
        guess = [f"{p}.{param.rsplit('.', 1)[-1]}" for p in prefixes]
        guess = [g for g in guess if g in original and tuple(original[g].shape) == tuple(weights[key].shape)]
        if len(guess) == 1:
            found[key] = guess[0]
    return found


def _same_structure(graph: Graph, base: Graph, like: str) -> None:
    """Every node of the graph is the original's node of that id, with the same op and inputs (widths may
    differ), and the original has no node the graph lost."""
    for nid, node in graph.nodes.items():
        old = base.nodes.get(nid)
        if old is None:
            raise ConfigError(f"node is not one of {like}'s (added by a rewrite?): it has no original name",
                              node=nid, field="like")
        if old.op != node.op or list(old.inputs) != list(node.inputs):
            raise ConfigError(f"node is {node.op} reading {list(node.inputs)}, but in {like} it is {old.op} reading "
                              f"{list(old.inputs)}", node=nid, field="like")
    for nid in base.nodes:
        if nid not in graph.nodes:
            raise ConfigError(f"{like}'s node is not in the graph (removed by a rewrite?)", node=nid, field="like")


def to_original(graph: Graph, weights: Mapping[str, torch.Tensor], like: str) -> dict[str, torch.Tensor]:
    """``weights`` (keys ``<node_id>.<param>``) under the original module's parameter names."""
    names = original_names(graph, like)
    out = {}
    for key, tensor in weights.items():
        if key not in names:
            raise ConfigError(f"tensor '{key}' has no counterpart in {like}", node=key.partition(".")[0],
                              field="like")
        out[names[key]] = tensor
    return out
