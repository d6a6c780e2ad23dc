"""Depth pruning: remove the residual blocks that change their input least (ShortGPT's block influence).

A *residual block* is an ``add`` of two values where one (the *skip*) is an ancestor of the other (the *branch*
end): ``out = skip + branch(skip)``. A pre-norm transformer layer holds two (attention, MLP), a ResNet basic block
one (its projection-shortcut blocks are not residual in this sense: neither input is the other's ancestor). Its
*block influence* on calibration batches is ``1 - cos(skip, out)``, the cosine taken over the channels at every
position (every token of a sequence, every pixel of a feature map) and averaged (ShortGPT, Men et al. 2024). A block
that adds nothing has influence 0. Removing a block is the rule ``collapse_layer node=<branch end>``: the add is
replaced by its skip input, and the branch goes.

>>> import archgraph, torch
>>> g = archgraph.load("examples/seeds/gpt_tiny.yaml")
>>> [b.branch for b in residual_blocks(g)]
['b0_attn', 'b0_proj', 'b1_attn', 'b1_proj']
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import torch
import torch.nn.functional as F

from ..errors import ConfigError, RuleError
from ..graph import Graph
from ..ops.registry import OPS, channel_axis
from ..rules.collapse import CollapseLayer
from ..topology import reachable
from .apply_plan import transfer_state
from .builder import build
from .calibration import batches_list, value_pairs


@dataclass(frozen=True)
class Block:
    """A residual block ``add = skip + branch``: the add node, its skip input and the end of its branch."""
    add: str
    skip: str
    branch: str


def residual_blocks(graph: Graph) -> list[Block]:
    """The residual blocks of ``graph`` that ``collapse_layer`` can remove, in graph order."""
    shapes = graph.shapes()
    out = []
    for nid, node in graph.nodes.items():
        if not OPS[node.op].rewrite.residual or len(node.inputs) != 2 or nid in graph.outputs:
            continue
        a, b = node.inputs[0], node.inputs[1]
        if a == b:
            continue
        if a in reachable(graph.nodes, [b]):
            skip, branch = a, b
        elif b in reachable(graph.nodes, [a]):
            skip, branch = b, a
        else:
            continue
        if shapes[skip] != shapes[nid] or branch in graph.inputs:
            continue
        try:
            CollapseLayer(node=branch).apply(graph)
        except RuleError:
            continue
        out.append(Block(nid, skip, branch))
    return out


def block_influence(graph: Graph, module: torch.nn.Module, calib: Iterable,
                    blocks: Optional[list[Block]] = None) -> dict[str, float]:
    """``branch end -> 1 - cos(skip, add)`` of every residual block (averaged over the calibration batches and
    positions; the cosine over the channel axis, 1 where the block leaves a position unchanged)."""
    blocks = residual_blocks(graph) if blocks is None else blocks
    sums = [0.0] * len(blocks)
    counts = [0] * len(blocks)
    shapes = graph.shapes()

    def each(i: int, skip: torch.Tensor, out: torch.Tensor) -> None:
        axis = channel_axis(shapes[blocks[i].add]) + 1
        cos = F.cosine_similarity(skip.double(), out.double(), dim=axis, eps=1e-12)
        # a position the block leaves as it was counts as unchanged, zero vectors included (cos would say 0)
        cos = torch.where((skip == out).all(dim=axis), torch.ones_like(cos), cos)
        sums[i] += float(cos.sum())
        counts[i] += cos.numel()

    value_pairs(graph, module, calib, [(b.skip, b.add) for b in blocks], each)
    return {b.branch: 1.0 - sums[i] / max(1, counts[i]) for i, b in enumerate(blocks)}


def depth_rules(graph: Graph, weights: torch.nn.Module | Mapping[str, torch.Tensor], count: int,
                calib: Iterable) -> list[CollapseLayer]:
    """The ``collapse_layer`` rules removing the ``count`` residual blocks of least block influence (one shot, as
    ShortGPT), in graph order."""
    blocks = residual_blocks(graph)
    if count < 0:
        raise ConfigError(f"depth {count} must be at least 0", field="depth")
    if count > len(blocks):
        raise ConfigError(f"depth {count}: the graph has {len(blocks)} removable residual block(s)"
                          + (f" ({', '.join(b.add for b in blocks)})" if blocks else ""), field="depth")
    if count == 0:
        return []
    batches = batches_list(calib, "depth pruning")
    module = weights if isinstance(weights, torch.nn.Module) else _module(build(graph), weights)
    influence = block_influence(graph, module, batches, blocks)
    order = sorted(range(len(blocks)), key=lambda i: (influence[blocks[i].branch], i))
    chosen = sorted(order[:count])
    return [CollapseLayer(node=blocks[i].branch) for i in chosen]


def _module(module: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return module


def prune_depth(graph: Graph, state: Mapping[str, torch.Tensor], count: int, calib: Iterable
                ) -> tuple[Graph, dict[str, torch.Tensor], list[CollapseLayer]]:
    """Remove the ``count`` residual blocks of least influence: the new graph, its weights and the rules, applied
    in turn (each names a branch end, which the earlier ones leave in place).

    >>> import archgraph, torch
    >>> g = archgraph.load("examples/seeds/gpt_tiny.yaml")
    >>> w = archgraph.build(g).state_dict()
    >>> w["b1_proj.weight"].zero_(); w["b1_proj.bias"].zero_()   # doctest: +ELLIPSIS
    tensor(...)
    >>> g2, w2, rules = prune_depth(g, w, 1, [torch.randint(0, 65, (2, 32))])
    >>> [r.node for r in rules], "b1_fc" in g2.nodes
    (['b1_proj'], False)
    """
    rules = depth_rules(graph, state, count, calib)
    state = dict(state)
    for rule in rules:
        rw = rule.apply(graph)
        graph, state = rw.graph, transfer_state(rw.plan, state)
    return graph, state, rules
