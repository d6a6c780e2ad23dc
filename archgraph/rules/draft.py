"""From a rule's draft to a new graph and its transfer plan.

Every rule fills a :class:`Draft`: the new node list (structure), the producers whose channels change (their new
tokens, see :mod:`archgraph.channels`), which new tokens copy old ones, factors for outgoing weights and how new
entries start. :func:`realise` then makes one pass in topological order that

1. gives every value its channel tokens (a producer keeps its old tokens unless the draft gives new ones; a node
   whose input was rewired to a value of the same width keeps its old tokens, position by position);
2. resizes the nodes whose width follows their input (depthwise convs) or that the draft widened or pruned;
3. infers the shapes, so an impossible result is a :class:`RuleError` naming the rule and node;

and finally compares old and new tokens tensor by tensor to make the :class:`~archgraph.plan.TransferPlan`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Optional, cast

from .. import topology
from ..channels import Channels, Slots, UnionFind
from ..channels.roles import HANDLERS
from ..errors import ArchgraphError, GraphError, RuleError
from ..graph import Graph
from ..ops.registry import OPS, channel_width
from ..plan import AxisMap, Noise, TensorPlan, TransferPlan


@dataclass
class Draft:
    """What a rule wants; :func:`realise` turns it into a graph and a plan."""

    old: Graph
    ch: Channels
    nodes: dict                                   # new id -> NodeSpec, in a valid order
    outputs: list[str]
    given: dict[str, Slots] = field(default_factory=dict)       # producer -> its new channel tokens
    copy_of: dict[int, int] = field(default_factory=dict)       # new token -> old token whose values it copies
    scale: dict[int, float] = field(default_factory=dict)       # token -> factor on its class's outgoing weights
    noise: list[tuple[int, int]] = field(default_factory=list)  # (kept token, copy token) pairs to perturb
    eps: float = 0.0
    seed: int = 0
    fan_in: str = "init"      # new channels: how the producers' incoming weights start ("init" or "zero")
    fan_out: str = "zero"     # new channels: how the readers' weights on them start
    fills: dict[str, tuple[str, float]] = field(default_factory=dict)  # new tensor key -> (fill, value)
    #: new units of gated ops (LSTM, GRU) start with their quiet gate's rows at zero, so their state stays zero
    quiet: bool = True
    exact: bool = False
    note: str = ""
    #: every merge must meet channels already tied (a widening: new channels land at matching places)
    aligned: bool = False
    #: reader node -> how its weights on new channels start, where it differs from ``fan_out``
    reader_fill: dict[str, str] = field(default_factory=dict)
    #: every value's channel tokens in the new graph (set by :func:`realise`)
    new_slots: dict[str, Slots] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.uf = self.ch.uf.copy()
        self._tokens = itertools.count(self.ch.next_token)

    def fresh(self, n: int) -> tuple[int, ...]:
        return tuple(itertools.islice(self._tokens, n))


@dataclass
class Realisation:
    """The state of :func:`realise`'s pass, handed to each role's :meth:`~archgraph.channels.roles.Role.realise`: the
    draft, the old analysis, and the new values' shapes and channel tokens so far."""

    draft: Draft
    rule: str
    shapes: dict[str, tuple[int, ...]]
    slots: dict[str, Slots]

    @property
    def ch(self) -> Channels:
        return self.draft.ch

    @property
    def uf(self) -> UnionFind:
        return self.draft.uf

    def fail(self, message: str, node: Optional[str] = None) -> RuleError:
        return RuleError(message, rule=self.rule, node=node)

    def shape(self, node: Any, ins: list[Any], nid: str) -> tuple[int, ...]:
        """The output shape of ``node``, or a :class:`RuleError` naming it."""
        try:
            return tuple(OPS[node.op].sizes.shape(node, ins))
        except ArchgraphError as err:
            raise self.fail(f"the result would not be a valid graph: {err.message}", nid) from None

    def axis_map(self, old: Slots, new: Slots, fill: str) -> Optional[AxisMap]:
        return _axis_map(old, new, fill, self.draft.copy_of, None, self.draft.uf)


def realise(draft: Draft, rule: Any) -> tuple[Graph, TransferPlan]:
    """The new graph and the plan of a draft (see the module docstring)."""
    old = draft.old
    r = Realisation(draft, rule.name, {k: v if isinstance(v, tuple) else tuple(cast(list, v))
                                       for k, v in old.inputs.items()},
                    {k: draft.ch.slots[k] for k in old.inputs})
    try:
        order = topology.order(draft.nodes, old.inputs)
    except GraphError as err:
        raise r.fail(err.message, err.node) from None
    nodes: dict = {}
    roles: dict[str, str] = {}
    for nid in order:
        nodes[nid], roles[nid] = _realise_node(r, nid)
    old_shapes = old.shapes()
    for out in draft.outputs:
        if out in old_shapes and r.shapes.get(out) != old_shapes[out]:
            raise r.fail(f"graph output '{out}' would change shape from {list(old_shapes[out])} to "
                         f"{list(r.shapes[out])}", out)
    try:
        graph = Graph(archgraph=old.archgraph, name=old.name, inputs=old.inputs, nodes=nodes,
                      outputs=list(draft.outputs))
    except ArchgraphError as err:
        raise r.fail(f"the result would not be a valid graph: {err.message}", err.node) from None
    except ValueError as err:  # pydantic: a bad id or an empty graph
        raise r.fail(f"the result would not be a valid graph: {err}") from None
    draft.new_slots = r.slots
    return graph, _plan(draft, graph, roles, r.slots)


def _realise_node(r: Realisation, nid: str) -> tuple[Any, str]:
    """One node of the result: its role's tokens, then the resizing and checks every role shares. Records its
    shape and tokens in ``r``; returns ``(node, role)``."""
    draft, ch = r.draft, r.draft.ch
    old_shapes = draft.old.shapes()
    node = draft.nodes[nid]
    ins = [r.shapes[i] for i in node.inputs]
    was = _same_node(draft.old, nid, node)
    node = _pinned(node, was, ins, old_shapes)
    role = ch.roles[nid] if was is not None else OPS[node.op].coupling.role(node, ins)
    step = HANDLERS[role]
    if nid in draft.given:
        s, shape = draft.given[nid], None
    else:
        node, s, shape = step.realise(r, nid, node, was, ins)
    if was is not None and tuple(was.inputs) != tuple(node.inputs) and not step.producing \
            and s.width == channel_width(old_shapes[nid]):
        s = ch.slots[nid]  # rewired to a value of the same width: position i stays position i
    if s.width == 0:
        raise r.fail("this would remove every one of its channels", nid)
    if was is not None and s.width != channel_width(old_shapes[nid]) and step.resizes:
        changes = OPS[node.op].rewrite.resize(node, s.width)
        if changes:
            node, shape = node.replace(**changes), None
    if shape is None:
        shape = r.shape(node, ins, nid)
    step.check(r, nid, node, was, s)
    if channel_width(shape) != s.width:  # pragma: no cover - an internal inconsistency, never a user error
        raise r.fail(f"internal error: {s.width} channel tokens for an output of {channel_width(shape)} channels",
                     nid)
    r.shapes[nid] = shape
    r.slots[nid] = s
    return node, role


def _pinned(node: Any, was: Any, ins: list[Any], old_shapes: dict[str, Any]) -> Any:
    """The node with the fields it must write out before its input's width changes (``RewriteFacts.pin``)."""
    if was is None or [channel_width(x) for x in ins] == [channel_width(old_shapes[i]) for i in was.inputs]:
        return node
    pinned = OPS[node.op].rewrite.pin(was, [old_shapes[i] for i in was.inputs])
    return node.replace(**pinned) if pinned else node


def _same_node(old: Graph, nid: str, node: Any) -> Any:
    """The old node of id ``nid`` when it is still the same op (else the node is new)."""
    was = old.nodes.get(nid)
    return was if was is not None and was.op == node.op else None


# ---- the plan -------------------------------------------------------------------------------------------------

@dataclass
class Planner:
    """What :func:`_plan` shares with each role's :meth:`~archgraph.channels.roles.Role.group_map`."""

    draft: Draft
    graph: Graph
    roles: dict[str, str]
    slots: dict[str, Slots]
    scale: dict[int, float]

    @property
    def ch(self) -> Channels:
        return self.draft.ch

    def axis_map(self, old: Slots, new: Slots, fill: str, scaled: bool) -> Optional[AxisMap]:
        """The map of a channel axis from ``old`` to ``new`` tokens (``scaled``: with the draft's factors on the
        outgoing weights, for an axis that reads channels)."""
        return _axis_map(old, new, fill, self.draft.copy_of, self.scale if scaled else None, self.draft.uf)


def _plan(draft: Draft, graph: Graph, roles: dict[str, str], slots: dict[str, Slots]) -> TransferPlan:
    old = draft.old
    p = Planner(draft, graph, roles, slots, {draft.uf.find(t): f for t, f in draft.scale.items()})
    old_shapes = old.shapes()
    old_layouts = {nid: OPS[n.op].coupling.layout(n, [old_shapes[i] for i in n.inputs])
                   for nid, n in old.nodes.items()}
    tensors: dict[str, TensorPlan] = {}
    node_map: dict[str, Optional[str]] = {}
    for nid, node in graph.nodes.items():
        was = _same_node(old, nid, node)
        node_map[nid] = nid if was is not None else None
        if was is None:
            tensors.update(_new_tensors(p, nid, node))
        else:
            tensors.update(_kept_tensors(p, nid, node, was, old_layouts[nid]))
    sources = {t.source for t in tensors.values() if t.source is not None}
    dropped = [f"{nid}.{p}" for nid, layout in old_layouts.items() for p in layout if f"{nid}.{p}" not in sources]
    return TransferPlan(tensors, tuple(dropped), draft.exact, draft.note, node_map)


def _new_tensors(p: Planner, nid: str, node: Any) -> dict[str, TensorPlan]:
    """A new node's tensors start as the draft's fills say (``init`` by default)."""
    shapes = p.graph.shapes()
    out = {}
    for param in OPS[node.op].coupling.layout(node, [shapes[i] for i in node.inputs]):
        key = f"{nid}.{param}"
        fill, value = p.draft.fills.get(key, ("init", 0.0))
        out[key] = TensorPlan(None, fill=fill, value=value)
    return out


@dataclass(frozen=True)
class _Maps:
    """The channel axis maps of one kept node: its output channels, the input channels it reads, its own units it
    reads back (an LSTM's ``weight_hh``) and the in-group axis of a grouped conv's weight."""

    out: Optional[AxisMap] = None
    reads: Optional[AxisMap] = None
    own: Optional[AxisMap] = None
    group: Optional[AxisMap] = None

    @property
    def none(self) -> bool:
        return self.out is None and self.reads is None and self.group is None


def _maps(p: Planner, nid: str, node: Any, was: Any, layout: dict) -> _Maps:
    draft, ch, slots = p.draft, p.ch, p.slots
    coupling, producing = OPS[node.op].coupling, HANDLERS[p.roles[nid]].producing
    out_map = reads = None
    if any(a is not None for a, _ in layout.values()):
        fill = draft.fan_in if producing or OPS[node.op].rewrite.offset else "init"
        out_map = p.axis_map(ch.slots[nid], slots[nid], fill, scaled=False)
    src_old, src_new = was.inputs[0], node.inputs[0]
    # a reader rewired to a value of the same width reads it position by position (identity layers, deleted
    # nodes); otherwise channels are matched by token
    if any(b is not None for _, b in layout.values()) and \
            (src_old == src_new or slots[src_new].width != ch.slots[src_old].width):
        reads = p.axis_map(ch.slots[src_old], slots[src_new], draft.reader_fill.get(nid, draft.fan_out), scaled=True)
    gates = coupling.gates(node)
    if out_map is not None and gates > 1:   # every gate block of the units changes alike
        out_map = out_map.tiled(gates, coupling.quiet_gate if draft.quiet else None)
    own = p.axis_map(ch.slots[nid], slots[nid], draft.fan_out, scaled=True) if coupling.recurrent(node) else None
    return _Maps(out_map, reads, own, HANDLERS[p.roles[nid]].group_map(p, nid, node, was))


def _kept_tensors(p: Planner, nid: str, node: Any, was: Any, old_layout: dict) -> dict[str, TensorPlan]:
    """An old node's tensors: copied, or mapped along the channel axes whose tokens changed."""
    draft = p.draft
    shapes = p.graph.shapes()
    # a node the rule did not touch keeps its layout (it depends on the node's fields only)
    layout = old_layout if node is was else OPS[node.op].coupling.layout(node, [shapes[i] for i in node.inputs])
    maps = _maps(p, nid, node, was, layout)
    if maps.none and nid not in draft.given and layout.keys() == old_layout.keys():
        return {f"{nid}.{param}": TensorPlan(f"{nid}.{param}") for param in layout}
    own = OPS[node.op].coupling.recurrent(node)
    noise = _noise(draft, nid, p.slots[nid]) if HANDLERS[p.roles[nid]].producing else None
    tensors = {}
    for param, axes in layout.items():
        key = f"{nid}.{param}"
        if param in old_layout:
            tensors[key] = _mapped(key, param, axes, old_layout[param][1] is not None, maps, param in own, noise)
        else:
            fill, value = draft.fills.get(key, ("init", 0.0))
            tensors[key] = TensorPlan(None, fill=fill, value=value)
    return tensors


def _mapped(key: str, param: str, axes: tuple, had_in: bool, maps: _Maps, own: bool, noise: Any) -> TensorPlan:
    """One kept tensor mapped along its channel axes ``axes`` (``(out_axis, in_axis)``); ``had_in``: its old layout
    had an in axis too; ``own``: its in axis reads the node's own units."""
    out_axis, in_axis = axes
    mapped = []
    if out_axis is not None and maps.out is not None:
        mapped.append((out_axis, maps.out))
    reads = maps.own if own else maps.reads
    if in_axis is not None and had_in and reads is not None:
        mapped.append((in_axis, reads))
    weight = param == "weight"
    if maps.group is not None and weight:
        mapped.append((1, maps.group))
    tensor_noise = Noise(out_axis, *noise) if noise and weight and out_axis is not None else None
    return TensorPlan(key, tuple(mapped), noise=tensor_noise)


def _noise(draft: Draft, nid: str, s: Slots) -> Optional[tuple[tuple[tuple[int, int], ...], float, int]]:
    """``(pairs, eps, seed)`` of the (kept, copy) channel pairs of a producer the draft perturbs, or ``None``."""
    if not draft.noise or nid not in draft.given or draft.eps <= 0:
        return None
    pos = {t: i for i, t in enumerate(s.tokens)}
    pairs = tuple((pos[a], pos[b]) for a, b in draft.noise if a in pos and b in pos)
    return (pairs, draft.eps, draft.seed) if pairs else None


def _axis_map(old: Slots, new: Slots, fill: str, copy_of: dict[int, int], scale: Optional[dict[int, float]],
              uf: UnionFind) -> Optional[AxisMap]:
    """Old position of every new position along a channel axis, matching tokens (the k-th occurrence of a token
    with its k-th old occurrence); None when nothing moves."""
    if old is new or (old.tokens == new.tokens and old.blocks == new.blocks):
        if not scale or not any(uf.find(t) in scale for t in new.tokens):
            return None
    where: dict[int, list[int]] = {}
    for i, t in enumerate(old.tokens):
        where.setdefault(t, []).append(i)
    old_blocks = old.block_sizes()
    starts = list(itertools.accumulate(old_blocks, initial=0))
    seen: dict[int, int] = {}
    index: list[int] = []
    factors: list[float] = []
    copied: list[int] = []
    for t, b in zip(new.tokens, new.block_sizes()):
        k = seen.get(t, 0)
        seen[t] = k + 1
        hits = where.get(t)
        slot, is_copy = -1, False
        if hits is not None and k < len(hits):
            slot = hits[k]
        elif t in copy_of:
            src_hits = where.get(copy_of[t])
            if src_hits is not None and k < len(src_hits):
                slot, is_copy = src_hits[k], True
        f = scale.get(uf.find(t), 1.0) if scale else 1.0
        if slot < 0:
            index.extend([-1] * b)
        else:
            if old_blocks[slot] != b:  # pragma: no cover - tokens keep their blocks
                raise AssertionError("a channel changed its block size")
            if is_copy:
                copied.extend(range(len(index), len(index) + b))
            index.extend(range(starts[slot], starts[slot] + b))
        factors.extend([f] * b)
    has_scale = any(f != 1.0 for f in factors)
    return AxisMap(tuple(index), old.width, fill, tuple(factors) if has_scale else None, frozenset(copied))

