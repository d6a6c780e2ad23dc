"""The tensors a strategy keeps itself (gate logits, saliencies, per-weight mask logits, thresholds): how they follow
a rewrite and the small optimisers that step them.

Both followers read the rewrite's own transfer plan (:class:`~archgraph.plan.TransferPlan`), so kept, split and
copied entries keep their values and new ones start at a given value:

* :func:`follow_channels` carries per-channel tensors keyed by layer (channels on axis 0: gate logits, saliencies);
* :func:`follow_weights` carries per-weight tensors keyed like the parameter they belong to (mask logits, moments).

:class:`TensorSGD` and :class:`TensorAdam` step a dict of such tensors whose set and shapes change with rewrites;
their state is declared (:class:`~archgraph.train.state.Stateful`), so it goes into checkpoints as plain tensors,
and :meth:`TensorSGD.follow` / :meth:`TensorAdam.follow` remap it through a rewrite.

>>> import archgraph, torch
>>> from archgraph import rules
>>> g = archgraph.load("examples/seeds/digits_cnn.yaml")
>>> rw = archgraph.apply(g, rules.PruneChannels(node="c1", indices=[0]))
>>> follow_channels(rw.plan, {"c1": torch.arange(4.0)}, lambda node, n: torch.zeros(n), {"c1": 3})["c1"].tolist()
[1.0, 2.0, 3.0]
>>> logits = {"c2.weight": torch.arange(8 * 4 * 9.0).view(8, 4, 3, 3)}
>>> follow_weights(rw.plan, logits, {"c2.weight": torch.Size([8, 3, 3, 3])})["c2.weight"].shape
torch.Size([8, 3, 3, 3])
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Optional

import torch

from ..fx.apply_plan import carry
from .state import Stateful

# ---- following a rewrite ------------------------------------------------------------------------------------------

def channel_map(plan, node: str, anchor=None) -> Optional[tuple[int, ...]]:
    """Old channel index of each new output channel of ``node`` (-1 for a new channel) under ``plan``, or None if
    ``node`` is gone. Split and Net2Net copies name the channel they copy. ``anchor`` (a
    :class:`~archgraph.train.gates.Part`: tensor, axis, entries per channel, blocks) says where the channels are;
    by default axis 0 of ``<node>.weight``."""
    key, axis, repeat, blocks = ((f"{node}.weight", 0, 1, 1) if anchor is None
                                 else (anchor.key, anchor.axis, anchor.repeat, anchor.blocks))
    tp = plan.tensors.get(key)
    if tp is None or tp.source != key:
        return None
    for ax, amap in tp.axes:
        if ax == axis:
            index = amap.index[:len(amap.index) // blocks]   # the gate blocks are tiled alike: read the first
            if repeat > 1:   # a head's head_dim entries: the head of its first entry
                index = tuple(i // repeat if i >= 0 else -1 for i in index[::repeat])
            return tuple(index)
    return ()   # unchanged


def follow_channels(plan, state: dict[str, torch.Tensor], fill: Callable[[str, int], torch.Tensor],
                    sizes: dict[str, int], anchors: Optional[dict] = None) -> dict[str, torch.Tensor]:
    """Carry per-channel tensors (keyed by layer, channels on axis 0) through a rewrite: kept and copied channels
    keep their values, new ones take ``fill(node, count)``; layers that are gone are dropped and new layers in
    ``sizes`` (node -> width) start from ``fill`` too. ``anchors[node]`` says where a layer's channels are in its
    tensors (see :func:`channel_map`)."""
    out: dict[str, torch.Tensor] = {}
    anchors = anchors or {}
    for node, width in sizes.items():
        old = state.get(node)
        index = channel_map(plan, node, anchors.get(node)) if old is not None else None
        if old is None or index is None:
            out[node] = fill(node, width)
            continue
        if index == ():
            out[node] = old if old.shape[0] == width else fill(node, width)
            continue
        idx = torch.tensor(index, dtype=torch.long, device=old.device)
        new = old[idx.clamp_min(0)].clone()
        fresh = idx < 0
        if bool(fresh.any()):
            new[fresh] = fill(node, int(fresh.sum())).to(new.dtype)
        out[node] = new
    return out


@torch.no_grad()
def follow_weights(plan, tensors: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Size], fill: float = 0.0,
                   device=None) -> dict[str, torch.Tensor]:
    """Per-weight state for the new version of a rewrite: each tensor of ``tensors`` (keyed like the parameter it
    belongs to) is sliced, extended or copied as ``plan`` says for that parameter; entries the rewrite creates start
    at ``fill``. ``shapes`` gives the new parameters' shapes (keys missing from it are dropped).
    """
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


# ---- optimisers -------------------------------------------------------------------------------------------------

class TensorSGD(Stateful):
    """SGD with momentum over a dict of tensors whose set and shapes change with rewrites (:meth:`follow` remaps
    the momentum with :func:`follow_channels`). SGD rather than Adam: the balance between a gate's task gradient
    and its penalty is then the one the loss says, where Adam would move every gate at the learning rate whatever
    the size of its gradient."""

    STATE = ("buf",)

    def __init__(self, lr: float, momentum: float = 0.9):
        self.lr, self.momentum = lr, momentum
        self.buf: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def step(self, tensors: dict[str, torch.Tensor]) -> None:
        for key, t in tensors.items():
            if t.grad is None:
                continue
            buf = self.buf.get(key)
            buf = t.grad.clone() if buf is None or buf.shape != t.shape else buf.mul_(self.momentum).add_(t.grad)
            t -= self.lr * buf
            self.buf[key] = buf
            t.grad = None

    def follow(self, plan, sizes: dict[str, int], anchors: Optional[dict] = None) -> None:
        """Remap the momentum of channel tensors through a rewrite (new channels start at zero)."""
        def zeros(node, n):
            return torch.zeros(n, device=self.buf[node].device)
        self.buf = follow_channels(plan, self.buf, zeros, {k: v for k, v in sizes.items() if k in self.buf},
                                   anchors)

    def keep(self, keys: Iterable[str]) -> None:
        keys = set(keys)
        self.buf = {k: v for k, v in self.buf.items() if k in keys}

    def to(self, device) -> None:
        self.buf = {k: v.to(device) for k, v in self.buf.items()}


class TensorAdam(Stateful):
    """Adam over a dict of leaf tensors (the method's own parameters), with per-key moments that can follow a
    rewrite. Its learning rate may be set per step (a strategy following the run's schedule).

    ``in_place`` (default) updates the moments in place; GNAP's mask thresholds have always been stepped with the
    out-of-place form (``m = b1 * m + (1 - b1) * g``), which differs in the last bit, so they keep it
    (``in_place=False``) and a run gives the same numbers as before."""

    STATE = ("steps", "m", "v")

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 in_place: bool = True):
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.in_place = in_place
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
            g = t.grad
            m = self.m.get(key)
            if m is None or m.shape != t.shape:
                m, v = torch.zeros_like(t), torch.zeros_like(t)
            else:
                v = self.v[key]
            if self.in_place:
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
            else:
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
            m_hat = m / (1 - b1 ** self.steps)
            v_hat = v / (1 - b2 ** self.steps)
            t -= lr * m_hat / (v_hat.sqrt() + self.eps)
            self.m[key], self.v[key] = m, v
            t.grad = None

    def follow(self, plan, shapes: Mapping[str, torch.Size], others=(), device=None) -> None:
        """Carry the moments through a rewrite: per-weight keys (``shapes``: the new parameters' shapes) as
        :func:`follow_weights` does, with new entries at zero; ``others`` (per-layer keys that survive) as they
        are."""
        for name in ("m", "v"):
            old = getattr(self, name)
            new = follow_weights(plan, old, shapes, 0.0, device)
            new.update({k: old[k] for k in others if k in old})
            setattr(self, name, new)

    def keep(self, keys: Iterable[str]) -> None:
        keys = set(keys)
        self.m = {k: v for k, v in self.m.items() if k in keys}
        self.v = {k: v for k, v in self.v.items() if k in keys}

    def to(self, device) -> None:
        self.m = {k: v.to(device) for k, v in self.m.items()}
        self.v = {k: v.to(device) for k, v in self.v.items()}
