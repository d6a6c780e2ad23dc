"""Rewrites on live modules: build a rule's new graph version, carry its weights and buffers, and move the optimizer
over (the pure graph side is :func:`archgraph.rules.base.apply`).

>>> import archgraph, torch
>>> from archgraph import rules
>>> g = archgraph.load("examples/seeds/tiny_cnn.yaml")
>>> m = archgraph.build(g)
>>> opt = torch.optim.Adam(m.parameters())
>>> edit = archgraph.rewrite(g, m, rules.AddFilters(node="c1", count=4, init="preserve"), optimizer=opt)
>>> g2, m2 = edit                                  # or edit.graph, edit.state
>>> g2.nodes["c1"].out_channels, m2.c1.weight.shape[0], opt.param_groups[0]["params"][0] is m2.c1.weight
(8, 8, True)
>>> edit.exact, [r.name for r in edit.rules]
(True, ['add_filters'])
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Union

import torch

from ..errors import RuleError
from ..graph import Graph
from ..rules.base import Edit, Rewrite, RuleLike, apply
from .apply_plan import transfer, transfer_optimizer
from .builder import build
from .gradmax import gradmax, uses_gradmax

Device = Union[torch.device, str, None]
#: what ``add_filters init=gradmax`` reads: ``(inputs, targets)``
Batch = Any


def _device_dtype(module: torch.nn.Module) -> tuple[Optional[torch.device], Optional[torch.dtype]]:
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return None, None


def rebuild(graph: Graph, state: Mapping[str, torch.Tensor], like: torch.nn.Module) -> torch.fx.GraphModule:
    """``graph`` built on ``like``'s device and dtype and in its train/eval mode, holding ``state`` (every tensor
    of the new module, by key; a parameter keeps whether ``like``'s of the same key required grad): the module
    form of an edit made on a state dict (:func:`archgraph.prune` given a module)."""
    device, dtype = _device_dtype(like)
    new = build(graph, device=device, dtype=dtype)
    new.load_state_dict(dict(state))
    grads = {name: p.requires_grad for name, p in like.named_parameters()}
    for name, p in new.named_parameters():
        p.requires_grad_(grads.get(name, True))
    return new.train(like.training)


def materialise(rw: Rewrite, module: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                seed: int = 0, device: Device = None, dtype: Optional[torch.dtype] = None, batch: Batch = None,
                loss: Optional[Callable[..., torch.Tensor]] = None) -> torch.fx.GraphModule:
    """Build ``rw.graph`` on ``module``'s device and dtype (or those given; a module without floating tensors has
    neither), carry weights and buffers by ``rw.plan``, keep the train/eval mode and, with ``optimizer``, move its
    parameters and state onto the new module. A GradMax rewrite (``add_filters init=gradmax``) needs ``batch``:
    its new units' outgoing weights are chosen from the gradient on it (:func:`archgraph.fx.gradmax.gradmax`)."""
    if uses_gradmax(rw.rule) and batch is None:
        raise RuleError("init=gradmax chooses the new units' outgoing weights from the gradient on a batch of data: "
                        "pass it, archgraph.rewrite(graph, module, rule, batch=(inputs, targets)); without data "
                        "use init=zero (the same start, outgoing weights zero)", rule=rw.rule.name, field="init")
    own_device, own_dtype = _device_dtype(module)
    device, dtype = device or own_device, dtype or own_dtype
    new = build(rw.graph, device=device, dtype=dtype, seed=seed)
    transfer(rw.plan, module, new)
    new.train(module.training)
    if optimizer is not None:
        transfer_optimizer(rw.plan, optimizer, module, new)
    if uses_gradmax(rw.rule):
        gradmax(rw, new, batch, loss, seed)
    return new


def rewrite(graph: Graph, module: torch.nn.Module, rule: RuleLike,
            optimizer: Optional[torch.optim.Optimizer] = None, seed: int = 0, device: Device = None,
            dtype: Optional[torch.dtype] = None, batch: Batch = None,
            loss: Optional[Callable[..., torch.Tensor]] = None) -> Edit[torch.fx.GraphModule]:
    """Apply ``rule``: an :class:`~archgraph.rules.base.Edit` holding the new graph, the new module (``.state``;
    it unpacks as ``new_graph, new_module``), ``(rule,)`` and whether it kept the function (``.exact``). The new
    module carries every weight and buffer and ``optimizer`` (if given) now holds its parameters with their state
    remapped. ``seed`` initialises the
    entries that start random; ``device``/``dtype`` default to the module's. ``batch`` (``(inputs, targets)``)
    and ``loss`` (default cross-entropy) are what ``add_filters init=gradmax`` chooses the new units' outgoing
    weights from (:mod:`archgraph.fx.gradmax`). ``graph`` and ``module`` are left as they were."""
    rw = apply(graph, rule)
    new = materialise(rw, module, optimizer, seed, device, dtype, batch=batch, loss=loss)
    return Edit(rw.graph, new, rw.rules, rw.exact)
