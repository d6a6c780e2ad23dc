"""Calibration: what a built graph does on a few real batches, for the calibrated pruning criteria and depth pruning.

A calibration batch is what a data loader yields: a tensor of inputs, or ``(inputs, targets)`` (``inputs`` a tensor,
or a tuple of tensors for a graph with several inputs). Everything here runs the module on such batches and returns
plain per-channel statistics keyed by graph value (node id or graph input):

- :func:`channel_means`: the mean ``|x|`` of every channel of the values asked for (over the batch, the spatial
  positions or the sequence positions), and of every attention head's output (the input of its ``o_proj``);
- :func:`gradients`: the gradient of the task loss with respect to every parameter, summed over the batches;
- :func:`value_pairs`: two values of every batch side by side, for block influence (``1 - cos``).

>>> import archgraph, torch
>>> g = archgraph.load("examples/seeds/tiny_cnn.yaml")
>>> m = archgraph.build(g)
>>> stats = channel_means(g, m, [torch.randn(4, *g.inputs["image"])], ["c1"])
>>> tuple(stats.values["c1"].shape)
(4,)
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence, cast

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..errors import ConfigError
from ..graph import Graph
from ..ops.registry import OPS, channel_axis

Batch = Any


def split_batch(batch: Batch) -> tuple[tuple[torch.Tensor, ...], Optional[torch.Tensor]]:
    """``(inputs, targets)`` of one calibration batch: a tensor is inputs without targets; a pair is
    ``(inputs, targets)``; inputs may be a tuple of tensors (one per graph input)."""
    if isinstance(batch, torch.Tensor):
        return (batch,), None
    if isinstance(batch, (tuple, list)) and batch:
        x = batch[0]
        y = batch[1] if len(batch) > 1 else None
        xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        if all(isinstance(t, torch.Tensor) for t in xs):
            return xs, y
    raise ConfigError("a calibration batch must be a tensor of inputs or a pair (inputs, targets) of tensors, "
                      f"not {type(batch).__name__}", field="calib")


def batches_list(calib: Optional[Iterable[Batch]], what: str) -> list[Batch]:
    """The calibration batches as a list (an iterator is read once); an error naming ``what`` when there are none."""
    batches = list(calib) if calib is not None else []
    if not batches:
        raise ConfigError(f"{what} needs calibration batches (Python: calib=an iterable of batches; "
                          "CLI: --calib RUN.yaml)", field="calib")
    return batches


def fx_name(graph: Graph, value: str) -> str:
    """The fx node computing ``value``: an op built as a pass-through (identity) is its input's node."""
    while value in graph.nodes and OPS[graph.nodes[value].op].build.passthrough:
        value = graph.nodes[value].inputs[0]
    return value


class _Recorder(fx.Interpreter):
    """Runs a GraphModule node by node, handing the values it was asked for to ``seen(value, tensor)``."""

    def __init__(self, module: fx.GraphModule, watch: dict[str, list[str]], seen: Callable[[str, Any], None]):
        super().__init__(module)
        self.watch, self.seen = watch, seen

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        for value in self.watch.get(n.name, ()):
            self.seen(value, out)
        return out


def run_watching(graph: Graph, module: torch.nn.Module, inputs: Sequence[torch.Tensor], values: Iterable[str],
                 seen: Callable[[str, torch.Tensor], None]) -> Any:
    """Run ``module`` on ``inputs``, calling ``seen(value, tensor)`` for each of ``values`` (graph values)."""
    watch: dict[str, list[str]] = {}
    for v in values:
        watch.setdefault(fx_name(graph, v), []).append(v)
    return _Recorder(cast(fx.GraphModule, module), watch, seen).run(*inputs)


def per_channel_abs_mean(graph: Graph, value: str, t: torch.Tensor) -> torch.Tensor:
    """Sum over the batch and positions of ``|t|`` per channel (float64), on the value's channel axis."""
    shape = graph.shapes()[value]
    axis = channel_axis(shape) + 1   # the batch axis first
    dims = [d for d in range(t.dim()) if d != axis]
    return t.detach().abs().sum(dim=dims, dtype=torch.float64)


@dataclass
class ChannelMeans:
    """Mean ``|x|`` per channel of each watched value, and per head of each attention node (its heads' outputs,
    the ``o_proj`` input, summed over each head's ``head_dim`` channels)."""
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    heads: dict[str, torch.Tensor] = field(default_factory=dict)


def _positions(graph: Graph, value: str, t: torch.Tensor) -> int:
    """Elements averaged per channel of ``t``: the batch times the positions."""
    return t.numel() // max(1, t.shape[channel_axis(graph.shapes()[value]) + 1])


def channel_means(graph: Graph, module: torch.nn.Module, batches: Iterable[Batch], values: Iterable[str],
                  heads: Iterable[str] = ()) -> ChannelMeans:
    """Mean ``|x|`` of every channel of ``values`` (and of each head of the attention nodes ``heads``) over the
    calibration ``batches``, the module in eval mode without gradients."""
    values = [v for v in dict.fromkeys(values) if v in graph.nodes or v in graph.inputs]
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def seen(value: str, t: torch.Tensor) -> None:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            return
        s = per_channel_abs_mean(graph, value, t)
        sums[value] = sums[value] + s if value in sums else s
        counts[value] = counts.get(value, 0) + _positions(graph, value, t)

    hooks: list = []
    head_sums: dict[str, Any] = {}
    for nid in heads:
        o_proj = getattr(module.get_submodule(nid), "o_proj", None)
        if o_proj is None:
            continue
        found = OPS[graph.nodes[nid].op].coupling.heads(graph.nodes[nid], graph.input_shapes(nid))
        if found is None:
            continue
        h, hd, _ = found

        def pre(_mod: torch.nn.Module, args: tuple[torch.Tensor, ...], nid: str = nid, h: int = h,
                hd: int = hd) -> None:
            y = args[0].detach().abs().double()
            per = y.reshape(-1, h, hd).sum(dim=(0, 2)) / (y.numel() // (h * hd))
            head_sums[nid] = head_sums.get(nid, 0) + per
        hooks.append(o_proj.register_forward_pre_hook(pre))
    was_training = module.training
    module.eval()
    n = 0
    try:
        with torch.no_grad():
            for batch in batches:
                inputs, _ = split_batch(batch)
                run_watching(graph, module, inputs, values, seen)
                n += 1
    finally:
        for hook in hooks:
            hook.remove()
        module.train(was_training)
    out = ChannelMeans()
    for v, s in sums.items():
        out.values[v] = s / max(1, counts[v])
    for nid, s in head_sums.items():
        out.heads[nid] = s / max(1, n)
    return out


def task_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross entropy of scores against targets, by their shapes: ``[B, K]`` / ``[B]`` classes, ``[B, T, V]`` /
    ``[B, T]`` next tokens, ``[B, K, H, W]`` / ``[B, H, W]`` pixels."""
    if out.dim() == 3 and y.dim() == 2:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return F.cross_entropy(out, y)


def gradients(module: torch.nn.Module, batches: Iterable[Batch],
              loss: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None) -> dict[str, torch.Tensor]:
    """``name -> gradient`` of the loss (default: :func:`task_loss`) for every parameter of a copy of ``module``
    (eval mode: dropout off, batchnorm statistics unchanged), summed over the ``batches``."""
    loss = loss or task_loss
    model = copy.deepcopy(module).float().eval()
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(True)
    for batch in batches:
        inputs, y = split_batch(batch)
        if y is None:
            raise ConfigError("the taylor criterion needs calibration batches with targets: (inputs, targets)",
                              field="calib")
        out = model(*inputs)
        loss(out[0] if isinstance(out, tuple) else out, y).backward()
    return {name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach()
            for name, p in model.named_parameters()}


def value_pairs(graph: Graph, module: torch.nn.Module, batches: Iterable[Batch],
                pairs: Sequence[tuple[str, str]], each: Callable[[int, torch.Tensor, torch.Tensor], None]) -> None:
    """For every batch, call ``each(i, a, b)`` with the tensors of values ``pairs[i] = (a, b)`` (eval mode, no
    gradients)."""
    was_training = module.training
    module.eval()
    wanted = {v for pair in pairs for v in pair}
    try:
        with torch.no_grad():
            for batch in batches:
                got: dict[str, torch.Tensor] = {}
                run_watching(graph, module, split_batch(batch)[0], wanted, got.__setitem__)
                for i, (a, b) in enumerate(pairs):
                    each(i, got[a], got[b])
    finally:
        module.train(was_training)
