"""Gates: multipliers on the parameters that make a channel's (or a residual branch's) output, applied as parameter
overrides for ``torch.func.functional_call``, so the module and its ``state_dict`` keys stay untouched.

A *channel gate* belongs to a conv or linear layer whose channels can be removed on their own (the groups of
:func:`archgraph.train.masks.mask_layout`: read by other layers only through per-channel ops). Its value for channel
``c`` multiplies what makes channel ``c`` *after the last normalisation*: the last batchnorm's weight and bias (a
gate before a batchnorm would be normalised away in training mode) and every per-channel parameter after it, or,
with no norm, the layer's own weight rows and bias. A gate of 0 makes the channel's output exactly 0 (after a ReLU
or a pool), so removing the channel with ``prune_channels`` leaves the function unchanged.

A *branch gate* belongs to a residual branch: an input of an ``add`` that ``collapse_layer`` can remove. Its one
value multiplies the branch's last parameters (the closing batchnorm's weight and bias, or the last layer's weight
and bias), so a branch gate of 0 makes the branch output 0 and collapsing it is exact.

Gates are kept by node id; :func:`archgraph.train.tensors.follow_channels` carries per-channel state (gate logits,
saliencies, optimizer moments) through a rewrite with the rule's transfer plan: kept channels keep theirs, split or
copied channels take their original's, new channels start at a given value.

>>> import archgraph
>>> g = archgraph.load("examples/seeds/digits_cnn.yaml")
>>> lay = gate_layout(g)
>>> {k: (v.width, v.params) for k, v in lay.channel.items()}
{'c1': (4, ['bn1.weight', 'bn1.bias']), 'c2': (8, ['bn2.weight', 'bn2.bias'])}
>>> lay.active_macs() == g.macs
True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from ..rules import CollapseLayer
from ..rules.base import apply as apply_rule
from ..errors import RuleError
from ..topology import topological_order
from ..ops.registry import OPS, channel_width, is_norm, is_weighted
from ..shapes import node_macs
from .masks import mask_layout


@dataclass
class ChannelGate:
    """The gate of one layer's output channels."""
    node: str                      # the conv/linear layer making the channels
    width: int
    params: list[str]              # "<node>.<param>" multiplied on axis 0
    consumers: list[tuple[str, int]] = field(default_factory=list)  # (layer reading them, inputs per channel)
    members: list[str] = field(default_factory=list)   # every "<node>.<param>" indexed by the channels on axis 0


@dataclass
class BranchGate:
    """The gate of one residual branch (an input of an add that ``collapse_layer`` removes)."""
    node: str                      # the branch's last node (the add's input)
    params: list[str]              # "<node>.<param>" multiplied whole
    removed: list[str] = field(default_factory=list)   # nodes collapse_layer removes with it
    macs: int = 0                  # MACs saved by removing it
    n_params: int = 0              # parameters saved by removing it


@dataclass
class GateLayout:
    """Every gate of one graph version and the per-layer MACs needed to cost them."""
    graph: object
    channel: dict[str, ChannelGate]
    branch: dict[str, BranchGate]
    layer_macs: dict[str, int]     # conv/linear node -> dense MACs
    layer_in: dict[str, list[tuple[str, int, int]]]   # layer -> [(gated producer, inputs per channel, in width)]

    def active_macs(self, fractions: Optional[dict[str, object]] = None,
                    branch_on: Optional[dict[str, object]] = None):
        """MACs of the conv/linear layers when a fraction of each gated layer's channels is active
        (``fractions[node]``, default 1) and each branch is on with weight ``branch_on[node]`` (default 1).

        Works on floats and on tensors (then differentiable: the expected MACs under independent gates). A layer
        costs ``macs * f_out * f_in``, its input fraction being the width-weighted mean over the gated producers
        it reads (ungated inputs count as active).
        """
        fractions = fractions or {}
        branch_on = branch_on or {}
        total = 0.0
        off = {}
        for gid, gate in self.branch.items():
            on = branch_on.get(gid, 1.0)
            for n in gate.removed:
                off[n] = on
        for nid, macs in self.layer_macs.items():
            f = fractions.get(nid, 1.0)
            for gid, repeat, in_width in self.layer_in.get(nid, []):
                share = self.channel[gid].width * repeat / in_width
                f = f * (1.0 - share * (1.0 - fractions.get(gid, 1.0)))
            if nid in off:
                f = f * off[nid]
            total = total + macs * f
        return total


def gate_layout(graph, *, channels: bool = True, branches: bool = True) -> GateLayout:
    """The channel gates and residual-branch gates of ``graph`` (see the module docstring)."""
    order = {nid: i for i, nid in enumerate(topological_order(graph))}
    masks = mask_layout(graph, channel_masks=channels)
    channel: dict[str, ChannelGate] = {}
    shapes = graph.shapes()
    for gid, group in masks.groups.items():
        params = _gated_params(graph, gid, group.members, order)
        if params:
            channel[gid] = ChannelGate(gid, channel_width(shapes[gid]), params, list(group.consumers),
                                       [f"{gid}.weight", *group.members])
    branch = _branch_gates(graph, set().union(*[set(g.params) for g in channel.values()])) if branches else {}
    layer_macs = {nid: node_macs(graph, nid) for nid, n in graph.nodes.items() if is_weighted(n)}
    layer_in: dict[str, list[tuple[str, int, int]]] = {}
    for gid, gate in channel.items():
        for key, repeat in gate.consumers:
            reader = key.rsplit(".", 1)[0]
            in_width = channel_width(shapes[graph.nodes[reader].inputs[0]])
            layer_in.setdefault(reader, []).append((gid, repeat, in_width))
    return GateLayout(graph, channel, branch, layer_macs, layer_in)


def _gated_params(graph, gid: str, members: list[str], order: dict[str, int]) -> list[str]:
    """Parameters a channel gate multiplies: the last norm's and everything per-channel after it, or, without a
    norm, the layer's own and everything per-channel after it."""
    nodes = sorted({k.rsplit(".", 1)[0] for k in members}, key=order.__getitem__)
    norms = [n for n in nodes if is_norm(graph.nodes[n])]
    if norms:
        last = norms[-1]
        if f"{last}.weight" not in members:   # a norm without an affine part cannot carry the gate
            return []
        return [k for k in members if order[k.rsplit(".", 1)[0]] >= order[last]]
    return [f"{gid}.weight"] + list(members)      # the members hold the layer's bias


def _branch_gates(graph, taken: set[str]) -> dict[str, BranchGate]:
    """For each add, the input whose removal saves the most MACs, if ``collapse_layer`` can remove it and its last
    node carries parameters (a norm or a layer)."""
    out: dict[str, BranchGate] = {}
    for nid, node in graph.nodes.items():
        if not OPS[node.op].residual or len(node.inputs) < 2:
            continue
        best: Optional[BranchGate] = None
        for src in node.inputs:
            if src not in graph.nodes or len(graph.users(src)) != 1:
                continue
            n = graph.nodes[src]
            if is_norm(n) or is_weighted(n):
                layout = OPS[n.op].layout(n, graph.input_shapes(src))
                params = [f"{src}.{p}" for p in ("weight", "bias") if p in layout]
            else:
                continue
            if not params or any(p in taken for p in params):
                continue
            try:
                rw = apply_rule(graph, CollapseLayer(node=src))
            except RuleError:
                continue
            removed = [k for k in graph.nodes if k not in rw.graph.nodes]
            saved = graph.macs - rw.graph.macs
            if saved > 0 and (best is None or saved > best.macs):
                best = BranchGate(src, params, removed, saved, graph.params - rw.graph.params)
        if best is not None:
            out[best.node] = best
    return out


def gate_overrides(params: dict[str, torch.Tensor], layout: GateLayout, channel: dict[str, torch.Tensor],
                   branch: Optional[dict[str, torch.Tensor]] = None) -> dict[str, torch.Tensor]:
    """Parameter overrides: each gated parameter times its gate (``channel[node]`` of shape ``[width]`` on axis 0,
    ``branch[node]`` a scalar). Gates missing from the dicts are left out (value 1)."""
    factors: dict[str, torch.Tensor] = {}
    for gid, value in channel.items():
        for key in layout.channel[gid].params:
            p = params[key]
            f = value.view(-1, *([1] * (p.dim() - 1)))
            factors[key] = f if key not in factors else factors[key] * f
    for gid, value in (branch or {}).items():
        for key in layout.branch[gid].params:
            factors[key] = value if key not in factors else factors[key] * value
    return {key: params[key] * f for key, f in factors.items()}


@torch.no_grad()
def hard_weights(params: dict[str, torch.Tensor], layout: GateLayout, channel_on: dict[str, torch.Tensor],
                 branch_on: Optional[dict[str, bool]] = None, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Parameters as the network with hard gates computes with them: open channels' and branches' gated
    parameters times ``scale``, and *every* parameter of a closed channel (its row, per-channel entries and the
    columns reading it) or of a closed branch's nodes set to exact zeros, as removing them would. ``channel_on[node]``
    is a boolean ``[width]`` tensor; gates left out count as open (scale 1)."""
    out = {k: v.detach().clone() for k, v in params.items()}
    for gid, on in channel_on.items():
        gate = layout.channel[gid]
        for key in gate.params:
            out[key] *= scale
        off = torch.nonzero(~on.bool()).flatten()
        if not off.numel():
            continue
        for key in gate.members:
            out[key][off] = 0
        for key, repeat in gate.consumers:
            cols = (off.view(-1, 1) * repeat + torch.arange(repeat, device=off.device)).flatten()
            out[key][:, cols] = 0
    for gid, on in (branch_on or {}).items():
        gate = layout.branch[gid]
        if on:
            for key in gate.params:
                out[key] *= scale
        else:
            for key in out:
                if key.rsplit(".", 1)[0] in gate.removed:
                    out[key].zero_()
    return out


def channel_costs(layout: GateLayout) -> dict[str, torch.Tensor]:
    """MACs one channel of each gated layer costs (its own share plus its readers'), all others active."""
    out = {}
    for gid, gate in layout.channel.items():
        own = layout.layer_macs.get(gid, 0) / gate.width
        readers = sum(layout.layer_macs[key.rsplit(".", 1)[0]] * repeat / in_w
                      for key, repeat in gate.consumers
                      for (g, _, in_w) in layout.layer_in[key.rsplit(".", 1)[0]] if g == gid)
        out[gid] = own + readers
    return out
