"""Gates: multipliers on the parameters that make a channel's (or a residual branch's) output, applied as parameter
overrides for ``torch.func.functional_call``, so the module and its ``state_dict`` keys stay untouched.

A *channel gate* belongs to a layer whose channels can be removed on their own: they reach other layers only
through per-channel ops (norms, activations, pools, dropout, depthwise convs, upsampling), flattens and concats (a
U-Net's skip connections: the readers' columns at the concat's offset), not through an add, a mixing norm or a
graph output. Its value for channel ``c`` multiplies what makes channel ``c`` *after the last normalisation*: the
last batchnorm's weight and bias (a gate before a batchnorm would be normalised away in training mode) and every
per-channel parameter after it, or, with no norm, the layer's own weight rows and bias. A layer whose output is not
linear in its rows (an LSTM or GRU: its gate blocks, :attr:`~archgraph.ops.registry.OpDef.gates`) has its unit's
output ``h_t`` gated where it is read instead: the columns of the next layers' weights and of its own recurrent
ones (:attr:`~archgraph.ops.registry.OpDef.recurrent`). A gate of 0 makes the channel's output exactly 0 (after a
ReLU or a pool) or read as 0, so removing the channel with ``prune_channels`` leaves the function unchanged.

A *head gate* (``unit == HEAD``) belongs to a node with heads (:attr:`~archgraph.ops.registry.OpDef.heads`: an
attention's): its value for head ``h`` multiplies the ``head_dim`` columns of ``o_proj`` that read the head, so a
closed head adds nothing and ``prune_heads`` removes it exactly.

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
from typing import Any, Mapping, Optional

import torch

from ..errors import RuleError
from ..graph import Graph
from ..ops.registry import BUFFERS, CONCAT, FLATTEN, OPS, SOURCE, THROUGH, channel_width, is_norm, is_weighted
from ..rules import CollapseLayer
from ..rules.base import apply as apply_rule
from ..shapes import node_macs, node_params
from ..topology import topological_order

#: node id -> its output shape (``graph.shapes()``)
Shapes = Mapping[str, Any]

CHANNEL, HEAD = "channel", "head"   # what a channel gate's entries are: a layer's channels or an attention's heads


@dataclass(frozen=True)
class Part:
    """Where a gate's channels sit in one tensor ``key``: ``repeat`` entries per channel on ``axis`` from
    ``offset`` (a reader of a concat, a flatten's features, a head's ``head_dim`` columns), in ``blocks`` copies one
    after another (an LSTM's gate blocks)."""
    key: str
    axis: int = 0
    offset: int = 0
    repeat: int = 1
    blocks: int = 1

    def positions(self, channels: torch.Tensor, size: int) -> torch.Tensor:
        """Indices along ``axis`` (of length ``size``) of the entries of ``channels``."""
        r = torch.arange(self.repeat, device=channels.device)
        idx = (channels.view(-1, 1) * self.repeat + r).flatten() + self.offset
        if self.blocks > 1:
            step = torch.arange(self.blocks, device=channels.device).view(-1, 1) * (size // self.blocks)
            idx = (step + idx).flatten()
        return idx

    def factor(self, value: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
        """``value`` (one per channel) spread over ``tensor``'s axis (1 elsewhere), shaped to broadcast."""
        size = tensor.shape[self.axis]
        f = value.repeat_interleave(self.repeat).repeat(self.blocks)
        if f.numel() != size:
            idx = self.positions(torch.arange(value.numel(), device=value.device), size)
            f = torch.ones(size, dtype=value.dtype, device=value.device).index_put((idx,), f)
        shape = [1] * tensor.dim()
        shape[self.axis] = size
        return f.view(shape)


@dataclass
class ChannelGate:
    """The gate of one layer's output channels (or of an attention node's heads, ``unit == HEAD``)."""
    node: str                      # the layer making the channels (or holding the heads)
    width: int
    scale: list[Part]              # what the gate multiplies
    rows: list[Part]               # the channels' own entries (the layer's and per-channel ops' after it)
    reads: list[Part] = field(default_factory=list)   # the entries of the layers reading them
    anchor: Optional[Part] = None  # the tensor axis whose transfer plan says where each channel went
    unit: str = CHANNEL

    @property
    def params(self) -> list[str]:
        """``"<node>.<param>"`` multiplied by the gate."""
        return [p.key for p in self.scale]

    @property
    def members(self) -> list[str]:
        """Every ``"<node>.<param>"`` indexed by the channels themselves."""
        return [p.key for p in self.rows]

    @property
    def consumers(self) -> list[tuple[str, int]]:
        """(tensor of a layer reading the channels, inputs per channel)."""
        return [(p.key, p.repeat) for p in self.reads]


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
    layer_macs: dict[str, int]     # node with MACs -> dense MACs
    layer_in: dict[str, list[tuple[str, float]]]   # layer -> [(gated producer, share of its MACs reading it)]
    layer_params: dict[str, int] = field(default_factory=dict)   # node with parameters -> its parameters
    follows: dict[str, str] = field(default_factory=dict)   # per-channel node after a gated layer -> its gate

    def active_macs(self, fractions: Optional[Mapping[str, Any]] = None,
                    branch_on: Optional[Mapping[str, Any]] = None) -> Any:
        """MACs of the graph when a fraction of each gated layer's channels (or heads) is active
        (``fractions[node]``, default 1) and each branch is on with weight ``branch_on[node]`` (default 1).

        Works on floats and on tensors (then differentiable: the expected MACs under independent gates). A layer
        costs ``macs * f_out * f_in``, its input fraction discounting the share of its MACs that reads each gated
        producer (an LSTM's recurrent weights read its own units: its cost is quadratic in them).
        """
        return self.active_cost(self.layer_macs, fractions, branch_on)

    def active_params(self, fractions: Optional[Mapping[str, Any]] = None,
                      branch_on: Optional[Mapping[str, Any]] = None) -> Any:
        """Parameters of the graph under the same fractions, costed as :meth:`active_macs` costs MACs (a layer's
        parameters scale with its active output and input channels as its MACs do; an embedding has parameters
        and no MACs)."""
        return self.active_cost(self.layer_params, fractions, branch_on)

    def active_cost(self, per_layer: dict[str, int], fractions: Optional[Mapping[str, Any]] = None,
                    branch_on: Optional[Mapping[str, Any]] = None) -> Any:
        """``per_layer``'s total (each node's dense cost) under the active fractions (see :meth:`active_macs`)."""
        fractions = fractions or {}
        branch_on = branch_on or {}
        total: Any = 0.0
        off: dict[str, Any] = {}
        for gid, gate in self.branch.items():
            on = branch_on.get(gid, 1.0)
            for n in gate.removed:
                off[n] = on
        for nid, macs in per_layer.items():
            leader = self.follows.get(nid)   # a layer after a gated one (its per-channel ops) follows its fraction
            f = fractions.get(nid, 1.0 if leader is None else fractions.get(leader, 1.0))
            for gid, share in self.layer_in.get(nid, []):
                f = f * (1.0 - share * (1.0 - fractions.get(gid, 1.0)))
            if nid in off:
                f = f * off[nid]
            total = total + macs * f
        return total


def gate_layout(graph: Graph, *, channels: bool = True, branches: bool = True, heads: bool = True) -> GateLayout:
    """The channel gates (with ``heads``, the head gates too) and residual-branch gates of ``graph`` (see the
    module docstring)."""
    shapes = graph.shapes()
    channel = _channel_gates(graph, shapes, channels, heads)
    taken = {p for g in channel.values() if g.unit == CHANNEL for p in g.params}
    branch = _branch_gates(graph, taken) if branches else {}
    layer_macs = {nid: m for nid in graph.nodes if (m := node_macs(graph, nid)) > 0}
    layer_params = {nid: n for nid in graph.nodes if (n := node_params(graph, nid)) > 0}
    layer_in = _layer_in(graph, shapes, channel, set(layer_macs) | set(layer_params))
    follows = {p.key.rsplit(".", 1)[0]: gid for gid, gate in channel.items() if gate.unit == CHANNEL
               for p in gate.rows}
    follows = {nid: gid for nid, gid in follows.items() if nid not in channel}
    return GateLayout(graph, channel, branch, layer_macs, layer_in, layer_params, follows)


def _channel_gates(graph: Graph, shapes: Shapes, channels: bool, heads: bool) -> dict[str, ChannelGate]:
    """Node -> its channel gate (``channels``), else its head gate (``heads``), where it has one."""
    order = {nid: i for i, nid in enumerate(topological_order(graph))}
    out: dict[str, ChannelGate] = {}
    for nid in graph.nodes:
        gate = _channel_gate(graph, nid, shapes, order) if channels else None
        if gate is None and heads:
            gate = _head_gate(graph, nid, shapes)
        if gate is not None:
            out[nid] = gate
    return out


def _layer_in(graph: Graph, shapes: Shapes, channel: dict[str, ChannelGate],
              layers: set[str]) -> dict[str, list[tuple[str, float]]]:
    """Layer -> (gate, share of the layer's input entries that gate's channels are) for every gate it reads."""
    layer_in: dict[str, list[tuple[str, float]]] = {}
    for gid, gate in channel.items():
        by_reader: dict[str, int] = {}
        for part in gate.reads:
            reader = part.key.rsplit(".", 1)[0]
            by_reader[reader] = by_reader.get(reader, 0) + gate.width * part.repeat
        for reader, entries in by_reader.items():
            if reader in layers:
                layer_in.setdefault(reader, []).append((gid, entries / _in_entries(graph, reader, shapes)))
    return layer_in


def _in_entries(graph: Graph, nid: str, shapes: Shapes) -> int:
    """Input entries of a layer summed over its weight tensors (an LSTM's ``weight_hh`` reads its own units): the
    share of its MACs an input entry takes, its weights' rows being alike."""
    node = graph.nodes[nid]
    opdef = OPS[node.op]
    ins = [shapes[i] for i in node.inputs]
    own = opdef.recurrent(node)
    width = channel_width(ins[0])
    total = 0
    for param, (_, b) in opdef.layout(node, ins).items():
        if b is not None and param.rsplit(".", 1)[-1].startswith("weight"):
            total += channel_width(shapes[nid]) if param in own else width
    return max(total, 1)


def _channel_gate(graph: Graph, nid: str, shapes: Shapes, order: dict[str, int]) -> Optional[ChannelGate]:
    """The gate of ``nid``'s output channels, when they can be removed on their own: they reach other layers only
    through per-channel ops, flattens and concats, not through an add, a mixing norm or a graph output.

    It multiplies what makes a channel after its last normalisation (the norm's weight and bias and what is
    per-channel after it); without a norm, the layer's own rows, or, for a layer whose output is not linear in its
    rows (an LSTM's gate blocks), the columns of every tensor reading its output (the next layers' and its own
    recurrent ones): so a closed gate makes the channel's output (``h_t``) read as exact zeros everywhere."""
    node = graph.nodes[nid]
    opdef = OPS[node.op]
    ins = [shapes[i] for i in node.inputs]
    if nid in graph.outputs or opdef.channels(node, ins) != SOURCE or opdef.width_field is None:
        return None
    layout = opdef.layout(node, ins)
    blocks = opdef.gates(node)
    own = [Part(f"{nid}.{p}", a, blocks=blocks) for p, (a, _) in layout.items()
           if a is not None and p not in BUFFERS]
    anchors = [p for p in own if p.key.rsplit(".", 1)[-1].startswith("weight")]
    if not anchors:
        return None
    recurrent = opdef.recurrent(node)
    self_reads = [Part(f"{nid}.{p}", layout[p][1]) for p in sorted(recurrent)]
    walk = _walk(graph, nid, shapes)
    if walk is None:
        return None
    rows, reads = own + walk[0], walk[1] + self_reads
    scale = _scaled(graph, rows, reads, order, linear=blocks == 1 and not recurrent)
    if scale is None:
        return None
    return ChannelGate(nid, channel_width(shapes[nid]), scale, rows, reads, anchors[0])


def _scaled(graph: Graph, rows: list[Part], reads: list[Part], order: dict[str, int],
            linear: bool) -> Optional[list[Part]]:
    """What a channel gate multiplies: the entries from the last norm on (None when that norm has no affine part
    to carry it), else the rows of a layer whose output is ``linear`` in them, else the readers' columns."""
    nodes = sorted({p.key.rsplit(".", 1)[0] for p in rows}, key=order.__getitem__)
    norms = [n for n in nodes if is_norm(graph.nodes[n])]
    if norms:
        last = norms[-1]
        if f"{last}.weight" not in {p.key for p in rows}:
            return None
        return [p for p in rows if order[p.key.rsplit(".", 1)[0]] >= order[last]]
    return list(rows) if linear else list(reads)


def _walk(graph: Graph, producer: str, shapes: Shapes) -> Optional[tuple[list[Part], list[Part]]]:
    """(per-channel entries of the ops between ``producer`` and its readers, the readers' entries), or None when
    its channels reach something that is not per-channel (see :func:`_channel_gate`)."""
    rows: list[Part] = []
    reads: list[Part] = []
    stack = [(producer, 1, 0)]   # (node whose users to visit, entries per channel, offset of the channels)
    seen = set()
    while stack:
        nid, repeat, offset = stack.pop()
        for user in graph.users(nid):
            if (user, nid) in seen:
                continue
            seen.add((user, nid))
            step = _visit(graph, shapes, nid, user, repeat, offset)
            if step is None:
                return None
            rows += step[0]
            reads += step[1]
            stack += step[2]
    if not reads:
        return None
    return rows, reads


_Step = tuple[list[Part], list[Part], list[tuple[str, int, int]]]


def _visit(graph: Graph, shapes: Shapes, nid: str, user: str, repeat: int, offset: int) -> Optional[_Step]:
    """What ``user`` reading ``nid``'s channels (``repeat`` entries each, from ``offset``) adds to :func:`_walk`:
    (per-channel entries, readers' entries, where to go on), or None when the channels stop being per-channel."""
    unode = graph.nodes[user]
    opdef = OPS[unode.op]
    uins = [shapes[i] for i in unode.inputs]
    if unode.inputs.count(nid) != 1:
        return None
    role = opdef.channels(unode, uins)
    layout = opdef.layout(unode, uins)
    if role == SOURCE:   # a reader: the columns of its tensors that read the channels (not its recurrent ones)
        own = opdef.recurrent(unode)
        parts = [Part(f"{user}.{p}", b, offset, repeat) for p, b in _in_axes(layout).items() if p not in own]
        return ([], parts, []) if parts else None
    if user in graph.outputs or opdef.offset or opdef.mixes(unode, uins):
        return None
    if role == THROUGH:
        per = _per_channel(layout)
        if repeat != 1 and per:
            return None   # per-feature parameters after a flatten: not one channel any more
        return [Part(f"{user}.{p}", 0, offset) for p in per], [], [(user, repeat, offset)]
    if role == FLATTEN:
        _, h, w = shapes[nid]
        return [], [], [(user, repeat * h * w, offset * h * w)]
    if role == CONCAT:
        before = unode.inputs[:unode.inputs.index(nid)]
        return [], [], [(user, repeat, offset + sum(channel_width(shapes[i]) for i in before))]
    return None


def _in_axes(layout: dict[str, tuple[Optional[int], Optional[int]]]) -> dict[str, int]:
    """Parameter -> its input-channel axis, for the parameters that have one."""
    return {p: b for p, (_, b) in layout.items() if b is not None}


def _per_channel(layout: dict[str, tuple[Optional[int], Optional[int]]]) -> list[str]:
    """The parameters (not buffers) of a per-channel op with one entry per channel (on axis 0)."""
    return [p for p, (a, _) in layout.items() if a == 0 and p not in BUFFERS]


def _head_gate(graph: Graph, nid: str, shapes: Shapes) -> Optional[ChannelGate]:
    """The gate of an attention node's heads: it scales the columns of the tensor reading the heads' outputs
    (``o_proj.weight``), so a closed head outputs exact zeros and ``prune_heads`` removing it is exact."""
    node = graph.nodes[nid]
    found = OPS[node.op].heads(node, [shapes[i] for i in node.inputs])
    if found is None or found[0] < 2:
        return None
    h, hd, tensors = found
    parts = [Part(f"{nid}.{p}", axis, repeat=hd) for p, axis in tensors.items()]
    return ChannelGate(nid, h, parts[:1], parts, [], parts[0], HEAD)


def _branch_gates(graph: Graph, taken: set[str]) -> dict[str, BranchGate]:
    """For each add, the input whose removal saves the most MACs, if ``collapse_layer`` can remove it and its last
    node carries parameters (a norm or a layer)."""
    out: dict[str, BranchGate] = {}
    for node in graph.nodes.values():
        if not OPS[node.op].residual or len(node.inputs) < 2:
            continue
        found = [gate for src in node.inputs if (gate := _branch_gate(graph, src, taken)) is not None]
        best = max(found, key=lambda gate: gate.macs, default=None)   # the first of equals, as the inputs go
        if best is not None:
            out[best.node] = best
    return out


def _branch_gate(graph: Graph, src: str, taken: set[str]) -> Optional[BranchGate]:
    """The gate of the residual branch ending at ``src`` (an input of an add), if ``collapse_layer`` can remove
    it, it saves MACs, and its last node has parameters no channel gate holds."""
    if src not in graph.nodes or len(graph.users(src)) != 1:
        return None
    n = graph.nodes[src]
    opdef = OPS[n.op]
    if not (is_norm(n) or is_weighted(n) or opdef.heads(n, graph.input_shapes(src)) is not None):
        return None
    layout = opdef.layout(n, graph.input_shapes(src))
    # the tensors making its output channels (an attention's o_proj), scaled whole
    params = [f"{src}.{p}" for p, (a, _) in layout.items() if a is not None and p not in BUFFERS]
    if not params or any(p in taken for p in params):
        return None
    try:
        rw = apply_rule(graph, CollapseLayer(node=src))
    except RuleError:
        return None
    removed = [k for k in graph.nodes if k not in rw.graph.nodes]
    saved = graph.macs - rw.graph.macs
    if saved <= 0:
        return None
    return BranchGate(src, params, removed, saved, graph.params - rw.graph.params)


def gate_overrides(params: dict[str, torch.Tensor], layout: GateLayout, channel: dict[str, torch.Tensor],
                   branch: Optional[dict[str, torch.Tensor]] = None) -> dict[str, torch.Tensor]:
    """Parameter overrides: each gated parameter times its gate (``channel[node]`` of shape ``[width]`` spread over
    the parameter's channel axis, ``branch[node]`` a scalar). Gates missing from the dicts are left out (value 1)."""
    factors: dict[str, torch.Tensor] = {}
    for gid, value in channel.items():
        for part in layout.channel[gid].scale:
            f = part.factor(value, params[part.key])
            factors[part.key] = f if part.key not in factors else factors[part.key] * f
    for gid, value in (branch or {}).items():
        for key in layout.branch[gid].params:
            factors[key] = value if key not in factors else factors[key] * value
    return {key: params[key] * f for key, f in factors.items()}


@torch.no_grad()
def hard_weights(params: dict[str, torch.Tensor], layout: GateLayout, channel_on: dict[str, torch.Tensor],
                 branch_on: Optional[dict[str, bool]] = None, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Parameters as the network with hard gates computes with them: open channels' and branches' gated
    parameters times ``scale``, and *every* parameter of a closed channel (its rows, per-channel entries and the
    columns reading it) or of a closed branch's nodes set to exact zeros, as removing them would. ``channel_on[node]``
    is a boolean ``[width]`` tensor; gates left out count as open (scale 1)."""
    out = {k: v.detach().clone() for k, v in params.items()}
    for gid, on in channel_on.items():
        gate = layout.channel[gid]
        for key in dict.fromkeys(gate.params):
            out[key] *= scale
        off = torch.nonzero(~on.bool()).flatten()
        if not off.numel():
            continue
        for part in gate.rows + gate.reads:
            t = out[part.key]
            t.index_fill_(part.axis, part.positions(off.to(t.device), t.shape[part.axis]), 0)
    for gid, branch_open in (branch_on or {}).items():
        branch = layout.branch[gid]
        if branch_open:
            for key in branch.params:
                out[key] *= scale
        else:
            for key in out:
                if key.rsplit(".", 1)[0] in branch.removed:
                    out[key].zero_()
    return out


def closed_entries(tensor: torch.Tensor, part: Part, closed: torch.Tensor) -> None:
    """Zero, in place, the entries of ``tensor`` (``part``'s) that belong to the channels ``closed`` (bool)."""
    off = torch.nonzero(closed.bool()).flatten()
    if off.numel():
        tensor.index_fill_(part.axis, part.positions(off.to(tensor.device), tensor.shape[part.axis]), 0)


def channel_costs(layout: GateLayout) -> dict[str, float]:
    """MACs one channel (or head) of each gated layer costs (its own share plus its readers'), all others active."""
    out = {}
    for gid, gate in layout.channel.items():
        own = layout.layer_macs.get(gid, 0) / gate.width
        readers = sum(layout.layer_macs[reader] * share / gate.width
                      for reader, links in layout.layer_in.items()
                      for g, share in links if g == gid)
        out[gid] = own + readers
    return out
