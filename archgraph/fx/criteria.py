"""Pruning criteria: how important each coupling class of channels, and each attention head, is.

One small object per criterion, in :data:`CRITERIA`, keyed by the name the CLI and the Python API take:

- ``l2`` / ``l1``: the summed ``|w|**2`` / ``|w|`` of every weight entry holding the channel (Torch-Pruning's
  ``GroupMagnitudeImportance``);
- ``random``: a random score per class (seeded);
- ``taylor``: the first-order Taylor estimate of the loss change when the channel goes, ``|w * dL/dw|`` summed over
  every weight entry holding the class (LLM-Pruner's element-wise first order, Torch-Pruning's ``TaylorImportance``),
  with ``dL/dw`` the gradient of the task loss summed over the calibration batches;
- ``activation``: the mean magnitude of the channel where a layer reads it (Minitron's activation-based importance):
  for every value read by a layer that mixes channels (conv, linear, attention), the mean ``|x|`` of each channel
  over the calibration batches and positions, summed over those values. So an MLP neuron scores by its activation
  (what ``down_proj`` reads), a residual-stream (embedding) channel by its layernorm outputs in every block (what
  q/k/v and the MLP read; Minitron's ``LN(X)``), a CNN channel by its post-activation map; a head scores by the mean
  magnitude of its attention output (the input of ``o_proj``, Minitron's head score).

``taylor`` and ``activation`` are *calibrated*: they need batches (see :mod:`archgraph.fx.calibration`).

>>> sorted(CRITERIA)
['activation', 'l1', 'l2', 'random', 'taylor']
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Mapping, Optional, Protocol

import torch

from ..channels import GROUPED, MIXER, SOURCE, Channels
from ..graph import Graph
from ..ops.registry import OPS
from . import calibration
from .builder import build


@dataclass
class Context:
    """What a criterion may use: the weights, the seed of ``random``, the calibration batches and a loss."""
    state: Mapping[str, torch.Tensor]
    seed: int = 0
    calib: Optional[list] = None
    loss: Optional[Callable] = None
    _cache: dict = field(default_factory=dict)

    def module(self, graph: Graph) -> torch.nn.Module:
        """The graph built with these weights, in float32, on the calibration batches' device (built once per
        graph)."""
        key = ("module", id(graph))
        if key not in self._cache:
            m = build(graph)
            m.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in self.state.items()},
                              strict=False)
            if self.calib:   # where the calibration batches are
                m = m.to(calibration.split_batch(self.calib[0])[0][0].device)
            self._cache[key] = (graph, m)
        return self._cache[key][1]


def is_weight(param: str) -> bool:
    """Whether a layout tensor counts: PyTorch's weights (``weight``, ``q_proj.weight``, ``weight_ih_l0``,
    ``weight_hh_l0``), not its biases (``bias``, ``bias_ih_l0``) nor buffers (running statistics)."""
    return param.rsplit(".", 1)[-1].startswith("weight")


class EntryScore(Protocol):
    """``entry(key, t, rows=slice)``: a non-negative score of every entry of ``t``, the rows ``rows`` of weight
    ``key``."""

    def __call__(self, key: str, t: torch.Tensor, rows: slice = ...) -> torch.Tensor: ...


def entry_scores(graph: Graph, state: Mapping[str, torch.Tensor], ch: Channels,
                 entry: EntryScore) -> dict[int, float]:
    """Class -> the sum of ``entry(key, t, rows=slice)`` (a non-negative tensor of the shape of ``t``, the rows
    ``rows`` of weight ``key``; big tensors go in chunks of rows) over every weight entry that belongs to the
    class: the producers' output slices, batchnorm, layernorm and depthwise entries, the
    readers' input slices (biases and running statistics do not count). A recurrent unit owns one row of every gate
    block and the columns of the tensors reading its own output; a grouped conv's in-group columns count too."""
    scores: dict[int, float] = {}
    shapes = graph.shapes()
    for nid, node in graph.nodes.items():
        opdef = OPS[node.op]
        layout = opdef.coupling.layout(node, [shapes[i] for i in node.inputs])
        gates, own = opdef.coupling.gates(node), opdef.coupling.recurrent(node)
        for param, (out_axis, in_axis) in layout.items():
            key = f"{nid}.{param}"
            tensor = state.get(key)
            if not is_weight(param) or tensor is None:
                continue
            grouped = param == "weight" and ch.roles[nid] == GROUPED
            sums = _axis_sums(key, tensor, entry, [a for a in (out_axis, in_axis) if a is not None])
            reads = nid if param in own else node.inputs[0]   # weight_hh reads the op's own units
            for axis, value, blocks in ((out_axis, nid, gates), (in_axis, reads, 1)):
                if axis is None:
                    continue
                per_entry = sums[axis]
                if blocks > 1:   # the gate blocks of the units, one after another: a unit owns a row of each
                    per_entry = per_entry.view(blocks, -1).sum(0)
                _add_per_slot(scores, ch, value, per_entry)
            if grouped:
                mag = entry(key, tensor.detach().cpu())
                # axis 1 is a position within a group: the entries of one channel are that column of its group's
                # rows (the input's channel, or the transposed conv's output's)
                value = node.inputs[0] if opdef.coupling.group_side == "in" else nid
                tokens = ch.slots[value].tokens
                groups = int(getattr(node, "groups"))
                rows = mag.shape[0] // groups
                per = mag.sum(dim=[d for d in range(mag.dim()) if d not in (0, 1)], dtype=torch.float64) \
                    if mag.dim() > 2 else mag.double()
                per = per.view(groups, rows, -1).sum(1).reshape(-1)   # [groups * in-group] = channel order
                for token, score in zip(tokens, per.tolist()):
                    root = ch.cls(token)
                    scores[root] = scores.get(root, 0.0) + score
    return scores


#: tensors are scored in row chunks of about this many entries (a bfloat16 embedding of 150k tokens would
#: otherwise be copied whole in float32)
CHUNK_ENTRIES = 1 << 24


def _axis_sums(key: str, tensor: torch.Tensor, entry: EntryScore, axes: list[int]) -> dict[int, torch.Tensor]:
    """``{axis: per-entry sum of entry(key, rows) over the other axes}`` (float64), computed over chunks of rows
    (``entry`` gets ``rows=slice`` to find matching gradients) so that no float copy of a whole big tensor is
    made."""
    t = tensor.detach().cpu()
    if t.dim() == 0:
        t = t.reshape(1)
    step = max(1, CHUNK_ENTRIES // max(1, t[0].numel()))
    firsts: list[torch.Tensor] = []
    rest: dict[int, torch.Tensor] = {}
    for start in range(0, t.shape[0], step):
        mag = entry(key, t[start:start + step], rows=slice(start, start + step))
        for axis in axes:
            dims = [d for d in range(mag.dim()) if d != axis]
            part = mag.sum(dim=dims, dtype=torch.float64) if dims else mag.double()
            if axis == 0:
                firsts.append(part)
            else:
                rest[axis] = rest[axis] + part if axis in rest else part
    return {**({0: torch.cat(firsts)} if 0 in axes else {}), **rest}


def _add_per_slot(scores: dict[int, float], ch: Channels, value: str, per_feature: torch.Tensor) -> None:
    """Add each feature's score to its channel's class (a flattened value: a block of features per channel)."""
    slots = ch.slots[value]
    if slots.blocks is not None:
        ends = torch.tensor(slots.block_sizes()).cumsum(0)
        sums = per_feature.cumsum(0)[ends - 1]
        per_feature = torch.cat([sums[:1], sums[1:] - sums[:-1]])
    for token, score in zip(slots.tokens, per_feature.tolist()):
        root = ch.cls(token)
        scores[root] = scores.get(root, 0.0) + score


def _float(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


class Criterion:
    """One importance criterion: scores of the coupling classes of a graph, and of the heads of one node."""
    name = ""
    calibrated = False

    def channels(self, graph: Graph, ch: Channels, ctx: Context) -> dict[int, float]:
        raise NotImplementedError

    def heads(self, graph: Graph, nid: str, h: int, hd: int, tensors: dict[str, int], ctx: Context) -> list[float]:
        """Score of each of the ``h`` query heads of ``nid``; ``tensors`` hold a block of ``hd`` entries per head on
        the given axis (:func:`archgraph.ops.registry.attention_heads`): the entries' scores summed per block."""
        score = [0.0] * h
        for name, axis in tensors.items():
            key = f"{nid}.{name}"
            t = self.entry(key, ctx.state[key].detach().cpu().double(), ctx)
            blocks = t.movedim(axis, 0).reshape(h, hd, -1)
            for i in range(h):
                score[i] += float(blocks[i].sum())
        return score

    def entry(self, key: str, t: torch.Tensor, ctx: Context, rows: slice = slice(None)) -> torch.Tensor:
        """A non-negative score of every entry of weight ``key`` (its tensor ``t``, or its ``rows`` only)."""
        raise NotImplementedError


class Magnitude(Criterion):
    def __init__(self, name: str, power: int):
        self.name, self.power = name, power

    def entry(self, key: str, t: torch.Tensor, ctx: Context, rows: slice = slice(None)) -> torch.Tensor:
        t = _float(t)
        return t.square() if self.power == 2 else t.abs()   # once per tensor: the big linears dominate the time

    def channels(self, graph: Graph, ch: Channels, ctx: Context) -> dict[int, float]:
        return entry_scores(graph, ctx.state, ch, partial(self.entry, ctx=ctx))


class Random(Criterion):
    name = "random"

    def channels(self, graph: Graph, ch: Channels, ctx: Context) -> dict[int, float]:
        rng = random.Random(ctx.seed)
        scores: dict[int, float] = {}
        for t in sorted(ch.producer):
            scores.setdefault(ch.cls(t), rng.random())
        return scores

    def heads(self, graph: Graph, nid: str, h: int, hd: int, tensors: dict[str, int], ctx: Context) -> list[float]:
        gen = ctx._cache.setdefault("head_rng", random.Random(ctx.seed))
        score = [0.0] * h
        for _ in tensors:
            for i in range(h):
                score[i] += gen.random()
        return score


class Taylor(Criterion):
    name = "taylor"
    calibrated = True

    def grads(self, graph: Graph, ctx: Context) -> dict[str, torch.Tensor]:
        key = ("grads", id(graph))
        if key not in ctx._cache:
            ctx._cache[key] = (graph, calibration.gradients(ctx.module(graph), ctx.calib or [], ctx.loss))
        return ctx._cache[key][1]

    def entry(self, key: str, t: torch.Tensor, ctx: Context, rows: slice = slice(None)) -> torch.Tensor:
        g = ctx._cache["current_grads"].get(key)
        t = _float(t)
        if g is None:
            return torch.zeros_like(t)
        g = g.reshape(1) if g.dim() == 0 else g
        return (t * g[rows].cpu().to(t.dtype)).abs()

    def channels(self, graph: Graph, ch: Channels, ctx: Context) -> dict[int, float]:
        ctx._cache["current_grads"] = self.grads(graph, ctx)
        return entry_scores(graph, ctx.state, ch, partial(self.entry, ctx=ctx))

    def heads(self, graph: Graph, nid: str, h: int, hd: int, tensors: dict[str, int], ctx: Context) -> list[float]:
        ctx._cache["current_grads"] = self.grads(graph, ctx)
        return super().heads(graph, nid, h, hd, tensors, ctx)


class Activation(Criterion):
    name = "activation"
    calibrated = True

    def means(self, graph: Graph, ch: Optional[Channels], ctx: Context) -> calibration.ChannelMeans:
        key = ("means", id(graph))
        if key not in ctx._cache:
            values = read_values(graph, ch) if ch is not None else []
            heads = [nid for nid, n in graph.nodes.items()
                     if OPS[n.op].coupling.heads(n, graph.input_shapes(nid)) is not None]
            means = calibration.channel_means(graph, ctx.module(graph), ctx.calib or [], values, heads)
            ctx._cache[key] = (graph, means)
        return ctx._cache[key][1]

    def channels(self, graph: Graph, ch: Channels, ctx: Context) -> dict[int, float]:
        scores: dict[int, float] = {}
        for value, per in self.means(graph, ch, ctx).values.items():
            _add_per_slot(scores, ch, value, per)
        return scores

    def heads(self, graph: Graph, nid: str, h: int, hd: int, tensors: dict[str, int], ctx: Context) -> list[float]:
        per = self.means(graph, None, ctx).heads.get(nid)
        return [0.0] * h if per is None else per.tolist()


def read_values(graph: Graph, ch: Channels) -> list[str]:
    """The values read by a layer that mixes channels (conv, linear, attention): where a channel's magnitude is
    what the next layer sees."""
    out = []
    for nid, node in graph.nodes.items():
        if ch.roles[nid] in (SOURCE, GROUPED, MIXER):
            out += [v for v in node.inputs if v in graph.nodes]
    return list(dict.fromkeys(out))


CRITERIA: dict[str, Criterion] = {c.name: c for c in (Magnitude("l2", 2), Magnitude("l1", 1), Random(), Taylor(),
                                                      Activation())}
