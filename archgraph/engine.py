"""The rewrite engine: apply a rule to a graph, and to a live module and its optimizer.

>>> import archgraph, torch
>>> from archgraph import rules
>>> g = archgraph.load("examples/seeds/tiny_cnn.yaml")
>>> m = archgraph.build(g)
>>> opt = torch.optim.Adam(m.parameters())
>>> g2, m2 = archgraph.rewrite(g, m, rules.AddFilters(node="c1", count=4, init="preserve"), optimizer=opt)
>>> g2.nodes["c1"].out_channels, m2.c1.weight.shape[0], opt.param_groups[0]["params"][0] is m2.c1.weight
(8, 8, True)
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import torch

from .build import build
from .graph import Graph
from .rules.base import Rewrite, Rule, parse
from .transfer import transfer, transfer_optimizer

RuleLike = Union[Rule, Mapping[str, Any]]


def as_rule(rule: RuleLike) -> Rule:
    """A :class:`Rule`, or one made from a logged ``{"rule": name, "args": {...}}``."""
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, Mapping) and "rule" in rule:
        return parse(rule["rule"], rule.get("args") or {})
    raise TypeError(f"expected a rule (e.g. rules.AddFilters(...)) or {{'rule': name, 'args': {{...}}}}, "
                    f"got {type(rule).__name__}")


def apply(graph: Graph, rule: RuleLike) -> Rewrite:
    """Apply ``rule`` to ``graph``: the new graph and the transfer plan, no tensors touched.

    Raises :class:`~archgraph.errors.RuleError` (naming the rule, node and reason) when the rule cannot apply;
    ``graph`` is never changed.

    >>> import archgraph
    >>> from archgraph import rules
    >>> rw = archgraph.apply(archgraph.load("examples/seeds/mlp.yaml"), rules.AddFilters(node="fc1", count=8))
    >>> rw.graph.nodes["fc1"].out_features, rw.old.nodes["fc1"].out_features, rw.exact
    (40, 32, True)
    """
    return as_rule(rule).apply(graph)


def _device_dtype(module: torch.nn.Module):
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return None, None


def materialise(rw: Rewrite, module: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                seed: int = 0, device=None, dtype=None) -> torch.fx.GraphModule:
    """Build ``rw.graph`` on ``module``'s device and dtype (or those given; a module without floating tensors has
    neither), carry weights and buffers by ``rw.plan``, keep the train/eval mode and, with ``optimizer``, move its
    parameters and state onto the new module."""
    own_device, own_dtype = _device_dtype(module)
    device, dtype = device or own_device, dtype or own_dtype
    new = build(rw.graph, device=device, dtype=dtype, seed=seed)
    transfer(rw.plan, module, new)
    new.train(module.training)
    if optimizer is not None:
        transfer_optimizer(rw.plan, optimizer, module, new)
    return new


def rewrite(graph: Graph, module: torch.nn.Module, rule: RuleLike,
            optimizer: Optional[torch.optim.Optimizer] = None, seed: int = 0, device=None,
            dtype=None) -> tuple[Graph, torch.fx.GraphModule]:
    """Apply ``rule`` and return ``(new_graph, new_module)``; the new module carries every weight and buffer and
    ``optimizer`` (if given) now holds its parameters with their state remapped. ``seed`` initialises the
    entries that start random; ``device``/``dtype`` default to the module's. ``graph`` and ``module`` are left as
    they were."""
    rw = apply(graph, rule)
    return rw.graph, materialise(rw, module, optimizer, seed, device, dtype)
