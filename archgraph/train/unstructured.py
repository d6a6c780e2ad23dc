"""Per-weight (unstructured) masks and the channels they empty, shared by the Gumbel and Budget strategies.

A method decides a 0/1 mask for every conv/linear weight. :class:`ChannelDeath` finds the channels those masks
empty - every weight that makes the channel is masked, or every weight that reads it - and zeroes the channel's other
parameters (bias, norm scale and shift) so it outputs exact zeros; removing it with ``prune_channels`` then leaves the
function unchanged. Only channels that :func:`~archgraph.train.masks.mask_layout` can gate are considered (not those
feeding a residual add, a concat or a graph output). Per-weight state (logits, optimiser moments) follows a rewrite
with :func:`archgraph.train.tensors.follow_weights`.

>>> import archgraph, torch
>>> g = archgraph.load("examples/seeds/digits_cnn.yaml")
>>> m = archgraph.build(g)
>>> hard = {k: torch.ones_like(m.get_parameter(k)) for k in masked_keys(g)}
>>> hard["c1.weight"][2] = 0                            # every weight making channel 2 of c1 is dropped
>>> death = ChannelDeath(g)
>>> dead = death.dead(hard)
>>> dead["c1"].nonzero().flatten().tolist()
[2]
>>> [(r.name, r.node, r.indices) for r in death.rules(dead)]
[('prune_channels', 'c1', (2,))]
"""
from __future__ import annotations

from typing import Mapping

import torch

from .. import rules as R
from ..ops.registry import is_weighted
from .masks import mask_layout


def masked_keys(graph) -> list[str]:
    """``<node>.weight`` of every conv and linear layer: the weights that get a per-weight mask."""
    return [f"{nid}.weight" for nid, n in graph.nodes.items() if is_weighted(n)]


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _cols(t: torch.Tensor, repeat: int) -> torch.Tensor:
    """``[in_channels, rest]``: axis 1 of a weight grouped by channel (``repeat`` inputs per channel)."""
    t = t.transpose(0, 1)
    return t.reshape(t.shape[0] // repeat, -1)


def _axis0(gate: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return gate.view(-1, *([1] * (like.dim() - 1)))


class ChannelDeath:
    """The channels a set of per-weight masks empties, for one graph (build a new one after a rewrite)."""

    def __init__(self, graph):
        self.graph = graph
        self.layout = mask_layout(graph, channel_masks=True)

    @torch.no_grad()
    def dead(self, hard: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Group node -> boolean per output channel: True where every weight making the channel, or every weight
        reading it, is masked (``hard`` maps weight keys to 0/1 masks). A dead channel's readers lose its columns
        and its maker loses its row, which can empty further channels: repeated until nothing changes."""
        live = {k: v.detach() != 0 for k, v in hard.items()}
        out = {gid: torch.zeros(live[f"{gid}.weight"].shape[0], dtype=torch.bool, device=live[f"{gid}.weight"].device)
               for gid in self.layout.groups}
        changed = True
        while changed:
            changed = False
            for gid, group in self.layout.groups.items():
                made = _rows(live[f"{gid}.weight"]).any(1)
                read = torch.ones_like(made)
                for key, repeat in group.consumers:
                    read &= _cols(live[key], repeat).any(1)
                dead = ~(made & read)
                if bool((dead & ~out[gid]).any()):
                    out[gid] = out[gid] | dead
                    changed = True
                    keep = ~out[gid]
                    w = live[f"{gid}.weight"]
                    live[f"{gid}.weight"] = w & keep.view(-1, *([1] * (w.dim() - 1)))
                    for key, repeat in group.consumers:
                        c = live[key]
                        live[key] = c & keep.repeat_interleave(repeat).view(1, -1, *([1] * (c.dim() - 2)))
        return out

    def gate(self, values: dict[str, torch.Tensor], params: Mapping[str, torch.Tensor],
             dead: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``values`` (the masked weights, ``<node>.weight`` -> tensor) with the dead channels zeroed everywhere:
        the producer's rows, its bias and norm parameters (taken from ``params`` when not in ``values``) and the
        readers' columns. Returns a new dict; the gates are constants (no gradient through them)."""
        out = dict(values)
        for gid, is_dead in dead.items():
            if not bool(is_dead.any()):
                continue
            group = self.layout.groups[gid]
            for key in [f"{gid}.weight", *group.members]:
                p = out[key] if key in out else params[key]
                keep = (~is_dead).to(p.dtype)
                out[key] = p * _axis0(keep, p)
            for key, repeat in group.consumers:
                p = out[key] if key in out else params[key]
                keep = (~is_dead).to(p.dtype).repeat_interleave(repeat)
                out[key] = p * keep.view(1, -1, *([1] * (p.dim() - 2)))
        return out

    def rules(self, dead: Mapping[str, torch.Tensor]) -> list:
        """``prune_channels`` for every layer with dead channels; a layer keeps one channel (none is no layer)."""
        out = []
        for gid in sorted(dead):
            idx = torch.nonzero(dead[gid]).flatten().tolist()
            if len(idx) >= dead[gid].numel():
                idx = idx[1:]
            if idx:
                out.append(R.PruneChannels(node=gid, indices=idx))
        return out
