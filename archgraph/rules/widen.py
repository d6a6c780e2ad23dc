"""Widening rules: ``add_filters`` (new output channels) and ``split_filters`` (one unit becomes two).

Both widen a conv2d or linear together with everything tied to its output channels (see
:mod:`archgraph.channels`): batchnorms, activations and pools after it, depthwise convs (their groups follow), the
other producers of a residual add, concat offsets and the linear layers reading a flatten of it. New channels are
appended to every producer of the space; readers get new input positions at the matching places. Where a concat is
added to a value laid out as a whole (a DenseNet-style concat meeting a residual), a new channel goes into the
concat's part that holds its neighbour (appended to that part's producers) and at the matching place in the
producers of the whole (:meth:`~archgraph.channels.Channels.placement`).

>>> import archgraph
>>> from archgraph import rules
>>> g = archgraph.load("examples/seeds/resnet_cifar.yaml")
>>> rw = archgraph.apply(g, rules.AddFilters(node="b1_c2", count=4))
>>> rw.graph.nodes["stem"].out_channels, rw.graph.nodes["b1_c2"].out_channels, rw.exact
(20, 20, True)
"""
from __future__ import annotations

import random
from typing import ClassVar, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt

from ..channels import GROUPED, MIXER, SLICE, SOURCE, THROUGH, Channels, Slots, Space, analyse
from ..limits import env_name, limit
from ..ops.registry import OPS
from .base import Rewrite, Rule
from .draft import Draft, realise


def widenable(rule: Rule, graph, node: str) -> tuple[Channels, Space]:
    """The channel space of ``node`` if a rule may add channels to it; a :class:`RuleError` saying why not."""
    rule.need_node(graph, node)
    ch = analyse(graph)
    n = graph.nodes[node]
    role = ch.roles[node]
    if role not in (SOURCE, MIXER):
        if OPS[n.op].traits.weighted and role == THROUGH:
            makers = ", ".join(f"'{p}'" for p in ch.space(node).producers)
            raise rule.error(f"'{node}' is a depthwise conv: its channels follow its input's; widen the layer that "
                             f"makes them ({makers})", node=node, field="node")
        if role == GROUPED:
            raise rule.error(f"'{node}' is a grouped conv (groups={n.groups}): only whole groups could change, "
                             "which archgraph does not do", node=node, field="node")
        raise rule.error(f"'{node}' is a {n.op}; {rule.name} widens a conv2d or linear", node=node, field="node")
    space = ch.space(node)
    if space.frozen:
        raise rule.error(f"its channels cannot change: {space.frozen}", node=node, field="node")
    if space.irregular:
        raise rule.error(f"its channels cannot be widened uniformly: {space.irregular}", node=node, field="node")
    return ch, space


def add_channels(draft: Draft, space: Space, count: int, anchors=None, rule=None) -> list[dict[str, int]]:
    """Add ``count`` channels to the producers of ``space``; returns, per new channel, each receiver's token.

    New channel ``j`` goes next to class ``anchors[j]`` (default: ``space``'s last class), as
    :meth:`~archgraph.channels.Channels.placement` says: appended where every producer makes the whole space; with
    a concat tied to something laid out differently, appended to the producers of the anchor's part and inserted
    at the matching place in the producers of the whole (merges check that the places agree)."""
    ch = draft.ch
    anchors = list(anchors) if anchors is not None else [space.classes[-1]] * count
    lists = {p: list(ch.slots[p].tokens) for p in space.producers}
    block_of: dict[int, frozenset] = {}   # new token -> the block it goes after
    new: list[dict[str, int]] = []
    for k in anchors:
        placed = ch.placement(space.node, k)
        if isinstance(placed, str):
            raise rule.error(f"its channels cannot be widened here: {placed}", node=space.node, field="node")
        receivers, block = placed
        per_producer = {}
        for p in receivers:
            tokens = lists.setdefault(p, list(ch.slots[p].tokens))
            last = max(i for i, t in enumerate(tokens) if block_of.get(t) == block or
                       (t not in block_of and ch.cls(t) in block))
            (t,) = draft.fresh(1)
            tokens.insert(last + 1, t)
            block_of[t] = block
            per_producer[p] = t
        first, *rest = per_producer.values()
        for t in rest:
            draft.uf.union(first, t)
        new.append(per_producer)
    for p, tokens in lists.items():
        if len(tokens) != len(ch.slots[p].tokens):
            draft.given[p] = Slots(tuple(tokens))
    draft.aligned = True
    return new


def token_of(ch: Channels, producer: str, cls: int) -> int:
    """``producer``'s token of class ``cls`` (each producer of a widenable space makes a class once)."""
    return next(t for t in ch.slots[producer].tokens if ch.cls(t) == cls)


def mixers(ch: Channels, space: Space) -> list[str]:
    """The nodes (layernorm, rmsnorm) normalising over the channels of ``space``."""
    roots = set(space.classes)
    find = ch.uf.find
    return [nid for nid in ch.mixing
            if any(find(t) in roots for t in ch.slots[ch.graph.nodes[nid].inputs[0]].tokens)]


def rescalable(ch: Channels, space: Space) -> bool:
    """Whether every norm over these channels is an affine rmsnorm, so zero new channels can be compensated."""
    found = mixers(ch, space)
    return bool(found) and all(OPS[ch.graph.nodes[n].op].rescalable and ch.graph.nodes[n].elementwise_affine
                               for n in found)


def rescale_norms(draft: Draft, ch: Channels, space: Space, count: int) -> list[str]:
    """Set each rmsnorm's eps to ``eps * D / (D + count)`` in the draft; returns the norms whose weight must be
    scaled by ``sqrt(D / (D + count))`` (see :func:`scale_norm_weights`)."""
    found = mixers(ch, space)
    width = len(space.classes)
    for nid in found:
        node = draft.nodes[nid]
        if node.eps is not None:
            draft.nodes[nid] = node.replace(eps=node.eps * width / (width + count))
    return found


def scale_norm_weights(plan, norms: list[str], width: int, count: int):
    """The plan with the old entries of each rmsnorm's weight scaled by ``sqrt(width / (width + count))``."""
    import dataclasses
    import math
    factor = math.sqrt(width / (width + count))
    tensors = dict(plan.tensors)
    for nid in norms:
        key = f"{nid}.weight"
        tp = tensors[key]
        axes = tuple((a, dataclasses.replace(m, scale=tuple(factor * (1.0 if f is None else f) for f in
                                                            (m.scale or (None,) * m.size))))
                     for a, m in tp.axes)
        tensors[key] = dataclasses.replace(tp, axes=axes)
    return dataclasses.replace(plan, tensors=tensors)


def mixing_note(ch: Channels, space: Space) -> str:
    mixer = ch.mixes(set(space.classes))
    return f"'{mixer}' normalises over these channels, so new channels change the others" if mixer else ""


def copies_note(ch: Channels, space: Space) -> str:
    """Why copies of channels (split_filters, net2net) may not keep the function: a slice of a value holding them
    can keep a channel and drop its copy, whose share of the outgoing weight is then lost."""
    roots = set(space.classes)
    cut = next((nid for nid in ch.readers(roots) if ch.roles.get(nid) == SLICE), None)
    return (f"'{cut}' keeps only part of a value holding these channels: a copy it drops takes its share of the "
            f"outgoing weight with it") if cut else ""


class AddFilters(Rule):
    """Add ``count`` output channels to a conv2d or linear and to everything tied to them.

    ``init``: ``preserve`` (new incoming weights random, outgoing zero: same function), ``random`` (both random),
    ``net2net`` (Net2WiderNet: copies of randomly chosen channels, outgoing weights divided among the copies:
    same function), ``zero`` (both zero: same function), ``gradmax`` (GradMax: incoming zero; outgoing zero in the
    plan, then chosen from the gradient on a batch by ``archgraph.rewrite(..., batch=(inputs, targets))``, see
    :mod:`archgraph.fx.gradmax`: same function).
    """

    name: ClassVar[str] = "add_filters"
    node: str
    count: PositiveInt = 1
    init: Literal["preserve", "random", "net2net", "zero", "gradmax"] = "preserve"
    seed: int = 0

    def apply(self, graph) -> Rewrite:
        ch, space = widenable(self, graph, self.node)
        if len(space.classes) + self.count > limit("width"):  # before the channel tables are allocated
            raise self.error(f"{len(space.classes):,} + {self.count:,} channels is over the width limit of "
                             f"{limit('width'):,} (a typo? to allow it, set {env_name('width')})",
                             node=self.node, field="count")
        draft = Draft(graph, ch, dict(graph.nodes), list(graph.outputs), seed=self.seed)
        draft.fan_in, draft.fan_out = {"preserve": ("init", "zero"), "random": ("init", "init"),
                                       "net2net": ("init", "init"), "zero": ("zero", "zero"),
                                       "gradmax": ("zero", "zero")}[self.init]
        if self.init == "net2net":
            width = len(space.classes)
            rng = random.Random(self.seed)
            picks = [rng.randrange(width) for _ in range(self.count)]
            replicas = {i: 1 + picks.count(i) for i in set(picks)}
            new = add_channels(draft, space, self.count, [space.classes[i] for i in picks], self)
            for j, i in enumerate(picks):
                for p, t in new[j].items():
                    draft.copy_of[t] = token_of(ch, p, space.classes[i])
                    draft.scale[t] = 1.0 / replicas[i]
                    draft.scale[draft.copy_of[t]] = 1.0 / replicas[i]
        else:
            add_channels(draft, space, self.count)
        draft.quiet = self.init != "random"   # new LSTM/GRU units: state and output stay zero
        norms = []
        if self.init in ("preserve", "zero") and rescalable(ch, space):
            # rmsnorms over the new channels: the new channels carry zeros (their makers' new weights are zero)
            # and each norm's weight and eps are rescaled, which keeps the function exactly
            draft.fan_in = "zero"
            norms = rescale_norms(draft, ch, space, self.count)
            note = ""
            if any(draft.nodes[n].eps is None for n in norms):
                note = ("exact up to rounding: an rmsnorm with eps=None (the dtype's machine epsilon) keeps it; "
                        "set eps to make it exact")
        else:
            note = mixing_note(ch, space) or (copies_note(ch, space) if self.init == "net2net" else "")
        draft.exact = self.init != "random" and (not note or note.startswith("exact up to rounding"))
        draft.note = note or {"random": "new channels start random and are read with random weights",
                              "gradmax": "gradmax: incoming weights start at zero, outgoing ones are chosen from the "
                                         "gradient on a batch (archgraph.rewrite(..., batch=...))"}.get(self.init,
                                                                                                        "")
        graph2, plan = realise(draft, self)
        if norms:
            plan = scale_norm_weights(plan, norms, len(space.classes), self.count)
        return Rewrite(graph2, graph, self, plan)


class SplitFilters(Rule):
    """Split units in two (S2D / Firefly style): each listed output channel of a conv2d or linear gets a copy
    appended; the copies' incoming weights are the original's ``+eps*z`` and ``-eps*z`` (``z`` standard normal),
    and both halves' outgoing weights are halved. With ``eps=0`` the function is unchanged."""

    name: ClassVar[str] = "split_filters"
    node: str
    indices: tuple[NonNegativeInt, ...] = Field(min_length=1)
    eps: NonNegativeFloat = 1e-2
    seed: int = 0

    def apply(self, graph) -> Rewrite:
        ch, space = widenable(self, graph, self.node)
        width = len(space.classes)
        for i in self.indices:
            if i >= width:
                raise self.error(f"channel {i} does not exist: '{self.node}' has {width}", node=self.node,
                                 field="indices")
        if len(set(self.indices)) != len(self.indices):
            raise self.error("an index is listed twice", node=self.node, field="indices")
        draft = Draft(graph, ch, dict(graph.nodes), list(graph.outputs), eps=self.eps, seed=self.seed)
        new = add_channels(draft, space, len(self.indices), [space.classes[i] for i in self.indices], self)
        for j, i in enumerate(self.indices):
            for p, t in new[j].items():
                kept = token_of(ch, p, space.classes[i])
                draft.copy_of[t] = kept
                draft.scale[t] = draft.scale[kept] = 0.5
                draft.noise.append((kept, t))
        note = mixing_note(ch, space) or copies_note(ch, space)
        draft.exact = self.eps == 0 and not note
        draft.note = note or ("" if self.eps == 0 else f"the halves differ by +-eps={self.eps} noise")
        graph2, plan = realise(draft, self)
        return Rewrite(graph2, graph, self, plan)
