"""Structured pruning by a magnitude criterion, per coupled channel group (like Torch-Pruning's MagnitudePruner).

For every channel space (the channels of one producer and everything tied to them, see :mod:`archgraph.channels`)
each channel's importance is the sum of ``|w|**p`` (``p`` = 2 for ``l2``, 1 for ``l1``) over every weight entry
that belongs to it: the producers' output slices, batchnorm, layernorm and depthwise entries, the readers' input
slices (biases and running statistics do not count), as Torch-Pruning's ``GroupMagnitudeImportance`` sums them
(which leaves depthwise filters out). A recurrent unit (lstm, gru) owns one row of every gate block
(:attr:`~archgraph.ops.opdef.Coupling.gates`) of every layer's ``weight_ih``/``weight_hh`` and the columns of the
tensors that read its own output (:attr:`~archgraph.ops.opdef.Coupling.recurrent`); attention's q/k/v columns
read its input's channels. The ``ratio`` least important coupling classes of each space go (rounded
down, at least one stays); channels tied to each other form one class and go together (a column of a channel
shuffle). Around a grouped conv each group loses the same number of channels, its least important ones (its own
choice: in-group positions differ from group to group), scored with the weight's in-group columns too.
Classes that cannot change stay: the graph's outputs (the
classes), graph inputs, broadcast mul factors. Every value keeps at least one channel (a slice of pruned channels
gets its best one back). The result is the same as one ``prune_channels`` rule per space applied in turn (the
result's ``rules``, for a history; spaces that share a grouped conv's groups go in one rule, its ``also``, since
neither can lose its share alone). :func:`prune` is this module's one entry point.

>>> import archgraph
>>> g = archgraph.load("examples/seeds/tiny_cnn.yaml")
>>> w = archgraph.build(g).state_dict()
>>> g2, w2 = archgraph.prune(g, w, ratio=0.5)
>>> [g2.nodes[n].out_channels for n in ("c1", "c2", "c3")], tuple(w2["c2.weight"].shape)
([2, 4, 4], (4, 2, 3, 3))
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Optional, Sequence, Union, cast, overload

import torch

from ..channels import Channels, Space, UnionFind, analyse
from ..errors import ConfigError
from ..graph import Graph
from ..ops.registry import OPS
from ..rules.base import Edit, Rewrite, Rule
from ..rules.heads import PruneHeads
from ..rules.prune import PruneChannels, prune_draft
from .apply_plan import transfer_state
from .calibration import batches_list
from .criteria import CRITERIA, Context, Criterion
from .materialise import rebuild

Weights = Union[Mapping[str, torch.Tensor], torch.nn.Module]


def _state(weights: Weights) -> dict[str, torch.Tensor]:
    if isinstance(weights, torch.nn.Module):
        return dict(weights.state_dict())
    return dict(weights)


def _criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        raise ConfigError(f"unknown criterion '{name}'; choose one of {', '.join(CRITERIA)}", field="criterion")
    return CRITERIA[name]


def _context(criterion: str, state: Mapping[str, torch.Tensor], seed: int, calib: Optional[Iterable[Any]],
             loss: Optional[Callable[..., torch.Tensor]] = None) -> Context:
    crit = _criterion(criterion)
    batches = batches_list(calib, f"criterion '{criterion}'") if crit.calibrated else None
    return Context(state, seed, batches, loss)


def importance(graph: Graph, weights: Weights, criterion: str = "l2", seed: int = 0,
               ch: Optional[Channels] = None, calib: Optional[Iterable[Any]] = None,
               loss: Optional[Callable[..., torch.Tensor]] = None,
               ctx: Optional[Context] = None) -> dict[int, float]:
    """Coupling class (see :class:`archgraph.channels.Channels`) -> summed importance of its channel, by
    ``criterion`` (see :mod:`archgraph.fx.criteria`); ``calib`` holds the calibration batches of ``taylor`` and
    ``activation`` (and ``loss(out, targets)`` replaces ``taylor``'s cross entropy)."""
    ctx = ctx or _context(criterion, _state(weights), seed, calib, loss)
    return _criterion(criterion).channels(graph, ch or analyse(graph), ctx)


def kept(n: int, ratio: float, round_to: int = 1, per: int = 1) -> int:
    """How many of ``n`` units stay when ``ratio`` of them go (rounded down, at least one stays), with
    ``round_to``: the kept count times ``per`` (channels per unit) made a multiple of ``round_to``, rounding the kept
    count up (down when up would exceed ``n``; all stay when no multiple fits).

    >>> kept(10, 0.5), kept(10, 0.5, round_to=8), kept(6, 0.5, round_to=8), kept(4, 0.5, round_to=8, per=16)
    (5, 8, 6, 2)
    """
    keep = max(1, n - int(ratio * n))
    if round_to <= 1:
        return keep
    step = round_to // math.gcd(round_to, per)
    up = -(-keep // step) * step
    if up <= n:
        return up
    down = (keep // step) * step
    return down if down >= step else n


class _SpacePlan(NamedTuple):
    """One channel space on its way to a rule: its classes' order, the classes gone already (a grouped conv's
    share), those free to go, how many more go (``take``), and what makes spaces alike (the producer op, the class
    count)."""

    space: Space
    order: dict[int, int]
    gone: set[int]
    free: list[int]
    take: int
    key: tuple[str, int]


def _check_ratio(ratio: float, round_to: int) -> None:
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"ratio {ratio} must be at least 0 and below 1", field="ratio")
    if round_to < 1:
        raise ConfigError(f"round_to {round_to} must be at least 1", field="round_to")


def _channel_rules(graph: Graph, ch: Channels, scores: Mapping[int, float], ratio: float, round_to: int = 1,
                   uniform: bool = False) -> list[PruneChannels]:
    """The ``prune_channels`` rules :func:`prune` applies: one per prunable channel space, naming the channels of
    its first producer whose coupling classes have the lowest ``scores`` (spaces whose channels share the groups
    of a grouped conv are joined in one rule through its ``also``, so the rules apply in turn).

    A space counts its distinct classes: channels tied to each other (the columns of a channel shuffle) go together
    and count once; the channels a grouped conv splits into groups go ``ratio`` of each group, each group its
    least important. Classes that cannot change (frozen) stay; at least one class of
    every space, and of every value (a slice must keep a channel), stays. With ``round_to`` each space keeps a
    multiple of ``round_to`` channels (rounding the kept count up; see :func:`kept`), a grouped conv a multiple
    over all its groups. ``uniform``: spaces alike (made by the same op, of the same size: every layer's MLP) lose
    the same number of channels, the least any of them would (a frozen channel in one layer holds the others
    back), so layers that start equal stay equal (what a Hugging Face model's own class needs to load them)."""
    blocks = ch.local_blocks()
    grouped_gone = _grouped_gone(ch, blocks, scores, ratio, round_to)
    plans = [_space_plan(graph, ch, space, blocks, grouped_gone, ratio, round_to) for space in ch.spaces()]
    if uniform:
        plans = _uniform(plans)
    removed: set[int] = set()
    spaces = []
    for plan in plans:
        gone = plan.gone
        if plan.take > 0:
            gone |= set(sorted(plan.free, key=lambda c: (scores.get(c, 0.0), plan.order[c]))[:plan.take])
        if gone:
            removed |= gone
            spaces.append(plan.space)
    _keep_one_per_value(ch, removed, scores)
    _balance_groups(ch, removed, scores)
    chosen = {}
    for space in spaces:
        indices = tuple(i for i, c in enumerate(space.classes) if c in removed)
        if indices:
            chosen[space.node] = (space, indices)
    return [PruneChannels(node=nodes[0], indices=chosen[nodes[0]][1],
                          also=tuple((n, chosen[n][1]) for n in nodes[1:]))
            for nodes in _apart(ch, {n: space for n, (space, _) in chosen.items()})]


def _grouped_gone(ch: Channels, blocks: Mapping[int, frozenset[int]], scores: Mapping[int, float], ratio: float,
                  round_to: int) -> set[int]:
    """The classes a grouped conv splits into groups that go: as many from each group, each group its least
    important (a group may hold channels of several spaces: it is chosen once)."""
    groups_of = {block: gr.groups for gr in ch.groupings if gr.groups > 1 for block in blocks.values()
                 if next(iter(block), None) in {ch.cls(t) for t in gr.tokens}}
    gone: set[int] = set()
    for block in dict.fromkeys(blocks.values()):
        free = sorted((c for c in block if ch.frozen(c) is None), key=lambda c: (scores.get(c, 0.0), c))
        n = len(block)
        gone |= set(free[:n - kept(n, ratio, round_to, groups_of.get(block, 1))])
    return gone


def _space_plan(graph: Graph, ch: Channels, space: Space, blocks: Mapping[int, frozenset[int]],
                grouped_gone: set[int], ratio: float, round_to: int) -> _SpacePlan:
    """How many of ``space``'s own classes (those outside a grouped conv's groups) go, and which may."""
    classes = list(dict.fromkeys(space.classes))
    order = {c: i for i, c in enumerate(classes)}
    gone = grouped_gone & set(classes)
    per = len(space.classes) // max(1, len(classes))   # channels per class (a shuffle's tied columns)
    classes = [c for c in classes if c not in blocks]
    free = [c for c in classes if ch.frozen(c) is None]
    n = len(classes)
    count = min(n - kept(n, ratio, round_to, per) if n else 0,
                len(free) - (0 if len(free) < len(classes) or gone else 1))
    maker = graph.nodes[space.node].op if space.node in graph.nodes else "input"
    return _SpacePlan(space, order, gone, free, count, (maker, n))


def _uniform(plans: list[_SpacePlan]) -> list[_SpacePlan]:
    """Spaces alike (the same producer op and size: every layer's MLP) lose as many channels, the fewest any
    of them would."""
    least: dict[tuple[str, int], int] = {}
    for plan in plans:
        least[plan.key] = min(least.get(plan.key, plan.take), plan.take)
    return [plan._replace(take=least[plan.key]) for plan in plans]


def _apart(ch: Channels, spaces: dict[str, Space]) -> list[list[str]]:
    """The spaces' nodes in the groups that must be pruned in one rule: spaces whose channels share the groups of a
    grouped conv go together (removing one space's share alone would leave the groups unequal), the rest alone."""
    nodes = list(spaces)
    owner = {c: i for i, n in enumerate(nodes) for c in spaces[n].classes}
    joined = UnionFind()
    for gr in ch.groupings:
        if gr.groups > 1:
            touched = [owner[c] for c in map(ch.uf.find, gr.tokens) if c in owner]
            for i in touched[1:]:
                joined.union(touched[0], i)
    together: dict[int, list[str]] = {}
    for i, n in enumerate(nodes):
        together.setdefault(joined.find(i), []).append(n)
    return list(together.values())


def _keep_one_per_value(ch: Channels, removed: set[int], scores: Mapping[int, float]) -> None:
    """Give back the best class of any value that would lose all its channels (a slice of pruned channels)."""
    for value in ch.slots:
        classes = set(ch.classes(value))
        if classes and classes <= removed:
            removed.discard(max(sorted(classes), key=lambda c: scores.get(c, 0.0)))


def _balance_groups(ch: Channels, removed: set[int], scores: Mapping[int, float]) -> None:
    """Give back the best removed classes of the groups of a grouped conv that would lose more than the others
    (groups whose frozen channels cannot go, a class given back to keep a value alive), until every grouping loses
    the same number from each group."""
    find = ch.uf.find
    changed = True
    while changed:
        changed = False
        for gr in ch.groupings:
            gone = [[c for c in map(find, gr.group(k)) if c in removed] for k in range(gr.groups)]
            least = min(map(len, gone))
            for classes in gone:
                extra = len(classes) - least
                for c in sorted(set(classes), key=lambda c: -scores.get(c, 0.0))[:extra]:
                    removed.discard(c)
                    changed = True


def _one_rewrite(graph: Graph, rules: list[PruneChannels], ch: Channels) -> Rewrite:
    """One rewrite applying ``prune_channels`` rules on different channel spaces at once: the same graph and
    weights as applying them in turn, in one pass."""
    selections: dict[str, tuple[int, ...]] = {}
    for r in rules:
        for node, indices in r.selections().items():
            selections[node] = tuple(sorted(set(selections.get(node, ())) | set(indices)))
    return prune_draft(rules[0], graph, selections, ch)


def _head_rules(graph: Graph, ratio: float, criterion: str, round_to: int, ctx: Context) -> list[PruneHeads]:
    """The ``prune_heads`` rules that remove ``ratio`` of the query heads of every node with heads (attention), the
    least important by ``criterion``: the magnitudes (or ``taylor``'s ``|w * dL/dw|``) of the tensors the op's
    registry entry says hold one block per head (``o_proj`` columns, q rows, and k/v rows when each head has its
    own), or ``activation``'s mean ``|output|`` of each head on the calibration batches. With grouped-query
    attention the same number of heads goes from every kv group (Torch-Pruning's choice); where that rounds to none,
    whole kv groups go, scored by their heads' sum. At least one head (one group) stays. With ``round_to`` the kept
    heads times ``head_dim`` are a multiple of ``round_to`` (see :func:`kept`)."""
    crit = _criterion(criterion)
    rules = []
    for nid, node in graph.nodes.items():
        found = OPS[node.op].coupling.heads(node, graph.input_shapes(nid))
        if found is None:
            continue
        h, hd, tensors = found
        kv = getattr(node, "kv_heads", None) or h
        gone = _heads_gone(crit.heads(graph, nid, h, hd, tensors, ctx), h, kv, hd, ratio, round_to)
        if gone:
            rules.append(PruneHeads(node=nid, indices=tuple(sorted(gone))))
    return rules


def _heads_gone(score: Sequence[float], h: int, kv: int, hd: int, ratio: float, round_to: int) -> list[int]:
    """The heads (of ``h``, in ``kv`` groups of ``head_dim`` ``hd``) that go: as many of each group, each group's
    weakest; whole groups where that rounds to none."""
    per = h // kv
    within = per - kept(per, ratio, round_to, kv * hd)
    if within >= 1 or (per > 1 and kept(per, ratio) < per):
        return [g * per + j for g in range(kv)
                for j in sorted(range(per), key=lambda j: (score[g * per + j], j))[:within]]
    groups = kv - kept(kv, ratio, round_to, per * hd)
    group_score = [sum(score[g * per:(g + 1) * per]) for g in range(kv)]
    return [g * per + j for g in sorted(range(kv), key=lambda g: (group_score[g], g))[:groups] for j in range(per)]


@overload
def prune(graph: Graph, weights: torch.nn.Module, ratio: float = ..., criterion: str = ..., seed: int = ...,
          heads: bool = ..., calib: Optional[Iterable[Any]] = ..., round_to: int = ...,
          loss: Optional[Callable[..., torch.Tensor]] = ..., uniform: bool = ..., *, channels: bool = ...,
          strict: bool = ..., consume: bool = ...) -> Edit[torch.fx.GraphModule]: ...


@overload
def prune(graph: Graph, weights: Mapping[str, torch.Tensor], ratio: float = ..., criterion: str = ...,
          seed: int = ..., heads: bool = ..., calib: Optional[Iterable[Any]] = ..., round_to: int = ...,
          loss: Optional[Callable[..., torch.Tensor]] = ..., uniform: bool = ..., *, channels: bool = ...,
          strict: bool = ..., consume: bool = ...) -> Edit[dict[str, torch.Tensor]]: ...


def prune(graph: Graph, weights: Weights, ratio: float = 0.5, criterion: str = "l2", seed: int = 0,
          heads: bool = False, calib: Optional[Iterable[Any]] = None, round_to: int = 1,
          loss: Optional[Callable[..., torch.Tensor]] = None, uniform: bool = False, *, channels: bool = True,
          strict: bool = False, consume: bool = False) -> Edit[Any]:
    """Remove ``ratio`` of the channels of every coupled group by ``criterion`` (``l2``, ``l1``, ``random``,
    ``taylor`` or ``activation``, see :mod:`archgraph.fx.criteria`). Returns an
    :class:`~archgraph.rules.base.Edit`: the new graph, its weights in the form ``weights`` was given (a state
    dict: the tensors it holds, sliced, keys ``<node_id>.<param>``; a module: a new module on its device, dtype and
    mode), the rules applied (the ``prune_channels`` ones, then the ``prune_heads`` ones: applied in turn they give
    the same graph and weights, for a history) and whether they keep the function. It unpacks as
    ``graph, weights``.

    Graph outputs are never pruned; a grouped conv keeps its groups and loses the same number of channels from
    every group (each group its least important); channels tied to each other (a channel shuffle's columns) go
    together; every space and every value keeps at least one channel. With ``heads``, ``ratio`` of every
    attention's heads go too (after the channels, scored on the network with its channels pruned; the same number
    from every kv group, or whole groups; Torch-Pruning's ``prune_num_heads``); ``channels=False`` prunes heads
    only. ``taylor`` and ``activation`` need ``calib``, an iterable of calibration batches (a tensor of inputs, or
    ``(inputs, targets)``; ``taylor`` needs the targets, and ``loss(out, targets)`` replaces its cross entropy).
    ``round_to`` keeps every pruned width (channels, neurons, heads x head_dim, the residual stream) a multiple of
    it, as Torch-Pruning's ``round_to``. ``uniform``: alike spaces (the same producer op and size: every layer's
    MLP) lose as many channels, so layers that start equal stay equal. ``strict``: a state dict with missing or
    extra tensors is refused. ``consume`` (a state dict the caller gives up): its tensors are dropped as their
    pruned versions are made and unchanged ones are carried as they are (the CLI's way to prune a model it could
    not hold twice).

    >>> import archgraph, torch
    >>> g = archgraph.load("examples/seeds/tiny_cnn.yaml")
    >>> batches = [torch.randn(8, *g.inputs["image"]) for _ in range(2)]
    >>> edit = archgraph.prune(g, archgraph.build(g), 0.5, criterion="activation", calib=batches)
    >>> [edit.graph.nodes[n].out_channels for n in ("c1", "c2", "c3")], edit.state.c2.weight.shape[:2]
    ([2, 4, 4], torch.Size([4, 2]))
    >>> [r.name for r in edit.rules], edit.exact
    (['prune_channels', 'prune_channels', 'prune_channels'], False)
    """
    _check_ratio(ratio, round_to)
    consume = consume and isinstance(weights, dict)   # a module's tensors are never given up
    state = cast(dict, weights) if consume else _state(weights)
    ctx = _context(criterion, state, seed, calib, loss)
    rules: list[Rule] = []
    exact = True
    if channels:
        ch = analyse(graph)  # one analysis for the importance, the selection and the rewrite
        found = _channel_rules(graph, ch, _criterion(criterion).channels(graph, ch, ctx), ratio, round_to, uniform)
        if found:
            rw = _one_rewrite(graph, found, ch)
            graph, state = rw.graph, transfer_state(rw.plan, state, strict=strict, share=consume, consume=consume)
            rules += found
            exact = rw.exact
    if not rules and not consume and not isinstance(weights, torch.nn.Module):   # a module is rebuilt: copied there
        state = {k: v.clone() for k, v in state.items()}
    if heads:
        ctx = Context(state, seed, ctx.calib, loss)
        for rule in _head_rules(graph, ratio, criterion, round_to, ctx):
            rw = rule.apply(graph)   # the state is this function's own from here: nothing is copied twice
            graph, state = rw.graph, transfer_state(rw.plan, dict(state), strict=False, share=True, consume=True)
            rules.append(rule)
            exact = exact and rw.exact
    if isinstance(weights, torch.nn.Module):
        return Edit(graph, rebuild(graph, state, weights), tuple(rules), exact)
    return Edit(graph, state, tuple(rules), exact)
