"""Coupled channel groups as index tensors, for group sparsity (group lasso) and for pruning whole groups.

A *group* is one coupling class of :mod:`archgraph.channels`: a channel together with everything tied to it (the
matching output rows of every producer - both sides of a residual add -, the norm entries, depthwise filters, and
the input columns of every layer reading it, a block of ``H*W`` columns after a flatten). Removing the group is one
``prune_channels`` on any of its producers. Classes that cannot change (graph inputs and outputs, grouped convs) are
left out.

For each parameter tensor and axis, :class:`GroupIndex` holds the group id of every position (``-1``: in no
group), so the squared norm of every group is a few ``index_add_`` calls and stays differentiable.

>>> import archgraph
>>> gi = GroupIndex(archgraph.load("examples/seeds/digits_cnn.yaml"))
>>> len(gi), gi.producer[0], gi.producer[4]     # c1's 4 channels, then c2's 8
(12, ('c1', 0), ('c2', 0))
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..channels import Channels, analyse
from ..errors import RuleError
from ..ops.registry import GROUPED, OPS, SOURCE
from ..rules import PruneChannels
from ..rules.base import apply as apply_rule
from .masks import BUFFERS


class GroupIndex:
    """Group ids of every parameter position of ``graph`` (see the module docstring)."""

    def __init__(self, graph, device=None):
        self.graph = graph
        ch: Channels = analyse(graph)
        self.ch = ch
        roots: dict[int, int] = {}        # class root -> group id
        self.producer: list[tuple[str, int]] = []    # group id -> (a producer node, its channel index)
        for nid, role in ch.roles.items():
            if role not in (SOURCE, GROUPED):
                continue
            for i, token in enumerate(ch.slots[nid].tokens):
                root = ch.cls(token)
                if root in roots or ch.frozen(root):
                    continue
                roots[root] = len(self.producer)
                self.producer.append((nid, i))
        self.roots = roots
        self.entries: list[tuple[str, int, torch.Tensor]] = []   # (param key, axis, group id per position)
        shapes = graph.shapes()
        for nid, node in graph.nodes.items():
            in_shapes = [shapes[i] for i in node.inputs]
            opdef = OPS[node.op]
            blocks, own = opdef.gates(node), opdef.recurrent(node)
            for pname, (out_axis, in_axis) in opdef.layout(node, in_shapes).items():
                if pname in BUFFERS:
                    continue
                # an lstm/gru's out axis holds one block of its units per gate, and its recurrent tensors read
                # its own units on the in axis (OpDef.gates, OpDef.recurrent)
                reads = nid if pname in own else (node.inputs[0] if node.inputs else None)
                for axis, value, repeat in ((out_axis, nid, blocks), (in_axis, reads, 1)):
                    if axis is None or value is None:
                        continue
                    ids = self._ids(value).repeat(repeat)
                    if bool((ids >= 0).any()):
                        self.entries.append((f"{nid}.{pname}", axis, ids.to(device)))
        self.root_of = {gid: root for root, gid in roots.items()}

    def __len__(self) -> int:
        return len(self.producer)

    def _ids(self, value: str) -> torch.Tensor:
        """Group id of every position of ``value``'s axis 0 (a channel's block after a flatten repeats it)."""
        slots = self.ch.slots[value]
        out = []
        for token, block in zip(slots.tokens, slots.block_sizes()):
            out.extend([self.roots.get(self.ch.cls(token), -1)] * block)
        return torch.tensor(out, dtype=torch.long)

    def sq_norms(self, params: dict[str, torch.Tensor], scale: Optional[dict[str, torch.Tensor]] = None
                 ) -> torch.Tensor:
        """Sum of squares of every group's parameters (differentiable); ``scale[key]`` divides a tensor first."""
        total = None
        for key, axis, ids in self.entries:
            p = params[key]
            if scale is not None and key in scale:
                p = p / scale[key]
            sq = p.pow(2)
            dims = [d for d in range(sq.dim()) if d != axis]
            per = sq.sum(dim=dims) if dims else sq
            keep = ids >= 0
            if total is None:
                total = torch.zeros(len(self), dtype=per.dtype, device=per.device)
            total = total.index_add(0, ids[keep], per[keep])
        if total is None:
            total = torch.zeros(len(self))
        return total

    def sizes(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Number of parameter entries in every group."""
        ones = {key: torch.ones_like(params[key]) for key, _, _ in self.entries}
        return self.sq_norms(ones)

    def prune_rules(self, groups: Sequence[int], *, min_width: int = 1, apply=None) -> list:
        """``prune_channels`` rules removing ``groups`` (ids), one per producer, indices valid in turn; a group
        that would leave one of its producers with fewer than ``min_width`` channels stays. The rules are checked
        against the graph (with ``apply``, default :func:`archgraph.apply`): one that cannot apply is left out, and
        its groups stay."""
        apply = apply or apply_rule
        ch = self.ch
        wanted = set(groups)
        width: dict[str, int] = {}
        removed: set[int] = set()          # class roots removed so far
        plan: dict[str, list[int]] = {}    # producer -> group ids to remove there
        for gid in sorted(wanted):
            root = self.root_of[gid]
            producers = sorted(ch.producers(root) - set(self.graph.inputs))
            if not producers:
                continue
            if any(width.setdefault(p, len(ch.slots[p].tokens)) - 1 < min_width for p in producers):
                continue
            for p in producers:
                width[p] -= 1
            plan.setdefault(self.producer[gid][0], []).append(root)
        rules = []
        graph = self.graph
        for node, node_roots in plan.items():
            current = [ch.cls(t) for t in ch.slots[node].tokens if ch.cls(t) not in removed]
            take = set(node_roots)
            indices = [i for i, c in enumerate(current) if c in take]
            if not indices:
                continue
            rule = PruneChannels(node=node, indices=indices)
            try:
                graph = apply(graph, rule).graph
            except RuleError:
                continue
            removed |= take
            rules.append(rule)
        return rules

