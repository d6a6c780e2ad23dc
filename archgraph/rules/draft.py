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
from typing import Optional

from ..channels import (CONCAT, FLATTEN, GROUPED, MERGE, MIXER, SHUFFLE, SLICE, Channels, Slots, concat_slots,
                        flatten_slots, permuted, producing_role, tie_groups, tied_inputs)
from ..errors import ArchgraphError, GraphError, RuleError
from ..graph import Graph
from ..ops.registry import OPS, channel_width
from ..plan import AxisMap, Noise, TensorPlan, TransferPlan
from .. import topology


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

    def __post_init__(self):
        self.uf = self.ch.uf.copy()
        self._tokens = itertools.count(self.ch.next_token)

    def fresh(self, n: int) -> tuple[int, ...]:
        return tuple(itertools.islice(self._tokens, n))


def realise(draft: Draft, rule) -> tuple[Graph, TransferPlan]:
    """The new graph and the plan of a draft (see the module docstring)."""
    old, ch = draft.old, draft.ch
    old_shapes = old.shapes()
    uf = draft.uf
    shapes: dict[str, tuple[int, ...]] = {k: v if isinstance(v, tuple) else tuple(v) for k, v in old.inputs.items()}
    slots: dict[str, Slots] = {k: ch.slots[k] for k in old.inputs}
    nodes: dict = {}
    roles: dict[str, str] = {}

    def fail(message: str, node: Optional[str] = None) -> RuleError:
        return RuleError(message, rule=rule.name, node=node)

    try:
        order = topology.order(draft.nodes, old.inputs)
    except GraphError as err:
        raise fail(err.message, err.node) from None
    for nid in order:
        node = draft.nodes[nid]
        ins = [shapes[i] for i in node.inputs]
        was = old.nodes.get(nid)
        if was is not None and was.op != node.op:
            was = None
        if was is not None and [channel_width(x) for x in ins] != \
                [channel_width(old_shapes[i]) for i in was.inputs]:
            pinned = OPS[node.op].rewrite.pin(was, [old_shapes[i] for i in was.inputs])
            if pinned:
                node = node.replace(**pinned)
        role = ch.roles[nid] if was is not None else _role(node, ins)
        roles[nid] = role
        rewired = was is not None and tuple(was.inputs) != tuple(node.inputs)
        shape = None
        if nid in draft.given:
            s = draft.given[nid]
        elif producing_role(role):
            if was is not None:
                s = ch.slots[nid]
            else:
                shape = _shape(node, ins, nid, fail)
                s = Slots(draft.fresh(channel_width(shape)))
                if role == MIXER:
                    for a, b in zip(s.tokens, slots[node.inputs[0]].tokens):
                        uf.union(a, b)
        elif role == MERGE:
            shape = _shape(node, ins, nid, fail)
            tied = tied_inputs(ins, shape)
            lead = slots[node.inputs[tied.index(True)]]
            for i, src in enumerate(node.inputs):
                if tied[i] and src != node.inputs[tied.index(True)]:
                    other = slots[src]
                    if other.width != lead.width:
                        raise fail(f"its inputs would no longer match: '{src}' has {other.width} channels, "
                                   f"'{node.inputs[tied.index(True)]}' {lead.width}", nid)
                    for a, b in zip(other.tokens, lead.tokens):
                        if draft.aligned and uf.find(a) != uf.find(b):
                            raise fail(f"the new channels would not line up at this {node.op}: '{src}' and "
                                       f"'{node.inputs[tied.index(True)]}' would hold different channels at one "
                                       "position", nid)
                        uf.union(a, b)
            s = lead
        elif role == CONCAT:
            s = concat_slots([slots[i] for i in node.inputs])
        elif role == FLATTEN:
            s = flatten_slots(slots[node.inputs[0]], ins[0])
        elif role == SHUFFLE:
            first = slots[node.inputs[0]]
            blocks, perm = OPS[node.op].coupling.shuffle(node, first.width)
            if first.width % blocks:
                raise fail(f"its {first.width} input channels would not split into its {blocks} blocks; channels "
                           "go at the same place of every block", nid)
            tie_groups(uf, first, blocks)
            s = permuted(first, perm)
        elif role == SLICE:
            node, s = _slice(node, was, ch, slots, nid, fail)
        else:
            s = slots[node.inputs[0]]
        if rewired and not producing_role(role) and s.width == channel_width(old_shapes[nid]):
            s = ch.slots[nid]  # rewired to a value of the same width: position i stays position i
        if s.width == 0:
            raise fail("this would remove every one of its channels", nid)
        if was is not None and s.width != channel_width(old_shapes[nid]) and role != MERGE:
            changes = OPS[node.op].rewrite.resize(node, s.width)
            if changes:
                node = node.replace(**changes)
                shape = None
        if shape is None:
            shape = _shape(node, ins, nid, fail)
        if was is not None and role == GROUPED:
            _check_groups(node, was, draft, slots, s, nid, fail)
        if channel_width(shape) != s.width:  # pragma: no cover - an internal inconsistency, never a user error
            raise fail(f"internal error: {s.width} channel tokens for an output of {channel_width(shape)} channels",
                       nid)
        shapes[nid] = shape
        slots[nid] = s
        nodes[nid] = node
    for out in draft.outputs:
        if out in old_shapes and shapes.get(out) != old_shapes[out]:
            raise fail(f"graph output '{out}' would change shape from {list(old_shapes[out])} to "
                       f"{list(shapes[out])}", out)
    try:
        graph = Graph(archgraph=old.archgraph, name=old.name, inputs=old.inputs, nodes=nodes,
                      outputs=list(draft.outputs))
    except ArchgraphError as err:
        raise fail(f"the result would not be a valid graph: {err.message}", err.node) from None
    except ValueError as err:  # pydantic: a bad id or an empty graph
        raise fail(f"the result would not be a valid graph: {err}") from None
    plan = _plan(draft, graph, roles, slots)
    return graph, plan


def _slice(node, was, ch: Channels, slots: dict[str, Slots], nid: str, fail):
    """A slice keeps the channels of its old range that are still there: ``start``/``stop`` move to them."""
    first = slots[node.inputs[0]]
    if was is None:
        return node, Slots(first.tokens[node.start:node.stop])
    old_first = ch.slots[was.inputs[0]]
    if first == old_first:
        return node, ch.slots[nid]
    if first.blocks is not None or old_first.blocks is not None:
        raise fail("it slices flattened features whose channels would change", nid)
    inside = _old_positions(old_first, first)
    kept = [i for i, old in enumerate(inside) if was.start <= old < was.stop]
    if not kept:
        raise fail("this would remove every one of its channels", nid)
    start, stop = kept[0], kept[-1] + 1
    if len(kept) != stop - start:
        raise fail("channels would be added inside its range, which a slice cannot take", nid)
    return node.replace(start=start, stop=stop), Slots(first.tokens[start:stop])


def _old_positions(old: Slots, new: Slots) -> list[int]:
    """The old position of every new position, matching tokens (k-th occurrence with k-th); -1 for a new token."""
    where: dict[int, list[int]] = {}
    for i, t in enumerate(old.tokens):
        where.setdefault(t, []).append(i)
    seen: dict[int, int] = {}
    out = []
    for t in new.tokens:
        k = seen.get(t, 0)
        seen[t] = k + 1
        hits = where.get(t, [])
        out.append(hits[k] if k < len(hits) else -1)
    return out


def _check_groups(node, was, draft: Draft, slots: dict[str, Slots], out: Slots, nid: str, fail) -> None:
    """A grouped conv's groups must stay equal: on each side (input, output) every group keeps the same number of
    its own channels (which ones, each group chooses: ``analyse`` records the groups, the rules take as many from
    each), new channels come at the same in-group positions of every group, and no channel moves to another group."""
    ch = draft.ch
    sides = [(ch.slots[nid], out, draft.fan_in, "output")]
    if group_positions(node, was, ch, slots) is not None:
        sides.append((ch.slots[was.inputs[0]], slots[node.inputs[0]], draft.fan_out, "input"))
    for old, new, fill, side in sides:
        full = _axis_map(old, new, fill, draft.copy_of, None, draft.uf)
        if full is None or per_group(full.index, full.old_size, full.size, node.groups) is not False:
            continue
        kept = _kept_per_group(full.index, full.old_size, node.groups)
        raise fail(f"it is a grouped conv (groups={node.groups}) whose groups would change unevenly: its {side} "
                   f"groups would keep {kept} channels; the same number must go from (or come to) every group, "
                   "and no channel can move to another group", nid)


def _kept_per_group(index, old_width: int, groups: int) -> str:
    per = max(old_width // groups, 1)
    kept = [0] * groups
    for p in index:
        if p >= 0:
            kept[min(p // per, groups - 1)] += 1
    return ", ".join(map(str, kept[:4])) + (", ..." if groups > 4 else "")


def group_positions(node, was, ch: Channels, slots: dict[str, Slots]):
    """For a grouped conv: ``None`` when its input is unchanged (or rewired to a value of the same width), else
    the old positions of its new input channels."""
    new, old = slots[node.inputs[0]], ch.slots[was.inputs[0]]
    if was.inputs[0] != node.inputs[0] and new.width == old.width:
        return None  # rewired to a value of the same width: read position by position, as other readers
    positions = _old_positions(old, new)
    if positions == list(range(old.width)):
        return None
    return positions


def per_group(positions, old_width: int, new_width: int, groups: int):
    """The in-group old position of every in-group new position, for each group (``-1`` for a new channel, at the
    same positions in every group); ``False`` when the groups would not stay equal or a channel would move to
    another group."""
    if new_width % groups or old_width % groups:
        return False
    per_old, per_new = old_width // groups, new_width // groups
    out = []
    for k in range(groups):
        part = positions[k * per_new:(k + 1) * per_new]
        if any(p >= 0 and not k * per_old <= p < (k + 1) * per_old for p in part):
            return False
        local = tuple(p - k * per_old if p >= 0 else -1 for p in part)
        if out and [p < 0 for p in local] != [p < 0 for p in out[0]]:
            return False
        out.append(local)
    return tuple(out)


def _grouped_in_map(full: AxisMap, groups: int) -> AxisMap:
    """The in-group axis of a grouped conv's weight from the map of its whole input (or output, transposed): one
    index per group when the groups keep different channels."""
    per_new, per_old = full.size // groups, full.old_size // groups
    maps = per_group(full.index, full.old_size, full.size, groups)
    index = maps[0]
    scale = full.scale[:per_new] if full.scale is not None else None
    copied = frozenset(i for i in full.copied if i < per_new)
    return AxisMap(tuple(index), per_old, full.fill, scale, copied,
                   groups=None if all(m == index for m in maps) else maps)


def _role(node, ins) -> str:
    return OPS[node.op].coupling.role(node, ins)


def _shape(node, ins, nid, fail):
    try:
        return tuple(OPS[node.op].sizes.shape(node, ins))
    except ArchgraphError as err:
        raise fail(f"the result would not be a valid graph: {err.message}", nid) from None


# ---- the plan -------------------------------------------------------------------------------------------------

def _plan(draft: Draft, graph: Graph, roles: dict[str, str], slots: dict[str, Slots]) -> TransferPlan:
    old, ch, uf = draft.old, draft.ch, draft.uf
    scale = {uf.find(t): f for t, f in draft.scale.items()}
    new_shapes = graph.shapes()
    old_shapes = old.shapes()
    tensors: dict[str, TensorPlan] = {}
    sources: set[str] = set()
    node_map: dict[str, Optional[str]] = {}
    old_layouts = {nid: OPS[n.op].coupling.layout(n, [old_shapes[i] for i in n.inputs]) for nid, n in old.nodes.items()}
    for nid, node in graph.nodes.items():
        was = old.nodes.get(nid)
        if was is not None and was.op != node.op:
            was = None
        node_map[nid] = nid if was is not None else None
        if was is None:
            for param in OPS[node.op].coupling.layout(node, [new_shapes[i] for i in node.inputs]):
                key = f"{nid}.{param}"
                fill, value = draft.fills.get(key, ("init", 0.0))
                tensors[key] = TensorPlan(None, fill=fill, value=value)
            continue
        old_layout = old_layouts[nid]
        # a node the rule did not touch keeps its layout (it depends on the node's fields only)
        layout = old_layout if node is was else OPS[node.op].coupling.layout(node, [new_shapes[i] for i in node.inputs])
        out_map = in_map = None
        if any(a is not None for a, _ in layout.values()):
            fill = draft.fan_in if producing_role(roles[nid]) or OPS[node.op].rewrite.offset else "init"
            out_map = _axis_map(ch.slots[nid], slots[nid], fill, draft.copy_of, None, uf)
        if any(b is not None for _, b in layout.values()):
            src_old, src_new = was.inputs[0], node.inputs[0]
            # a reader rewired to a value of the same width reads it position by position (identity layers,
            # deleted nodes); otherwise channels are matched by token
            if src_old == src_new or slots[src_new].width != ch.slots[src_old].width:
                in_map = _axis_map(ch.slots[src_old], slots[src_new], draft.fan_out, draft.copy_of, scale, uf)
        group_map = None  # the in-group axis of a grouped conv's weight (not in the layout: it is not a channel axis)
        if roles[nid] == GROUPED and OPS[node.op].coupling.group_side == "out":   # transposed: [in, out / groups, ...]
            full = _axis_map(ch.slots[nid], slots[nid], draft.fan_in, draft.copy_of, None, uf)
            if full is not None:
                group_map = _grouped_in_map(full, node.groups)
        elif roles[nid] == GROUPED and group_positions(node, was, ch, slots) is not None:
            full = _axis_map(ch.slots[was.inputs[0]], slots[node.inputs[0]], draft.fan_out, draft.copy_of, scale, uf)
            group_map = _grouped_in_map(full, node.groups)
        if out_map is None and in_map is None and group_map is None and nid not in draft.given \
                and layout.keys() == old_layout.keys():
            for param in layout:
                key = f"{nid}.{param}"
                tensors[key] = TensorPlan(key)
                sources.add(key)
            continue
        opdef = OPS[node.op]
        gates, own = opdef.coupling.gates(node), opdef.coupling.recurrent(node)
        if out_map is not None and gates > 1:   # every gate block of the units changes alike
            out_map = out_map.tiled(gates, opdef.coupling.quiet_gate if draft.quiet else None)
        own_map = None   # the in axis of the tensors that read the node's own units (an LSTM's weight_hh)
        if own:
            own_map = _axis_map(ch.slots[nid], slots[nid], draft.fan_out, draft.copy_of, scale, uf)
        noise = None
        if draft.noise and producing_role(roles[nid]) and nid in draft.given:
            pos = {t: i for i, t in enumerate(slots[nid].tokens)}
            pairs = tuple((pos[a], pos[b]) for a, b in draft.noise if a in pos and b in pos)
            if pairs and draft.eps > 0:
                noise = (pairs, draft.eps, draft.seed)
        for param, (out_axis, in_axis) in layout.items():
            key = f"{nid}.{param}"
            if param not in old_layout:
                fill, value = draft.fills.get(key, ("init", 0.0))
                tensors[key] = TensorPlan(None, fill=fill, value=value)
                continue
            old_out, old_in = old_layout[param]
            axes = []
            if out_axis is not None and out_map is not None:
                axes.append((out_axis, out_map))
            if in_axis is not None and old_in is not None and param in own:
                if own_map is not None:
                    axes.append((in_axis, own_map))
            elif in_axis is not None and old_in is not None and in_map is not None:
                axes.append((in_axis, in_map))
            if group_map is not None and param == "weight":
                axes.append((1, group_map))
            tensor_noise = None
            if noise is not None and param == "weight" and out_axis is not None:
                tensor_noise = Noise(out_axis, *noise)
            tensors[key] = TensorPlan(key, tuple(axes), noise=tensor_noise)
            sources.add(key)
    dropped = [f"{nid}.{p}" for nid, layout in old_layouts.items() for p in layout if f"{nid}.{p}" not in sources]
    return TransferPlan(tensors, tuple(dropped), draft.exact, draft.note, node_map)


def _axis_map(old: Slots, new: Slots, fill: str, copy_of: dict[int, int], scale: Optional[dict[int, float]],
              uf) -> Optional[AxisMap]:
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

