"""Per-weight (unstructured) masks and the channels they empty, shared by the Gumbel and Budget strategies.

A method decides a 0/1 mask for every conv/linear weight. :class:`ChannelDeath` finds the channels those masks
empty - every weight that makes the channel is masked, or every weight that reads it - and zeroes the channel's other
parameters (bias, norm scale and shift) so it outputs exact zeros; removing it with ``prune_channels`` then leaves the
function unchanged. Only channels that :func:`~archgraph.train.masks.mask_layout` can gate are considered (not those
feeding a residual add, a concat or a graph output). :func:`follow` carries per-weight state (logits, optimiser
moments) through a rewrite with the rewrite's own transfer plan, and :class:`TensorAdam` is a small Adam over a dict
of such tensors whose state follows rewrites the same way.

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

from typing import Mapping, Optional

import torch

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
        from .. import rules as R
        out = []
        for gid in sorted(dead):
            idx = torch.nonzero(dead[gid]).flatten().tolist()
            if len(idx) >= dead[gid].numel():
                idx = idx[1:]
            if idx:
                out.append(R.PruneChannels(node=gid, indices=idx))
        return out


@torch.no_grad()
def follow(plan, tensors: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Size], fill: float = 0.0,
           device=None) -> dict[str, torch.Tensor]:
    """Per-weight state for the new version of a rewrite: each tensor of ``tensors`` (keyed like the parameter it
    belongs to) is sliced, extended or copied as ``plan`` says for that parameter; entries the rewrite creates start
    at ``fill``. ``shapes`` gives the new parameters' shapes (keys missing from it are dropped).

    >>> import archgraph, torch
    >>> from archgraph import rules
    >>> g = archgraph.load("examples/seeds/digits_cnn.yaml")
    >>> rw = archgraph.apply(g, rules.PruneChannels(node="c1", indices=[0]))
    >>> logits = {"c2.weight": torch.arange(8 * 4 * 9.0).view(8, 4, 3, 3)}
    >>> follow(rw.plan, logits, {"c2.weight": torch.Size([8, 3, 3, 3])})["c2.weight"].shape
    torch.Size([8, 3, 3, 3])
    """
    from ..fx.apply_plan import carry
    out = {}
    for key, shape in shapes.items():
        tp = plan.tensors.get(key)
        old = tensors.get(tp.source) if tp is not None and tp.source is not None else None
        if old is None:
            out[key] = torch.full(tuple(shape), float(fill), device=device)
            continue
        value = carry(tp, old, None, key, state=True)
        if tp.axes and fill != 0:
            carried = carry(tp, torch.ones_like(old), None, key, state=True) != 0   # False where new
            value = torch.where(carried, value, torch.full_like(value, float(fill)))
        out[key] = value.clone().to(device)
    return out


class TensorAdam:
    """Adam over a dict of leaf tensors (the method's own parameters), with per-key moments that can follow a
    rewrite. Its learning rate is set per step (the strategy follows the run's schedule)."""

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.steps = 0
        self.m: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def step(self, params: Mapping[str, torch.Tensor], lr: Optional[float] = None) -> None:
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        self.steps += 1
        for key, t in params.items():
            if t.grad is None:
                continue
            m = self.m.get(key)
            if m is None or m.shape != t.shape:
                m, v = torch.zeros_like(t), torch.zeros_like(t)
            else:
                v = self.v[key]
            m.mul_(b1).add_(t.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(t.grad, t.grad, value=1 - b2)
            m_hat = m / (1 - b1 ** self.steps)
            v_hat = v / (1 - b2 ** self.steps)
            t -= lr * m_hat / (v_hat.sqrt() + self.eps)
            self.m[key], self.v[key] = m, v
            t.grad = None

    def follow(self, plan, shapes: Mapping[str, torch.Size], others=(), device=None) -> None:
        """Carry the moments through a rewrite: per-weight keys (``shapes``: the new parameters' shapes) as
        :func:`follow` does, with new entries at zero; ``others`` (per-layer keys that survive) as they are."""
        for name in ("m", "v"):
            old = getattr(self, name)
            new = follow(plan, old, shapes, 0.0, device)
            new.update({k: old[k] for k in others if k in old})
            setattr(self, name, new)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "m": {k: v.detach().cpu() for k, v in self.m.items()},
                "v": {k: v.detach().cpu() for k, v in self.v.items()}}

    def load_state_dict(self, state: dict, device=None) -> None:
        self.steps = int(state["steps"])
        self.m = {k: v.to(device) for k, v in state["m"].items()}
        self.v = {k: v.to(device) for k, v in state["v"].items()}
