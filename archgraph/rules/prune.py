"""``prune_channels``: physically remove output channels of a node and of everything tied to them.

Removing channel ``i`` of a node removes its whole coupling class (see :mod:`archgraph.channels`): the matching
output channels of every producer (both sides of a residual add), the batchnorm entries, the depthwise filters (their
groups shrink), the concat positions (offsets move) and the input columns of every reader, a block of ``H*W``
columns for a linear reading a flatten. Around a grouped conv the same number of channels must go from every group
(each group's own choice: its weight's in-group axis is sliced per group); anything else is refused.

>>> import archgraph
>>> from archgraph import rules
>>> g = archgraph.load("examples/seeds/densenet_concat.yaml")
>>> rw = archgraph.apply(g, rules.PruneChannels(node="stem", indices=(0, 1)))
>>> rw.graph.nodes["stem"].out_channels, rw.graph.shapes()["cat2"]
(14, (30, 32, 32))
"""
from __future__ import annotations

import bisect
import itertools
from typing import Any, ClassVar, Mapping, Optional, Sequence

from pydantic import Field, NonNegativeInt, field_validator

from ..channels import Channels, analyse
from ..graph import Graph
from ..ops.registry import OPS
from .base import Rewrite, Rule
from .draft import Draft, realise
from .experts import experts_target, prune_expert_units


def classes_at(rule: Rule, ch: Channels, node: str, indices: Sequence[int]) -> set[int]:
    """The coupling classes of positions ``indices`` of ``node``'s output (a flattened position names its
    channel); a :class:`RuleError` for a bad index or a class that cannot change."""
    slots = ch.slots[node]
    if len(set(indices)) != len(indices):
        raise rule.error("an index is listed twice", node=node, field="indices")
    starts = list(itertools.accumulate(slots.block_sizes(), initial=0))
    roots = set()
    for i in indices:
        if i >= slots.width:
            raise rule.error(f"channel {i} does not exist: '{node}' has {slots.width}", node=node, field="indices")
        slot = bisect.bisect_right(starts, i) - 1
        root = ch.cls(slots.tokens[slot])
        why = ch.frozen(root)
        if why:
            raise rule.error(f"channel {i} of '{node}' cannot be removed: {why}", node=node, field="indices")
        roots.add(root)
    return roots


#: ops that turn a zero channel into a non-zero constant in eval mode: a batchnorm gives beta - mean * gamma /
#: sqrt(var + eps), a sigmoid 0.5. A removed channel must be zero *after* them for the prune to be exact. (Folding
#: the constant into the next layer's bias would be exact for a linear reader but not for a padded conv, whose
#: borders read zeros instead of the constant, so archgraph says so instead of folding.)


def exactness_note(graph: Graph, ch: Channels, roots: set[int], what: str = "the removed channels") -> str:
    """When removing channels of these classes keeps the function: the precise condition, naming any node after
    them that maps a zero channel to a constant."""
    mixer = ch.mixes(roots)
    if mixer is not None:
        op = graph.nodes[mixer].op
        stats = OPS[op].coupling.mix_stats
        return (f"not exact: '{mixer}' ({op}) normalises over these channels, so removing them changes the "
                f"{stats} it normalises the kept channels with (taken over fewer channels), even when {what} are "
                "zero (see 'Pruning under a layernorm' in docs/import_export.md)")
    shifts = [nid for nid in ch.readers(roots) if OPS[graph.nodes[nid].op].shifts_zero]
    if not shifts:
        return f"exact only when {what} carry zeros or are read with zero weights"
    named = ", ".join(f"'{nid}' ({graph.nodes[nid].op})" for nid in shifts[:3]) + (", ..." if len(shifts) > 3 else "")
    return (f"exact only when {what} are zero where they are read: {named} maps a zero channel to a constant "
            "(a batchnorm's beta - mean * gamma / sqrt(var + eps)), so a zero producer is not enough; the "
            "norm's output for them must be zero too, or their readers' weights")


def remove_classes(draft: Draft, roots: set[int]) -> None:
    """Drop these classes from every producer that makes them."""
    ch = draft.ch
    producers = set()
    for root in roots:
        producers |= ch.producers(root)
    find = ch.cls
    for p in producers:
        draft.given[p] = ch.slots[p].filtered(lambda t: find(t) not in roots)


def prune_draft(rule: Rule, graph: Graph, selections: Mapping[str, Sequence[int]],
                ch: Optional[Channels] = None) -> Rewrite:
    """One rewrite removing ``selections[node]`` (output positions) for several nodes at once; the same result as
    one ``prune_channels`` per node applied in turn when the nodes make different channel spaces."""
    ch = ch or analyse(graph)  # the caller's analysis of this same graph, if it has one
    roots: set[int] = set()
    for node, indices in selections.items():
        rule.need_node(graph, node, inputs_ok=True)
        roots |= classes_at(rule, ch, node, list(indices))
    why = ch.unbalanced(roots)
    if why:
        node = next(iter(selections))
        raise rule.error(f"these channels cannot go together: {why}", node=node, field="indices")
    draft = Draft(graph, ch, dict(graph.nodes), list(graph.outputs))
    remove_classes(draft, roots)
    draft.exact = False
    draft.note = exactness_note(graph, ch, roots)
    graph2, plan = realise(draft, rule)
    return Rewrite(graph2, graph, rule, plan)


class PruneChannels(Rule):
    """Remove output channels ``indices`` of ``node`` and every channel tied to them, slicing every producer and
    reader (residual adds, concat offsets, depthwise groups, flatten blocks)."""

    name: ClassVar[str] = "prune_channels"
    kind: ClassVar[str] = "prune"
    node: str
    indices: tuple[NonNegativeInt, ...] = Field(min_length=1)
    #: other nodes' output channels removed in the same rewrite, ``{node: indices}`` (CLI: ``also=c2:0,1;c3:2``):
    #: for channel spaces that cannot lose channels apart, as when a grouped conv's groups hold channels of several
    #: spaces and each must lose its share at once
    also: tuple[tuple[str, tuple[NonNegativeInt, ...]], ...] = ()

    @field_validator("also", mode="before")
    @classmethod
    def _read_also(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            value = ",".join(value)   # the CLI splits a list field at its commas
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return ()
        if isinstance(value, str):   # the CLI's node:i,j;node:k
            pairs = []
            for part in filter(None, (p.strip() for p in value.split(";"))):
                node, sep, indices = part.partition(":")
                if not sep or not node.strip():
                    raise ValueError(f"'{part}' is not node:i,j")
                pairs.append((node.strip(), [i.strip() for i in indices.split(",") if i.strip()]))
            return tuple(pairs)
        if isinstance(value, Mapping):
            return tuple(value.items())
        return value

    def also_text(self) -> str:
        """``also`` as the CLI writes it, ``node:i,j;node:k`` (what ``_read_also`` reads back; '' when empty)."""
        return ";".join(f"{node}:{','.join(map(str, indices))}" for node, indices in self.also)

    def args(self) -> dict:
        out = super().args()
        if self.also:
            out["also"] = {node: list(indices) for node, indices in self.also}
        else:
            del out["also"]   # the plain one-node rule encodes as it always has
        return out

    def selections(self) -> dict[str, tuple[int, ...]]:
        """Node -> the output positions this rule removes (``node`` and ``also`` merged)."""
        out: dict[str, set[int]] = {}
        for node, indices in ((self.node, self.indices), *self.also):
            out.setdefault(node, set()).update(indices)
        return {node: tuple(sorted(indices)) for node, indices in out.items()}

    def apply(self, graph: Graph) -> Rewrite:
        moe = experts_target(self, graph, self.node)
        if moe is not None and not self.also:   # ID.experts: the hidden units of every expert
            return prune_expert_units(self, graph, moe, self.indices)
        return prune_draft(self, graph, self.selections())

