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

import dataclasses
import random
from typing import Any, Callable, ClassVar, Literal, Optional, Sequence

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt

from ..channels import GROUPED, MIXER, SLICE, SOURCE, THROUGH, Channels, Slots, Space, analyse
from ..channels.roles import old_positions
from ..errors import RuleError
from ..graph import Graph
from ..limits import env_name, limit
from ..ops.registry import OPS
from ..plan import AxisMap, Noise, TensorPlan, TransferPlan
from .base import Rewrite, Rule
from .draft import Draft, realise
from .experts import experts_target, widen_experts


def widenable(rule: Rule, graph: Graph, node: str) -> tuple[Channels, Space]:
    """The channel space of ``node`` if a rule may add channels to it; a :class:`RuleError` saying why not."""
    rule.need_node(graph, node)
    ch = analyse(graph)
    n: Any = graph.nodes[node]   # a node's spec: its fields depend on its op
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


def add_channels(draft: Draft, space: Space, count: int, anchors: Optional[Sequence[int]] = None,
                 rule: Optional[Rule] = None) -> list[dict[str, int]]:
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
            raise RuleError(f"its channels cannot be widened here: {placed}", rule=rule.name if rule else None,
                            node=space.node, field="node")
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
    """Whether every norm over these channels is an affine rmsnorm, so zero new channels can be compensated (not
    one whose gain is ``offset + weight``, Gemma's: scaling its weight does not scale its gain)."""
    found = mixers(ch, space)
    return bool(found) and all(OPS[ch.graph.nodes[n].op].rescalable and ch.graph.nodes[n].elementwise_affine
                               and not getattr(ch.graph.nodes[n], "offset", 0.0) for n in found)


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


def scale_norm_weights(plan: TransferPlan, norms: list[str], width: int, count: int) -> TransferPlan:
    """The plan with the old entries of each rmsnorm's weight scaled by ``sqrt(width / (width + count))``."""
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


def mask_entering(plan: TransferPlan, draft: Draft, norms: list[str]) -> TransferPlan:
    """The plan with each masked norm's ``mask`` at 0 for its new channels (old entries kept, or 1 where the norm
    had no mask)."""
    tensors = dict(plan.tensors)
    for nid in norms:
        key = f"{nid}.mask"
        src = draft.old.nodes[nid].inputs[0]
        index = tuple(old_positions(draft.ch.slots[src], draft.new_slots[nid]))
        entering = AxisMap(index, draft.ch.slots[src].width, fill="zero")
        tp = tensors[key]
        tensors[key] = dataclasses.replace(tp, axes=((0, entering),))
    return dataclasses.replace(plan, tensors=tensors)


def spread_copies(plan: TransferPlan, graph: Graph, eps: float, seed: int) -> TransferPlan:
    """The plan with antisymmetric noise on the readers' weights of every (channel, copy) pair: the reader's in
    axis gets ``+eps*z`` at the channel and ``-eps*z`` at the copy, which read equal values, so each reader's output
    is unchanged while the copies' gradients differ (HyperCloning's symmetry breaking)."""
    tensors = dict(plan.tensors)
    for key, tp in plan.tensors.items():
        nid, _, param = key.partition(".")
        if tp.source is None or tp.noise is not None or nid not in graph.nodes \
                or getattr(graph.nodes[nid], "tied_to", None):   # a tied head is the table: noise would untie it
            continue
        node = graph.nodes[nid]
        in_axis = OPS[node.op].coupling.layout(node, graph.input_shapes(nid)).get(param, (None, None))[1]
        m = next((m for a, m in tp.axes if a == in_axis and m.copied), None)
        if m is None or in_axis is None:
            continue
        first: dict[int, int] = {}
        for i, old in enumerate(m.index):
            if old >= 0 and i not in m.copied:
                first.setdefault(old, i)
        pairs = tuple((first[m.index[c]], c) for c in sorted(m.copied))
        tensors[key] = dataclasses.replace(tp, noise=Noise(in_axis, pairs, eps, seed))
    return dataclasses.replace(plan, tensors=tensors)


def tie_to_table(plan: TransferPlan, graph: Graph, space: Space) -> tuple[TransferPlan, list[tuple[str, str]]]:
    """The plan with every head tied to a producer of ``space`` (a linear ``tied_to`` an embedding of the stream)
    reading the widened channels exactly as the table holds them (the head IS the table: one tensor); returns it
    and the ``(head, table)`` pairs whose reads the rule had planned otherwise (readers' factors, other fills)."""
    producers = set(space.producers)
    tensors = dict(plan.tensors)
    changed = []
    for hid, head in graph.nodes.items():
        tied = getattr(head, "tied_to", None)
        if tied not in producers or f"{hid}.weight" not in tensors or f"{tied}.weight" not in tensors:
            continue
        tp, table = tensors[f"{hid}.weight"], tensors[f"{tied}.weight"]
        if tp.axes == table.axes:
            continue
        tensors[f"{hid}.weight"] = dataclasses.replace(tp, axes=table.axes)
        changed.append((hid, tied))
    return dataclasses.replace(plan, tensors=tensors), changed


def untied_note(plan: TransferPlan, graph: Graph, space: Space) -> TransferPlan:
    """:func:`tie_to_table`, and ``exact: false`` where a tied head then reads new channels otherwise than the rule
    meant its readers to (only ``init=clone`` compensates: see :func:`keep_ties`)."""
    plan, changed = tie_to_table(plan, graph, space)
    if not changed or not plan.exact:
        return plan
    hid, tied = changed[0]
    return dataclasses.replace(plan, exact=False, note=f"'{hid}' is tied to '{tied}', so it reads the new channels "
                                                       f"as the table holds them and the function changes "
                                                       f"(init=clone keeps it)")


def keep_ties(plan: TransferPlan, graph: Graph, ch: Channels, space: Space, factor: int) -> tuple[TransferPlan, str]:
    """HyperCloning with a tied head (a linear ``tied_to`` an embedding of the stream): the head IS the widened
    table ``[E, E, ...]``, so it reads the copies without the ``1 / factor`` the other readers get (one tensor, the
    tie kept); the norm feeding it instead has its gain (``offset + weight``) and bias divided by ``factor``, and
    the logits ``[n/k, ...] . [E, ...]^T = n E^T`` are the old ones. Returns the plan and, where something else
    than a norm over the stream read by the head alone feeds it, why the logits are ``factor`` times the old ones."""
    plan, heads = tie_to_table(plan, graph, space)
    note = ""
    tensors = dict(plan.tensors)
    for hid, tied in heads:
        src = graph.nodes[hid].inputs[0]
        if not _norm_for_head_alone(graph, ch, space, tensors, hid, src):
            note = note or (f"'{hid}' is tied to '{tied}' and reads '{src}', not a norm over the stream "
                            f"that only it reads: its output is {factor} times the old one")
            continue
        offset = float(getattr(graph.nodes[src], "offset", 0.0) or 0.0)
        for param in ("weight", "bias"):
            key = f"{src}.{param}"
            if key in tensors:
                tensors[key] = _divided(tensors[key], param, offset, factor)
    return dataclasses.replace(plan, tensors=tensors), note


def _norm_for_head_alone(graph: Graph, ch: Channels, space: Space, tensors: dict[str, TensorPlan], hid: str,
                         src: str) -> bool:
    """Whether ``src``, which the tied head ``hid`` reads, is a norm over ``space`` that keeps the statistics of
    copies, has a planned ``weight``, is read by ``hid`` alone and is no graph output: the norm :func:`keep_ties`
    can divide instead of the head."""
    norm: Any = graph.nodes.get(src)
    readers = [n for n, node in graph.nodes.items() if src in node.inputs]
    return not (norm is None or src not in mixers(ch, space) or not OPS[norm.op].keeps_stats_of_copies
                or f"{src}.weight" not in tensors or readers != [hid] or src in graph.outputs)


def _divided(tp: TensorPlan, param: str, offset: float, factor: int) -> TensorPlan:
    """A norm's ``weight`` or ``bias`` plan with every changed axis divided by ``factor`` (the gain's ``offset``
    shifted so that ``offset + weight`` is divided too)."""
    shift = offset * (1.0 / factor - 1.0) if param == "weight" and offset else 0.0
    axes = tuple((a, dataclasses.replace(m, scale=tuple((1.0 if f is None else f) / factor
                                                        for f in (m.scale or (None,) * m.size)),
                                         shift=(shift,) * m.size if shift else m.shift))
                 for a, m in tp.axes)
    return dataclasses.replace(tp, axes=axes)


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
    :mod:`archgraph.fx.gradmax`: same function), ``clone`` (HyperCloning: every channel copied ``count / width``
    times, so ``count`` is a multiple of the width and the layer grows by an integer factor; the outgoing weights
    are divided among the copies: same function, layer and RMS norms included, as their statistics over
    ``[x, x, ...]`` are those over ``x``) and ``masked`` (MSG: for a stream normalised by layer norms, new incoming
    and outgoing weights random and the new channels entering every layer norm through a mask that ramps from 0
    to 1 over ``ramp`` training forward passes; the norms' statistics are weighted by the mask, so at 0 the
    function is exactly the old one).

    >>> import archgraph
    >>> g = archgraph.load("examples/seeds/gpt_tiny.yaml")
    >>> rw = archgraph.apply(g, AddFilters(node="wte", count=32, init="clone"))
    >>> rw.graph.nodes["wte"].embedding_dim, rw.exact
    (64, True)
    >>> rw = archgraph.apply(g, AddFilters(node="wte", count=8, init="masked", ramp=200))
    >>> rw.graph.nodes["b0_ln1"].mask_ramp, rw.exact
    (200, True)
    """

    name: ClassVar[str] = "add_filters"
    node: str
    count: PositiveInt = 1
    init: Literal["preserve", "random", "net2net", "zero", "gradmax", "clone", "masked"] = "preserve"
    seed: int = 0
    #: init=masked: training forward passes over which the new channels' mask goes from 0 to 1
    ramp: PositiveInt = 100
    #: init=clone: ``+eps*z`` on the readers' weights of each channel and ``-eps*z`` on its copy's (``z`` standard
    #: normal): the copies' sum, so the function, is kept, and the copies learn apart
    eps: NonNegativeFloat = 0.0

    def apply(self, graph: Graph) -> Rewrite:
        moe = experts_target(self, graph, self.node)
        if moe is not None:   # ID.experts: the hidden units of every expert
            return widen_experts(self, graph, moe, self.count, self.init)
        ch, space = widenable(self, graph, self.node)
        if len(space.classes) + self.count > limit("width"):  # before the channel tables are allocated
            raise self.error(f"{len(space.classes):,} + {self.count:,} channels is over the width limit of "
                             f"{limit('width'):,} (a typo? to allow it, set {env_name('width')})",
                             node=self.node, field="count")
        tied = next((nid for nid, n in graph.nodes.items() if getattr(n, "tied_to", None) in space.producers), None)
        if self.init == "gradmax" and tied is not None:
            raise self.error(f"init=gradmax chooses the readers' weights on the new channels, and '{tied}' reads "
                             f"them tied to the table that makes them: use init=clone, masked or zero",
                             node=self.node, field="init")
        if self.init == "clone":
            return self.cloned(graph, ch, space)
        if self.init == "masked":
            return self.masked(graph, ch, space)
        draft = Draft(graph, ch, dict(graph.nodes), list(graph.outputs), seed=self.seed)
        draft.fan_in, draft.fan_out = {"preserve": ("init", "zero"), "random": ("init", "init"),
                                       "net2net": ("init", "init"), "zero": ("zero", "zero"),
                                       "gradmax": ("zero", "zero")}[self.init]
        if self.init == "net2net":
            self.net2net_copies(draft, ch, space)
        else:
            add_channels(draft, space, self.count)
        draft.quiet = self.init != "random"   # new LSTM/GRU units: state and output stay zero
        norms = self.keep_function(draft, ch, space)
        graph2, plan = realise(draft, self)
        if norms:
            plan = scale_norm_weights(plan, norms, len(space.classes), self.count)
        return Rewrite(graph2, graph, self, untied_note(plan, graph2, space))

    def net2net_copies(self, draft: Draft, ch: Channels, space: Space) -> None:
        """Net2Net: each new channel copies an old one drawn at random; a channel and its copies share its readers'
        weights (each reads it scaled by 1 / the number of copies)."""
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

    def keep_function(self, draft: Draft, ch: Channels, space: Space) -> list[str]:
        """Set whether the draft keeps the function and why not; returns the rmsnorms over the new channels that
        ``preserve`` and ``zero`` rescale (their new channels carry zeros, and each norm's weight and eps are
        rescaled, which keeps the function exactly)."""
        norms: list[str] = []
        if self.init in ("preserve", "zero") and rescalable(ch, space):
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
                                         "gradient on a batch (archgraph.rewrite(..., batch=...))"}.get(self.init, "")
        return norms

    def cloned(self, graph: Graph, ch: Channels, space: Space) -> Rewrite:
        """HyperCloning: every channel gets ``count / width`` copies, appended in order (``[x, x, ...]``)."""
        width = len(space.classes)
        if self.count % width:
            raise self.error(f"init=clone copies every channel: count must be a multiple of the {width} channels "
                             f"(count={width} doubles them), not {self.count}", node=self.node, field="count")
        factor = self.count // width + 1
        draft = Draft(graph, ch, dict(graph.nodes), list(graph.outputs), seed=self.seed)
        draft.fan_in, draft.fan_out = "init", "init"   # every new entry is a copy: nothing starts as built
        picks = list(range(width)) * (factor - 1)
        new = add_channels(draft, space, self.count, [space.classes[i] for i in picks], self)
        for j, i in enumerate(picks):
            for p, t in new[j].items():
                draft.copy_of[t] = token_of(ch, p, space.classes[i])
                draft.scale[t] = draft.scale[draft.copy_of[t]] = 1.0 / factor
        other = [n for n in mixers(ch, space) if not OPS[graph.nodes[n].op].keeps_stats_of_copies]
        note = (f"'{other[0]}' ({graph.nodes[other[0]].op}) normalises over these channels and its statistics "
                "change with copies" if other else copies_note(ch, space))
        graph2, plan = realise(draft, self)
        plan, tie_note = keep_ties(plan, graph2, ch, space, factor)
        note = note or tie_note
        plan = dataclasses.replace(plan, exact=not note, note=note)
        if self.eps > 0:
            plan = spread_copies(plan, graph2, self.eps, self.seed)
        return Rewrite(graph2, graph, self, plan)

    def masked(self, graph: Graph, ch: Channels, space: Space) -> Rewrite:
        """MSG's masked growth: the stream's layer norms get a mask with the new channels at 0."""
        norms = mixers(ch, space)
        if not norms:
            raise self.error("init=masked masks the new channels in the layer norms over them, and no layer norm "
                             "normalises these channels (init=preserve keeps the function here)", node=self.node,
                             field="init")
        for nid in norms:
            n, shape = graph.nodes[nid], graph.shape(nid)
            if not OPS[n.op].maskable or len(shape) == 3:
                what = f"{n.op} (init=preserve widens it exactly)" if OPS[n.op].rescalable else \
                    f"{n.op} over {list(shape)}"
                raise self.error(f"init=masked masks layer norms over [F] or [T, D]; '{nid}' normalising these "
                                 f"channels is a {what}", node=nid, field="init")
        draft = Draft(graph, ch, dict(graph.nodes), list(graph.outputs), seed=self.seed)
        # new channels are made with random weights; the norms' readers read them (masked) with random weights;
        # any other reader of them starts at zero, so the function is kept whatever reads the stream
        draft.fan_in, draft.fan_out = "init", "zero"
        add_channels(draft, space, self.count)
        for nid in norms:
            draft.nodes[nid] = draft.nodes[nid].replace(mask_ramp=self.ramp)
        for nid, node in draft.nodes.items():
            if node.inputs and node.inputs[0] in norms:
                draft.reader_fill[nid] = "init"
        draft.exact = True
        draft.note = f"exact while the new channels' mask is 0 (it ramps to 1 over {self.ramp} training steps)"
        graph2, plan = realise(draft, self)
        return Rewrite(graph2, graph, self, untied_note(mask_entering(plan, draft, norms), graph2, space))


class SplitFilters(Rule):
    """Split units in two (S2D / Firefly style): each listed output channel of a conv2d or linear gets a copy
    appended; the copies' incoming weights are the original's ``+eps*z`` and ``-eps*z`` (``z`` standard normal),
    and both halves' outgoing weights are halved. With ``eps=0`` the function is unchanged."""

    name: ClassVar[str] = "split_filters"
    node: str
    indices: tuple[NonNegativeInt, ...] = Field(min_length=1)
    eps: NonNegativeFloat = 1e-2
    seed: int = 0

    def apply(self, graph: Graph) -> Rewrite:
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
        return Rewrite(graph2, graph, self, untied_note(plan, graph2, space))


def exact_form(graph: Graph, rule: Rule, apply: Optional[Callable[[Graph, Rule], Rewrite]] = None) -> Rule:
    """``rule``, or its exact form where ``rule`` does not keep the function and one that does exists: the choice
    every method makes (GNAP's and SCS's growth, staged stages). Today: ``add_filters`` with ``init=preserve`` or
    ``zero`` on channels a layer norm normalises becomes ``init=masked`` (MSG), the same channels entering through
    the norms' masks. ``apply(graph, rule)`` defaults to ``rule.apply(graph)`` (a method passes its cache).

    >>> import archgraph
    >>> g = archgraph.load("examples/seeds/gpt_tiny.yaml")
    >>> exact_form(g, AddFilters(node="wte", count=8)).init
    'masked'
    >>> exact_form(g, AddFilters(node="b0_fc", count=8)).init      # exact already
    'preserve'
    """
    apply = apply or (lambda g, r: r.apply(g))
    if not isinstance(rule, AddFilters) or rule.init not in ("preserve", "zero"):
        return rule
    try:
        if apply(graph, rule).exact:
            return rule
        masked = rule.model_copy(update={"init": "masked"})
        return masked if apply(graph, masked).exact else rule
    except RuleError:
        return rule
