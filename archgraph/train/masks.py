"""Learned pruning masks: per-weight soft thresholds and per-channel masks, trained by gradient descent.

Each conv/linear weight ``W`` gets a per-weight mask and, where its output channels can be removed on their own, a
per-channel mask; both are hard (0/1) in the forward pass:

* per weight: ``keep[o, i] = |W[o, i]| / r_o > tau`` where ``r_o`` is the RMS of the non-zero weights of output
  row ``o`` (so the threshold is scale-free, which matters before a batchnorm) and ``tau`` is one learnable scalar
  per layer, trained through the surrogate ``sigmoid((|W| / r - tau) / T)`` (straight-through).
* per channel: a channel is on while the ``|gamma|`` of the batchnorm/layernorm after it stays above
  ``channel_threshold`` (``gamma`` scales the normalised channel, so it is an absolute measure of what the channel
  says) and some weight making it is kept. ``gamma`` is learned by gradient descent like any weight, and the
  sparsity term pulls it down (an L1 pull priced by the channel's parameters).
* a channel whose every reading weight is masked does not affect the output either; it is removed too.
A switched-off channel has its weights, bias and norm parameters masked, so its output is exactly zero and removing it
(``prune_channels``) leaves the function unchanged.

The weights get the masked network's gradient unchanged (as if unmasked: "dynamic pruning with feedback"), so a
pruned weight can grow back past the threshold. The sparsity term is the *expected number of non-zero parameters*:
each weight counts its surrogate mask times its output and input channels' ``min(1, |gamma|)``; the strategy charges
a price per parameter for it, so the size follows from the loss/size trade-off, not from a target. The only extra
learned state is one scalar per layer, keyed by node id, so rewrites (new filters, removed channels, inserted layers)
need no remapping of mask state.

>>> import archgraph
>>> g = archgraph.load("examples/seeds/digits_cnn.yaml")
>>> masks = LearnedMasks(g, threshold_init=0.5)
>>> out = masks.forward(archgraph.build(g))
>>> sorted(out.overrides)[:2], out.expected.item() < g.params
(['bn1.bias', 'bn1.weight'], True)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import torch

from ..graph import Graph, Shape
from ..ops.registry import BUFFERS, FLATTEN, OPS, SOURCE, THROUGH, is_weighted
from .state import Stateful
from .tensors import TensorAdam

#: (hard 0/1 values, their differentiable surrogate): a weight's mask or a channel group's gates
MaskPair = tuple[torch.Tensor, torch.Tensor]


@dataclass
class ChannelGroup:
    """The output channels of one layer and every parameter indexed by them."""
    node: str
    members: list[str] = field(default_factory=list)     # "<node>.<param>" gated on axis 0 (bias, norm, depthwise)
    scale: Optional[str] = None                          # "<node>.weight" of the norm whose |gamma| scales a channel
    consumers: list[tuple[str, int]] = field(default_factory=list)  # ("<node>.weight", inputs per channel)


@dataclass
class MaskLayout:
    """Which weights get per-weight masks and which layers' channels can be gated (derived from the graph)."""
    weights: list[str]                                   # "<node>.weight" of conv/linear layers
    groups: dict[str, ChannelGroup]                      # producer node -> its channel group
    out_group: dict[str, str]                            # param key -> group whose gate applies on axis 0
    in_group: dict[str, list[tuple[str, int]]]           # weight key -> [(group, inputs per channel)] on axis 1


def mask_layout(graph: Graph, channel_masks: bool = True) -> MaskLayout:
    """Analyse ``graph``: every conv/linear weight is maskable; a conv (groups=1) or linear layer's channels are
    gateable when they reach other conv/linear layers only through per-channel ops (norms, activations, pools,
    dropout, depthwise convs, flatten) - not through an add, a concat or a graph output."""
    shapes = graph.shapes()
    weights = [f"{nid}.weight" for nid, n in graph.nodes.items() if is_weighted(n)]
    groups: dict[str, ChannelGroup] = {}
    if channel_masks:
        for nid, node in graph.nodes.items():
            if is_weighted(node) and _role(graph, nid, shapes) == SOURCE and _weight_axes(graph, nid, shapes)[0] == 0:
                group = _channel_group(graph, nid, shapes)
                if group is not None:
                    groups[nid] = group
    out_group: dict[str, str] = {}
    in_group: dict[str, list[tuple[str, int]]] = {}
    for gid, group in groups.items():
        out_group[f"{gid}.weight"] = gid
        for key in group.members:
            out_group[key] = gid
        for key, repeat in group.consumers:
            in_group.setdefault(key, []).append((gid, repeat))
    return MaskLayout(weights, groups, out_group, in_group)


def _role(graph: Graph, nid: str, shapes: Mapping[str, Shape]) -> str:
    node = graph.nodes[nid]
    return OPS[node.op].channels(node, [shapes[i] for i in node.inputs])


def _weight_axes(graph: Graph, nid: str, shapes: Mapping[str, Shape]) -> tuple[int, int]:
    """(out axis, in axis) of a weighted node's weight (a transposed conv's are (1, 0), the gates need (0, 1))."""
    node = graph.nodes[nid]
    return OPS[node.op].layout(node, [shapes[i] for i in node.inputs])["weight"]


def _params_on_out_axis(graph: Graph, nid: str, shapes: Mapping[str, Shape]) -> list[str]:
    node = graph.nodes[nid]
    layout = OPS[node.op].layout(node, [shapes[i] for i in node.inputs])
    return [f"{nid}.{p}" for p, (out_axis, _) in layout.items() if out_axis == 0 and p not in BUFFERS]


def _channel_group(graph: Graph, producer: str, shapes: Mapping[str, Shape]) -> Optional[ChannelGroup]:
    group = ChannelGroup(producer, members=[k for k in _params_on_out_axis(graph, producer, shapes)
                                            if not k.endswith(".weight")])
    if producer in graph.outputs:
        return None
    stack = [(producer, 1)]   # (node whose users to visit, inputs per channel so far)
    seen = set()
    while stack:
        nid, repeat = stack.pop()
        for user in graph.users(nid):
            if (user, nid) in seen:
                continue
            seen.add((user, nid))
            role = _role(graph, user, shapes)
            opdef = OPS[graph.nodes[user].op]
            if role == SOURCE:
                if _weight_axes(graph, user, shapes)[1] != 1:
                    return None   # a transposed conv reads its input on weight axis 0: the gates assume axis 1
                group.consumers.append((f"{user}.weight", repeat))
                continue
            if user in graph.outputs:
                return None   # the channels leave the network
            if role == THROUGH:
                if repeat != 1 and _params_on_out_axis(graph, user, shapes):
                    return None   # per-feature parameters after a flatten: not one channel any more
                group.members.extend(_params_on_out_axis(graph, user, shapes))
                if opdef.is_norm and group.scale is None and f"{user}.weight" in group.members:
                    group.scale = f"{user}.weight"
                stack.append((user, repeat))
            elif role == FLATTEN:
                _, h, w = shapes[nid]
                stack.append((user, repeat * h * w))
            else:
                return None
    if not group.consumers:
        return None
    return group


@dataclass
class MaskOutput:
    """One evaluation of the masks: parameter overrides for ``torch.func.functional_call`` and the expected number
    of non-zero parameters (differentiable in the thresholds)."""
    overrides: dict[str, torch.Tensor]
    expected: Optional[torch.Tensor]


class LearnedMasks(Stateful):
    """Per-layer learnable thresholds ``tau`` (with their own small Adam) and the fixed channel threshold.
    ``graph`` may be given later, with :meth:`attach`."""

    STATE = ("tau", "adam", "young")

    def __init__(self, graph: Optional[Graph] = None, *, temperature: float = 0.1, lr: float = 0.005,
                 threshold_init: float = 0.0, channel_threshold: float = 0.05, channel_masks: bool = True,
                 device: torch.device | str | None = None):
        self.temperature = temperature
        self.lr = lr
        self.threshold_init = threshold_init
        self.channel_threshold = channel_threshold
        self.channel_masks = channel_masks
        self.device = device
        self.tau: dict[str, torch.Tensor] = {}
        #: group node -> indices of channels not charged yet (new ones still growing their outgoing weights)
        self.young: dict[str, list[int]] = {}
        self.adam = TensorAdam(lr, in_place=False)
        self.graph: Optional[Graph] = None
        if graph is not None:
            self.rebuild(graph)

    # ---- structure ------------------------------------------------------------------------------------------
    def attach(self, graph: Graph, device: torch.device | str | None) -> None:
        """Live on ``device`` (thresholds and moments moved there) and follow ``graph``."""
        self.device = device
        self.tau = {k: v.detach().to(device).clone().requires_grad_(True) for k, v in self.tau.items()}
        self.adam.to(device)
        self.rebuild(graph)

    def after_load(self) -> None:
        self.young = {k: [int(i) for i in v] for k, v in self.young.items()}
        if self.graph is not None:
            self.attach(self.graph, self.device)

    @property
    def steps(self) -> int:
        return self.adam.steps

    def rebuild(self, graph: Graph) -> None:
        """Follow a rewrite: layers that survive keep their thresholds, new layers start at the initial ones."""
        self.graph = graph
        self.layout = mask_layout(graph, self.channel_masks)
        self.young = {k: v for k, v in self.young.items() if k in self.layout.groups}
        nodes = {k.rsplit(".", 1)[0] for k in self.layout.weights}
        self.tau = {n: self.tau.get(n, self._scalar(self.threshold_init)) for n in sorted(nodes)}
        self.adam.keep(f"tau.{n}" for n in self.tau)

    def _scalar(self, value: float) -> torch.Tensor:
        return torch.tensor(float(value), device=self.device, requires_grad=True)

    def parameters(self) -> dict[str, torch.Tensor]:
        return {f"tau.{n}": t for n, t in self.tau.items()}

    # ---- masks ----------------------------------------------------------------------------------------------
    def _weight_masks(self, params: Mapping[str, torch.Tensor]) -> dict[str, MaskPair]:
        """Weight key -> (hard 0/1 mask, sigmoid surrogate)."""
        masks = {}
        for key in self.layout.weights:
            w = params[key]
            tau = self.tau[key.rsplit(".", 1)[0]]
            rel = w.abs() / _row_scale(w)
            masks[key] = ((rel.detach() > tau.detach()).to(w.dtype),
                          torch.sigmoid((rel - tau) / self.temperature))
        return masks

    def _gates(self, params: Mapping[str, torch.Tensor],
               weight_masks: Mapping[str, MaskPair]) -> dict[str, MaskPair]:
        """Group node -> (hard 0/1 per channel, soft count per channel). A channel is off when its norm scale
        ``|gamma|`` is under ``channel_threshold`` or every weight making it is masked; it counts ``min(1, |gamma|)``
        in the expected size (an L1 pull on ``gamma`` priced by the channel's parameters)."""
        gates = {}
        for gid, group in self.layout.groups.items():
            w = params[f"{gid}.weight"]
            alive = _rows(weight_masks[f"{gid}.weight"][0]).amax(1) > 0
            if group.scale:
                gamma = params[group.scale].abs()
                alive &= gamma.detach() > self.channel_threshold
                soft = gamma.clamp(max=1.0)
                young = self.young.get(gid)
                if young:
                    free = torch.zeros_like(soft, dtype=torch.bool)
                    free[[i for i in young if i < len(free)]] = True
                    soft = torch.where(free, soft.detach(), soft)
            else:
                soft = torch.ones(w.shape[0], dtype=w.dtype, device=w.device)
            gates[gid] = (alive.to(w.dtype), soft)
        return gates

    def forward(self, module: torch.nn.Module, *, expected: bool = True) -> MaskOutput:
        """Masked parameters (hard values, surrogate gradients) and the expected non-zero count."""
        params = dict(module.named_parameters())
        weight_masks = self._weight_masks(params)
        gates = self._gates(params, weight_masks)
        overrides: dict[str, torch.Tensor] = {}
        for key in list(weight_masks) + [k for k in self.layout.out_group if k not in weight_masks]:
            p = params[key]
            factor = None
            if key in weight_masks:
                hard, soft = weight_masks[key]
                factor = hard + (soft - soft.detach())
            gid = self.layout.out_group.get(key)
            if gid is not None:
                g = gates[gid][0].view(-1, *([1] * (p.dim() - 1)))
                factor = g if factor is None else factor * g
            assert factor is not None   # every key has a weight mask or a gate
            # value: p times the hard masks; gradient: unchanged to p (straight through), surrogate to thresholds
            overrides[key] = p + p.detach() * (factor - 1)
        count = self._expected(params, weight_masks, gates) if expected else None
        return MaskOutput(overrides, count)

    def _expected(self, params: Mapping[str, torch.Tensor], weight_mask: Mapping[str, MaskPair],
                  gates: Mapping[str, MaskPair]) -> torch.Tensor:
        total = torch.zeros((), device=next(iter(params.values())).device)
        for key in self.layout.weights:
            soft = weight_mask[key][1]
            gid = self.layout.out_group.get(key)
            if gid is not None:
                soft = soft * gates[gid][1].view(-1, *([1] * (soft.dim() - 1)))
            for src, repeat in self.layout.in_group.get(key, []):
                g = gates[src][1].repeat_interleave(repeat)
                soft = soft * g.view(1, -1, *([1] * (soft.dim() - 2)))
            total = total + soft.sum()
        for key, gid in self.layout.out_group.items():
            if key in weight_mask:
                continue
            p = params[key]
            total = total + gates[gid][1].sum() * (p.numel() // p.shape[0])
        return total

    @torch.no_grad()
    def hard_weights(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Every parameter as the masked network uses it, with exact zeros where masked. The parameters of a
        channel that can be removed (see :meth:`dead_channels`) and the weights reading it are zeroed too: the
        output does not depend on them and removing the channel removes them."""
        out = self.forward(module, expected=False)
        state = {k: v.detach() for k, v in module.named_parameters()}
        state.update({k: v.detach().clone() for k, v in out.overrides.items()})
        dead = self.dead_channels(module)
        for gid, idx in dead.items():
            for key in [f"{gid}.weight", *self.layout.groups[gid].members]:
                state[key][idx] = 0
        for key, links in self.layout.in_group.items():
            for gid, repeat in links:
                for c in dead.get(gid, []):
                    state[key][:, c * repeat:(c + 1) * repeat] = 0
        return state

    @torch.no_grad()
    def dead_channels(self, module: torch.nn.Module) -> dict[str, list[int]]:
        """Group node -> indices of its channels that can go: switched off, or read only through masked weights.
        Either way the network's output does not depend on them, so removing them keeps the function."""
        params = dict(module.named_parameters())
        weight_masks = self._weight_masks(params)
        gates = self._gates(params, weight_masks)
        dead = {}
        for gid, (alive, _) in gates.items():
            keep = alive > 0
            for key, repeat in self.layout.groups[gid].consumers:
                keep &= _cols(weight_masks[key][0], repeat).amax(1) > 0
            idx = torch.nonzero(~keep).flatten().tolist()
            if idx:
                dead[gid] = idx
        return dead

    # ---- optimisation -------------------------------------------------------------------------------------
    def zero_grad(self) -> None:
        for t in self.parameters().values():
            t.grad = None

    def step(self) -> None:
        self.adam.step(self.parameters())

    def summary(self) -> dict:
        """Thresholds for the history log."""
        return {"tau": {k: round(v.item(), 4) for k, v in self.tau.items()}}


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _cols(t: torch.Tensor, repeat: int) -> torch.Tensor:
    """``[in_channels, rest]``: axis 1 of a weight grouped by channel (``repeat`` inputs per channel)."""
    t = t.transpose(0, 1)
    return t.reshape(t.shape[0] // repeat, -1)


def _row_scale(w: torch.Tensor) -> torch.Tensor:
    """RMS of the non-zero entries of each output row, shaped to broadcast against ``w`` (detached)."""
    rows = _rows(w.detach())
    nnz = (rows != 0).sum(1).clamp_min(1)
    rms = (rows.pow(2).sum(1) / nnz).sqrt().clamp_min(1e-12)
    return rms.view(-1, *([1] * (w.dim() - 1)))

