"""Channel roles as handlers: one class per role, holding every step that depends on the role side by side.

An op's channel role (:attr:`archgraph.ops.opdef.Coupling.role`) says how its output channels relate to its
inputs'. Three passes depend on it, and each asks the role's handler in :data:`HANDLERS` (keyed by role, as
:data:`archgraph.ops.registry.OPS` is keyed by op):

- :meth:`Role.analyse`: the output's channel tokens in :func:`archgraph.channels.analyse` (fresh, passed on,
  permuted, concatenated...) and the ties and frozen reasons they bring;
- :meth:`Role.realise`: the same for a rule's draft in :func:`archgraph.rules.draft.realise`, where a node may be
  new, rewired or resized, and :meth:`Role.check` for what must still hold afterwards (a grouped conv's groups);
- :meth:`Role.group_map`: the transfer plan's extra weight axis, for the roles that have one (a grouped conv's
  in-group axis).

A new role is one class here, registered in :data:`HANDLERS`; ``tests/test_registry.py`` checks that every role an
op can declare has its handler. Nothing here imports torch.

>>> from archgraph.ops.registry import ROLES
>>> sorted(HANDLERS) == sorted(ROLES)
True
>>> HANDLERS[SOURCE].producing, HANDLERS[THROUGH].producing
(True, False)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ..ops.registry import CONCAT, FLATTEN, GROUPED, MERGE, MIXER, OPS, SHUFFLE, SLICE, SOURCE, THROUGH, channel_width
from ..plan import AxisMap
from . import Grouping, Slots, concat_slots, flatten_slots, permuted, tie_groups, tied_inputs

if TYPE_CHECKING:   # the contexts the passes hand to the handlers (no import cycle at run time)
    from ..rules.draft import Planner, Realisation
    from . import Analysis

Shape = tuple[int, ...]


class Role:
    """The steps of one channel role. The base class is a role whose output carries its first input's channels
    unchanged (THROUGH); the other roles override what differs."""

    name: str = THROUGH
    #: the node makes its output's channel tokens itself (SOURCE, GROUPED, MIXER): a rule widens or prunes it as a
    #: producer, and its new channels start as the draft's ``fan_in`` says
    producing: bool = False
    #: a width change of its output resizes the node (``RewriteFacts.resize``); a merge only checks its inputs agree
    resizes: bool = True

    def analyse(self, a: "Analysis", nid: str, node: Any, ins: list[Shape]) -> Slots:
        """The tokens of ``nid``'s output, from its inputs' tokens ``a.slots`` (tying and freezing in ``a``)."""
        return a.slots[node.inputs[0]]

    def realise(self, r: "Realisation", nid: str, node: Any, was: Any, ins: list[Shape]
                ) -> tuple[Any, Slots, Optional[Shape]]:
        """``(node, tokens, shape)`` of ``nid`` in a rule's result (``was``: the old node of that id and op, or
        ``None`` for a new one); ``shape`` is ``None`` when not computed yet."""
        return node, r.slots[node.inputs[0]], None

    def check(self, r: "Realisation", nid: str, node: Any, was: Any, out: Slots) -> None:
        """Raise ``r.fail(...)`` when the realised node breaks what its role needs (nothing, by default)."""

    def group_map(self, p: "Planner", nid: str, node: Any, was: Any) -> Optional[AxisMap]:
        """The transfer map of a weight axis the channel layout does not name (none, by default)."""
        return None


class Through(Role):
    """Output channel ``c`` depends on input channel ``c`` only (norms, activations, pools, depthwise convs); a
    norm in groups (``group_norm``) ties the channels at one position of every group."""

    name = THROUGH

    def analyse(self, a, nid, node, ins):
        first = a.slots[node.inputs[0]]
        groups = OPS[node.op].coupling.norm_groups(node)
        if groups > 1:
            tie_groups(a.uf, first, groups, a.ties, f"normalised in groups by '{nid}': channels go at the same "
                                                    "position of every group")
        return first


class Source(Role):
    """Makes a new channel space from its input's (conv, linear, embedding, rnn)."""

    name = SOURCE
    producing = True

    def analyse(self, a, nid, node, ins):
        return a.fresh(nid, channel_width(a.shapes[nid]))

    def realise(self, r, nid, node, was, ins):
        if was is not None:
            return node, r.ch.slots[nid], None
        shape = r.shape(node, ins, nid)
        return node, Slots(r.draft.fresh(channel_width(shape))), shape


class Mixer(Source):
    """Makes new channels from all of its input's, as many as it reads (attention): fresh tokens tied to its
    input's, position by position, so a residual stream ``x + attention(norm(x))`` stays one space."""

    name = MIXER

    def analyse(self, a, nid, node, ins):
        out = super().analyse(a, nid, node, ins)
        for mine, theirs in zip(out.tokens, a.slots[node.inputs[0]].tokens):
            a.uf.union(mine, theirs)
        return out

    def realise(self, r, nid, node, was, ins):
        node, out, shape = super().realise(r, nid, node, was, ins)
        if was is None:
            for mine, theirs in zip(out.tokens, r.slots[node.inputs[0]].tokens):
                r.uf.union(mine, theirs)
        return node, out, shape


class Grouped(Source):
    """A grouped conv, not depthwise: fresh tokens, tied to nothing; its input and output split into ``groups``
    equal groups (:class:`~archgraph.channels.Grouping`) that must stay equal: each group chooses which of its
    channels go, the same number from every group."""

    name = GROUPED

    def analyse(self, a, nid, node, ins):
        out = super().analyse(a, nid, node, ins)
        a.groupings += [Grouping(nid, "in", node.groups, a.slots[node.inputs[0]].tokens),
                        Grouping(nid, "out", node.groups, out.tokens)]
        return out

    def check(self, r, nid, node, was, out):
        """On each side (input, output) every group keeps the same number of its own channels, new channels come
        at the same in-group positions of every group, and no channel moves to another group."""
        if was is None:
            return
        ch, draft = r.ch, r.draft
        sides = [(ch.slots[nid], out, draft.fan_in, "output")]
        if group_positions(node, was, ch.slots, r.slots) is not None:
            sides.append((ch.slots[was.inputs[0]], r.slots[node.inputs[0]], draft.fan_out, "input"))
        for old, new, fill, side in sides:
            full = r.axis_map(old, new, fill)
            if full is None or per_group(full.index, full.old_size, full.size, node.groups) is not False:
                continue
            kept = _kept_per_group(full.index, full.old_size, node.groups)
            raise r.fail(f"it is a grouped conv (groups={node.groups}) whose groups would change unevenly: its "
                         f"{side} groups would keep {kept} channels; the same number must go from (or come to) "
                         "every group, and no channel can move to another group", nid)

    def group_map(self, p, nid, node, was):
        """The in-group axis (1) of the weight: the output side for a transposed conv (``[in, out / groups,
        ...]``), the input side for a conv (``[out, in / groups, ...]``) when its input channels change."""
        if OPS[node.op].coupling.group_side == "out":
            full = p.axis_map(p.ch.slots[nid], p.slots[nid], p.draft.fan_in, scaled=False)
            return None if full is None else grouped_in_map(full, node.groups)
        if group_positions(node, was, p.ch.slots, p.slots) is None:
            return None
        full = p.axis_map(p.ch.slots[was.inputs[0]], p.slots[node.inputs[0]], p.draft.fan_out, scaled=True)
        return grouped_in_map(full, node.groups)


class Merge(Role):
    """All inputs and the output share one channel space (add, mul): the first input that spans the output's
    channel axis leads, the other such inputs are tied to it position by position, and an input that broadcasts
    along the channels (squeeze-excitation's ``[C, 1, 1]``) is frozen."""

    name = MERGE
    resizes = False

    def analyse(self, a, nid, node, ins):
        tied = tied_inputs(ins, a.shapes[nid])
        lead = a.slots[node.inputs[tied.index(True)]]
        for i, src in enumerate(node.inputs):
            other = a.slots[src]
            if not tied[i]:
                a.freeze(other, f"it is broadcast by {node.op} '{nid}'")
                continue
            if other.block_sizes() != lead.block_sizes():
                why = f"{node.op} '{nid}' adds values whose channels are laid out differently"
                a.freeze(other, why)
                a.freeze(lead, why)
            for mine, theirs in zip(other.tokens, lead.tokens):
                a.uf.union(mine, theirs)
        return lead

    def realise(self, r, nid, node, was, ins):
        shape = r.shape(node, ins, nid)
        tied = tied_inputs(ins, shape)
        lead_id = node.inputs[tied.index(True)]
        lead = r.slots[lead_id]
        for i, src in enumerate(node.inputs):
            if not tied[i] or src == lead_id:
                continue
            other = r.slots[src]
            if other.width != lead.width:
                raise r.fail(f"its inputs would no longer match: '{src}' has {other.width} channels, '{lead_id}' "
                             f"{lead.width}", nid)
            for mine, theirs in zip(other.tokens, lead.tokens):
                if r.draft.aligned and r.uf.find(mine) != r.uf.find(theirs):
                    raise r.fail(f"the new channels would not line up at this {node.op}: '{src}' and '{lead_id}' "
                                 "would hold different channels at one position", nid)
                r.uf.union(mine, theirs)
        return node, lead, shape


class Concat(Role):
    """Output channels are the inputs' channels one after another."""

    name = CONCAT

    def analyse(self, a, nid, node, ins):
        return concat_slots([a.slots[i] for i in node.inputs])

    def realise(self, r, nid, node, was, ins):
        return node, concat_slots([r.slots[i] for i in node.inputs]), None


class Flatten(Role):
    """Channel ``c`` of ``[C, H, W]`` becomes features ``c*H*W .. (c+1)*H*W - 1``: the tokens stay, each standing
    for a block of features."""

    name = FLATTEN

    def analyse(self, a, nid, node, ins):
        return flatten_slots(a.slots[node.inputs[0]], ins[0])

    def realise(self, r, nid, node, was, ins):
        return node, flatten_slots(r.slots[node.inputs[0]], ins[0]), None


class Shuffle(Role):
    """A fixed permutation of the channels (channel_shuffle, radix_softmax; ``Coupling.shuffle``): output ``c`` is
    input ``perm[c]``, and the input's channels at one place of every block are tied."""

    name = SHUFFLE

    def analyse(self, a, nid, node, ins):
        first = a.slots[node.inputs[0]]
        blocks, perm = OPS[node.op].coupling.shuffle(node, len(first.tokens))
        tie_groups(a.uf, first, blocks, a.ties, f"permuted by {node.op} '{nid}': channels go at the same place of "
                                                f"every one of its {blocks} blocks")
        return permuted(first, perm)

    def realise(self, r, nid, node, was, ins):
        first = r.slots[node.inputs[0]]
        blocks, perm = OPS[node.op].coupling.shuffle(node, first.width)
        if first.width % blocks:
            raise r.fail(f"its {first.width} input channels would not split into its {blocks} blocks; channels go "
                         "at the same place of every block", nid)
        tie_groups(r.uf, first, blocks)
        return node, permuted(first, perm), None


class Slice(Role):
    """Output channel ``c`` is input channel ``start + c``; the other input channels are dropped. A slice of
    flattened features makes frozen fresh tokens; in a rule's result ``start``/``stop`` move to the channels of the
    old range that are still there."""

    name = SLICE

    def analyse(self, a, nid, node, ins):
        first = a.slots[node.inputs[0]]
        if first.blocks is None:
            return Slots(first.tokens[node.start:node.stop])
        out = a.fresh(nid, channel_width(a.shapes[nid]))
        a.freeze(first, f"it is sliced by '{nid}' after a flatten")
        a.freeze(out, f"it is a slice of flattened features ('{nid}')")
        return out

    def realise(self, r, nid, node, was, ins):
        first = r.slots[node.inputs[0]]
        if was is None:
            return node, Slots(first.tokens[node.start:node.stop]), None
        old_first = r.ch.slots[was.inputs[0]]
        if first == old_first:
            return node, r.ch.slots[nid], None
        if first.blocks is not None or old_first.blocks is not None:
            raise r.fail("it slices flattened features whose channels would change", nid)
        inside = old_positions(old_first, first)
        kept = [i for i, old in enumerate(inside) if was.start <= old < was.stop]
        if not kept:
            raise r.fail("this would remove every one of its channels", nid)
        start, stop = kept[0], kept[-1] + 1
        if len(kept) != stop - start:
            raise r.fail("channels would be added inside its range, which a slice cannot take", nid)
        return node.replace(start=start, stop=stop), Slots(first.tokens[start:stop]), None


#: role -> its handler (every role of :data:`archgraph.ops.registry.ROLES`)
HANDLERS: dict[str, Role] = {h.name: h for h in (Source(), Through(), Merge(), Concat(), Flatten(), Grouped(),
                                                 Shuffle(), Slice(), Mixer())}


def handler(role: str) -> Role:
    """The handler of a channel role."""
    try:
        return HANDLERS[role]
    except KeyError:   # pragma: no cover - tests/test_registry.py pins the roles
        raise AssertionError(f"unknown channel role {role!r}") from None


# ---- positions (slices and grouped convs) ---------------------------------------------------------------------

def old_positions(old: Slots, new: Slots) -> list[int]:
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


def group_positions(node, was, old_slots: dict[str, Slots], slots: dict[str, Slots]):
    """For a grouped conv: ``None`` when its input is unchanged (or rewired to a value of the same width), else
    the old positions of its new input channels."""
    new, old = slots[node.inputs[0]], old_slots[was.inputs[0]]
    if was.inputs[0] != node.inputs[0] and new.width == old.width:
        return None  # rewired to a value of the same width: read position by position, as other readers
    positions = old_positions(old, new)
    if positions == list(range(old.width)):
        return None
    return positions


def per_group(positions, old_width: int, new_width: int, groups: int):
    """The in-group old position of every in-group new position, for each group (``-1`` for a new channel, at the
    same positions in every group); ``False`` when the groups would not stay equal or a channel would move to
    another group.

    >>> per_group([0, 1, -1, 2, 3, -1], 4, 6, 2)
    ((0, 1, -1), (0, 1, -1))
    >>> per_group([2, 1], 4, 2, 2)
    False
    """
    if new_width % groups or old_width % groups:
        return False
    per_old, per_new = old_width // groups, new_width // groups
    out: list[tuple[int, ...]] = []
    for k in range(groups):
        part = positions[k * per_new:(k + 1) * per_new]
        if any(p >= 0 and not k * per_old <= p < (k + 1) * per_old for p in part):
            return False
        local = tuple(p - k * per_old if p >= 0 else -1 for p in part)
        if out and [p < 0 for p in local] != [p < 0 for p in out[0]]:
            return False
        out.append(local)
    return tuple(out)


def grouped_in_map(full: AxisMap, groups: int) -> AxisMap:
    """The in-group axis of a grouped conv's weight from the map of its whole input (or output, transposed): one
    index per group when the groups keep different channels."""
    per_new = full.size // groups
    maps = per_group(full.index, full.old_size, full.size, groups)
    index = maps[0]
    scale = full.scale[:per_new] if full.scale is not None else None
    copied = frozenset(i for i in full.copied if i < per_new)
    return AxisMap(tuple(index), full.old_size // groups, full.fill, scale, copied,
                   groups=None if all(m == index for m in maps) else maps)


def _kept_per_group(index, old_width: int, groups: int) -> str:
    per = max(old_width // groups, 1)
    kept = [0] * groups
    for p in index:
        if p >= 0:
            kept[min(p // per, groups - 1)] += 1
    return ", ".join(map(str, kept[:4])) + (", ..." if groups > 4 else "")
