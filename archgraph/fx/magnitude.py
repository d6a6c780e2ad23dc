"""Structured pruning by a magnitude criterion, per coupled channel group (like Torch-Pruning's MagnitudePruner).

For every channel space (the channels of one producer and everything tied to them, see :mod:`archgraph.channels`)
each channel's importance is the sum of ``|w|**p`` (``p`` = 2 for ``l2``, 1 for ``l1``) over every weight entry
that belongs to it: the producers' output slices, batchnorm, layernorm and depthwise entries, the readers' input
slices (biases and running statistics do not count), as Torch-Pruning's ``GroupMagnitudeImportance`` sums them
(which leaves depthwise filters out). A recurrent unit (lstm, gru) owns one row of every gate block
(:attr:`~archgraph.ops.opdef.Coupling.gates`) of every layer's ``weight_ih``/``weight_hh`` and the columns of the
tensors that read its own output (:attr:`~archgraph.ops.opdef.Coupling.recurrent`); attention's q/k/v columns
read its input's channels. The ``ratio`` least important coupling classes of each space go (rounded down, at least
one stays); channels tied to each other form one class and go together (a column of a channel shuffle). Around a
grouped conv each group loses the same number of channels, its least important ones (its own choice: in-group
positions differ from group to group), scored with the weight's in-group columns too. Classes that cannot change
stay: the graph's outputs (the classes), graph inputs, broadcast mul factors. Every value keeps at least one channel
(a slice of pruned channels gets its best one back). The result is the same as one ``prune_channels`` rule per space
applied in turn (:func:`prune_rules` returns them, for a history; spaces that share a grouped conv's groups go in
one rule, its ``also``, since neither can lose its share alone).

>>> import archgraph
>>> g = archgraph.load("examples/seeds/tiny_cnn.yaml")
>>> w = archgraph.build(g).state_dict()
>>> g2, w2 = archgraph.prune(g, w, ratio=0.5)
>>> [g2.nodes[n].out_channels for n in ("c1", "c2", "c3")], tuple(w2["c2.weight"].shape)
([2, 4, 4], (4, 2, 3, 3))
"""
from __future__ import annotations

import random
from typing import Mapping, Optional, Union, cast

import torch

from ..channels import Channels, Space, UnionFind, analyse
from ..errors import ConfigError
from ..graph import Graph
from ..ops.registry import OPS
from ..rules.base import Rewrite
from ..rules.heads import PruneHeads
from ..rules.prune import PruneChannels, prune_draft
from .apply_plan import transfer_state

CRITERIA = ("l2", "l1", "random")

Weights = Union[Mapping[str, torch.Tensor], torch.nn.Module]


def _state(weights: Weights) -> dict[str, torch.Tensor]:
    if isinstance(weights, torch.nn.Module):
        return dict(weights.state_dict())
    return dict(weights)


def importance(graph: Graph, weights: Weights, criterion: str = "l2", seed: int = 0,
               ch: Optional[Channels] = None) -> dict[int, float]:
    """Coupling class (see :class:`archgraph.channels.Channels`) -> summed importance of its channel."""
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown criterion '{criterion}'; choose one of {', '.join(CRITERIA)}",
                          field="criterion")
    ch = ch or analyse(graph)
    scores: dict[int, float] = {}
    if criterion == "random":
        rng = random.Random(seed)
        for t in sorted(ch.producer):
            scores.setdefault(ch.cls(t), rng.random())
        return scores
    state = _state(weights)
    shapes = graph.shapes()
    p = 2 if criterion == "l2" else 1
    for nid, node in graph.nodes.items():
        layout = OPS[node.op].coupling.layout(node, [shapes[i] for i in node.inputs])
        for param, axes in layout.items():
            tensor = state.get(f"{nid}.{param}")
            if _is_weight(param) and tensor is not None:
                _score_tensor(ch, scores, nid, node, param, axes, tensor, p)
    return scores


def _add(ch: Channels, scores: dict[int, float], tokens, values) -> None:
    for token, score in zip(tokens, values):
        root = ch.cls(token)
        scores[root] = scores.get(root, 0.0) + score


def _score_tensor(ch: Channels, scores: dict[int, float], nid: str, node, param: str, axes, tensor, p: int) -> None:
    """Add one weight tensor's entries (``|w|^p``) to the classes of the channels its out and in axes hold."""
    coupling = OPS[node.op].coupling
    out_axis, in_axis = axes
    sums = _axis_sums(tensor, p, [a for a in (out_axis, in_axis) if a is not None])
    reads = nid if param in coupling.recurrent(node) else node.inputs[0]   # weight_hh reads the op's own units
    for axis, value, blocks in ((out_axis, nid, coupling.gates(node)), (in_axis, reads, 1)):
        if axis is None:
            continue
        slots = ch.slots[value]
        per_entry = sums[axis]
        if blocks > 1:   # the gate blocks of the units, one after another: a unit owns a row of each
            per_entry = per_entry.view(blocks, -1).sum(0)
        if slots.blocks is not None:  # a flatten: one block of features per channel
            ends = torch.tensor(slots.block_sizes()).cumsum(0)
            cumulative = per_entry.cumsum(0)[ends - 1]
            per_entry = torch.cat([cumulative[:1], cumulative[1:] - cumulative[:-1]])
        _add(ch, scores, slots.tokens, per_entry.tolist())
    if param == "weight" and ch.roles[nid] == "grouped":
        mag = tensor.detach().cpu()
        mag = mag if mag.dtype in (torch.float32, torch.float64) else mag.float()
        mag = mag.square() if p == 2 else mag.abs()
        # axis 1 is a position within a group: the entries of one channel are that column of its group's rows
        # (the input's channel, or the transposed conv's output's)
        value = node.inputs[0] if coupling.group_side == "in" else nid
        rows = mag.shape[0] // node.groups
        per = mag.sum(dim=[d for d in range(mag.dim()) if d not in (0, 1)], dtype=torch.float64) \
            if mag.dim() > 2 else mag.double()
        per = per.view(node.groups, rows, -1).sum(1).reshape(-1)   # [groups * in-group] = channel order
        _add(ch, scores, ch.slots[value].tokens, per.tolist())


#: tensors are scored in row chunks of about this many entries (a bfloat16 embedding of 150k tokens would
#: otherwise be copied whole in float32)
CHUNK_ENTRIES = 1 << 24


def _axis_sums(tensor: torch.Tensor, p: int, axes: list[int]) -> dict[int, torch.Tensor]:
    """``{axis: per-entry sum of |w|^p over the other axes}`` (float64), computed over chunks of rows so that no
    float copy of a whole big tensor is made."""
    t = tensor.detach().cpu()
    if t.dim() == 0:
        t = t.reshape(1)
    rows = max(1, CHUNK_ENTRIES // max(1, t[0].numel()))
    firsts: list[torch.Tensor] = []
    rest: dict[int, torch.Tensor] = {}
    for chunk in t.split(rows, dim=0):
        mag = chunk if chunk.dtype in (torch.float32, torch.float64) else chunk.float()
        mag = mag.square() if p == 2 else mag.abs()
        for axis in axes:
            dims = [d for d in range(mag.dim()) if d != axis]
            part = mag.sum(dim=dims, dtype=torch.float64) if dims else mag.double()
            if axis == 0:
                firsts.append(part)
            else:
                rest[axis] = rest[axis] + part if axis in rest else part
    return {**({0: torch.cat(firsts)} if 0 in axes else {}), **rest}


def _is_weight(param: str) -> bool:
    """Whether a layout tensor counts: PyTorch's weights (``weight``, ``q_proj.weight``, ``weight_ih_l0``,
    ``weight_hh_l0``), not its biases (``bias``, ``bias_ih_l0``) nor buffers (running statistics)."""
    return param.rsplit(".", 1)[-1].startswith("weight")


def prune_rules(graph: Graph, weights: Weights, ratio: float = 0.5, criterion: str = "l2",
                seed: int = 0, ch: Optional[Channels] = None, uniform: bool = False) -> list[PruneChannels]:
    """The ``prune_channels`` rules :func:`prune` applies: one per prunable channel space, naming the channels of
    its first producer whose coupling classes have the lowest summed criterion (spaces whose channels share the
    groups of a grouped conv are joined in one rule through its ``also``, so the rules apply in turn).

    A space counts its distinct classes: channels tied to each other (the columns of a channel shuffle) go together
    and count once; the channels a grouped conv splits into groups go ``ratio`` of each group, each group its
    least important. Classes that cannot change (frozen) stay; at least one class of
    every space, and of every value (a slice must keep a channel), stays. ``uniform``: spaces alike (made by the
    same op, of the same size: every layer's MLP) lose the same number of channels, the least
    any of them would (a frozen channel in one layer holds the others back), so layers that start equal stay equal
    (what a Hugging Face model's own class needs to load them)."""
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"ratio {ratio} must be at least 0 and below 1", field="ratio")
    ch = ch or analyse(graph)
    scores = importance(graph, weights, criterion, seed, ch)
    plans = _space_plans(graph, ch, scores, ratio)
    if uniform:   # spaces alike (the same producer op and size: every layer's MLP) lose as many channels
        least: dict = {}
        for *_, count, key in plans:
            least[key] = min(least.get(key, count), count)
        plans = [(space, order, gone, free, least[key], key) for space, order, gone, free, _, key in plans]
    removed: set[int] = set()
    spaces = []
    for space, order, gone, free, count, _ in plans:
        if count > 0:
            gone |= set(sorted(free, key=lambda c: (scores.get(c, 0.0), order[c]))[:count])
        if gone:
            removed |= gone
            spaces.append(space)
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


def _space_plans(graph: Graph, ch: Channels, scores: dict[int, float], ratio: float) -> list[tuple]:
    """``(space, order, gone, free, count, key)`` of every space: its classes' order, the grouped classes chosen
    already (as many from each group of a grouped conv, each group its least important; a group may hold channels of
    several spaces, so it is chosen once), its free classes, how many of them go, and what makes spaces alike."""
    blocks = ch.local_blocks()
    grouped_gone: set[int] = set()
    for block in dict.fromkeys(blocks.values()):
        free = sorted((c for c in block if ch.frozen(c) is None), key=lambda c: (scores.get(c, 0.0), c))
        grouped_gone |= set(free[:int(ratio * len(block))])
    plans = []
    for space in ch.spaces():
        classes = list(dict.fromkeys(space.classes))
        order = {c: i for i, c in enumerate(classes)}
        gone = grouped_gone & set(classes)
        classes = [c for c in classes if c not in blocks]
        free = [c for c in classes if ch.frozen(c) is None]
        count = min(int(ratio * len(classes)), len(free) - (0 if len(free) < len(classes) or gone else 1))
        maker = graph.nodes[space.node].op if space.node in graph.nodes else "input"
        plans.append((space, order, gone, free, count, (maker, len(classes))))
    return plans


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


def _keep_one_per_value(ch, removed: set[int], scores: dict[int, float]) -> None:
    """Give back the best class of any value that would lose all its channels (a slice of pruned channels)."""
    for value in ch.slots:
        classes = set(ch.classes(value))
        if classes and classes <= removed:
            removed.discard(max(sorted(classes), key=lambda c: scores.get(c, 0.0)))


def _balance_groups(ch, removed: set[int], scores: dict[int, float]) -> None:
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


def prune_rewrite(graph: Graph, rules: list[PruneChannels], ch: Optional[Channels] = None) -> Rewrite:
    """One rewrite applying ``prune_channels`` rules on different channel spaces at once: the same graph and
    weights as applying them in turn, in one pass. Its ``rule`` is the first of them (log them all)."""
    if not rules:
        raise ValueError("no prune_channels rules to apply")
    selections: dict[str, tuple[int, ...]] = {}
    for r in rules:
        for node, indices in r.selections().items():
            selections[node] = tuple(sorted(set(selections.get(node, ())) | set(indices)))
    return prune_draft(rules[0], graph, selections, ch)


def head_rules(graph: Graph, weights: Weights, ratio: float = 0.5, criterion: str = "l2",
               seed: int = 0) -> list[PruneHeads]:
    """The ``prune_heads`` rules that remove ``ratio`` of the query heads of every node with heads (attention), the
    least important by ``criterion`` over the tensors the op's registry entry says hold one block per head (``o_proj``
    columns, q rows, and k/v rows when each head has its own). With grouped-query attention the same number of heads
    goes from every kv group (Torch-Pruning's choice); where that rounds to none, whole kv groups go, scored by their
    heads' sum. At least one head (one group) stays."""
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"ratio {ratio} must be at least 0 and below 1", field="ratio")
    state = _state(weights)
    gen = random.Random(seed)
    rules = []
    for nid, node in graph.nodes.items():
        ins = graph.input_shapes(nid)
        found = OPS[node.op].coupling.heads(node, ins)
        if found is None:
            continue
        h, hd, tensors = found
        kv = getattr(node, "kv_heads", None) or h
        per = h // kv
        score = [0.0] * h
        for name, axis in tensors.items():
            t = state[f"{nid}.{name}"].detach().double()
            blocks = t.movedim(axis, 0).reshape(h, hd, -1)
            for i in range(h):
                score[i] += (gen.random() if criterion == "random" else
                             float(blocks[i].abs().pow(2 if criterion == "l2" else 1).sum()))
        within = int(per * ratio)
        if within >= 1:
            gone = [g * per + j for g in range(kv)
                    for j in sorted(range(per), key=lambda j: (score[g * per + j], j))[:within]]
        else:
            groups = min(int(kv * ratio), kv - 1)
            group_score = [sum(score[g * per:(g + 1) * per]) for g in range(kv)]
            gone = [g * per + j for g in sorted(range(kv), key=lambda g: (group_score[g], g))[:groups]
                    for j in range(per)]
        if gone:
            rules.append(PruneHeads(node=nid, indices=tuple(sorted(gone))))
    return rules


def prune(graph: Graph, weights: Weights, ratio: float = 0.5, criterion: str = "l2",
          seed: int = 0, heads: bool = False, uniform: bool = False) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Remove ``ratio`` of the channels of every coupled group by ``criterion`` (``l2``, ``l1`` or ``random``);
    returns the new graph and its weights (keys ``<node_id>.<param>``; the tensors ``weights`` holds, sliced).

    ``weights`` is a state dict or a module built from ``graph``. Graph outputs are never pruned; a grouped conv
    keeps its groups and loses the same number of channels from every group (each group its least important).
    With ``heads``, ``ratio`` of every attention's heads go too (:func:`head_rules`, after the channels;
    Torch-Pruning's ``prune_num_heads``). ``uniform``: alike spaces lose as many channels (see
    :func:`prune_rules`; heads always go in equal numbers from alike attentions).
    """
    graph, state, _ = prune_with_rules(graph, _state(weights), ratio, criterion, seed, heads, uniform=uniform)
    return graph, state


def prune_with_rules(graph: Graph, state: Mapping[str, torch.Tensor], ratio: float = 0.5, criterion: str = "l2",
                     seed: int = 0, heads: bool = False, strict: bool = False, uniform: bool = False,
                     consume: bool = False) -> tuple[Graph, dict[str, torch.Tensor], list]:
    """:func:`prune` on a state dict, also returning the rules it applied (the ``prune_channels`` ones, then the
    ``prune_heads`` ones), for a log; ``strict`` makes the transfer refuse a state with missing or extra tensors.
    ``consume``: ``state`` is a dict the caller gives up: its tensors are dropped as their pruned versions are
    made and unchanged ones are carried as they are (the CLI's way to prune a model it could not hold twice)."""
    ch = analyse(graph)  # one analysis for the importance, the selection and the rewrite
    rules: list = prune_rules(graph, state, ratio, criterion, seed, ch, uniform=uniform)
    if rules:
        rw = prune_rewrite(graph, rules, ch)
        graph, state = rw.graph, transfer_state(rw.plan, state, strict=strict, share=consume, consume=consume)
    elif not consume:
        state = {k: v.clone() for k, v in state.items()}
    if heads:
        for rule in head_rules(graph, state, ratio, criterion, seed):
            rw = rule.apply(graph)   # the state is this function's own from here: nothing is copied twice
            graph, state = rw.graph, transfer_state(rw.plan, dict(state), strict=False, share=True, consume=True)
            rules.append(rule)
    return graph, cast(dict, state), rules
