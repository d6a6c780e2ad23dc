"""GradMax (Evci et al., 2022, "GradMax: Growing Neural Networks using Gradient Information"): the outgoing weights
of new units, chosen from the gradient on a batch.

``add_filters init=gradmax`` gives the new units zero incoming weights (so the function is unchanged) and zero
outgoing weights in its plan. With zero fan-in, the gradient of the loss with respect to a new unit's incoming
weights is linear in its outgoing weights ``v``: ``A v``. GradMax picks the ``v`` that make that gradient largest
under a norm bound: the top right singular vectors of ``A``, i.e. the top eigenvectors of ``A^T A`` (for a linear
reader after the new units, the top left singular vectors of the gradient correlation ``sum_b g_b h_b^T`` of the
paper). They are found here by orthogonal iteration, each step one forward pass and a double backward on the batch
(so any readers and any layers in between are handled alike), and scaled to the mean norm of the existing units'
outgoing weights. The first gradient step then moves the new incoming weights as far as any fan-out of that norm
can.

The gradient is what PyTorch computes: a new unit behind a ReLU sees ``relu'(0) = 0`` and gets no gradient
whatever its fan-out (then the fan-out stays zero, as with ``init=zero``, and a warning says so); activations with
a non-zero slope at 0 (tanh, GELU, SiLU, leaky ReLU, none) let it learn.

>>> import archgraph, torch
>>> from archgraph import rules
>>> g = archgraph.loads('''
... archgraph: 1
... inputs: {x: [6]}
... nodes:
...   fc1: {op: linear, in: x, out_features: 4}
...   act: {op: tanh, in: fc1}
...   fc2: {op: linear, in: act, out_features: 3}
... outputs: [fc2]
... ''')
>>> batch = (torch.randn(32, 6), torch.randint(0, 3, (32,)))
>>> g2, m2 = archgraph.rewrite(g, archgraph.build(g), rules.AddFilters(node="fc1", count=2, init="gradmax"),
...                            batch=batch)
>>> bool(m2.fc1.weight[4:].abs().sum() == 0), bool(m2.fc2.weight[:, 4:].abs().sum() > 0)
(True, True)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from ..errors import RuleError
from ..ops.registry import OPS

#: the number of orthogonal-iteration steps (each one forward and a double backward on the batch)
ITERATIONS = 20


def uses_gradmax(rule: Any) -> bool:
    """Whether ``rule`` wants GradMax's outgoing weights (``add_filters init=gradmax``)."""
    return getattr(rule, "init", None) == "gradmax"


@dataclass(frozen=True)
class _Slice:
    """The entries of one tensor that belong to the new units: positions ``positions`` along ``axis``, unit ``j``
    owning ``positions[j * block:(j + 1) * block]`` (a block of ``H*W`` columns for a linear after a flatten)."""

    name: str
    axis: int
    positions: tuple[int, ...]
    block: int


def _slices(rw, count: int) -> tuple[list[_Slice], list[_Slice]]:
    """The new units' incoming weights (rows of the widened weighted layers) and outgoing weights (columns of the
    weighted layers that read them)."""
    graph = rw.graph
    fan_in: list[_Slice] = []
    fan_out: list[_Slice] = []
    for key, tensor in rw.plan.tensors.items():
        nid, _, param = key.partition(".")
        node = graph.nodes.get(nid)
        if node is None or param != "weight" or not OPS[node.op].traits.weighted:
            continue
        out_axis, in_axis = OPS[node.op].coupling.layout(node, graph.input_shapes(nid))[param]
        for axis, side in ((out_axis, fan_in), (in_axis, fan_out)):
            if axis is None or not tensor.fresh(axis):
                continue
            new = tensor.fresh(axis)
            if len(new) % count:
                raise RuleError(f"GradMax cannot tell the {count} new units apart in '{key}' ({len(new)} new "
                                "entries)", rule="add_filters", node=nid)
            side.append(_Slice(key, axis, new, len(new) // count))
    return fan_in, fan_out


def _with(base: torch.Tensor, s: _Slice, values: torch.Tensor) -> torch.Tensor:
    """``base`` with ``values`` at the slice's positions (differentiable in ``values``)."""
    index = torch.tensor(s.positions, device=base.device)
    return base.detach().index_copy(s.axis, index, values)


def _take(t: torch.Tensor, s: _Slice) -> torch.Tensor:
    return t.index_select(s.axis, torch.tensor(s.positions, device=t.device))


def _units(values: list[torch.Tensor], slices: list[_Slice], count: int) -> torch.Tensor:
    """``[count, R]``: each new unit's entries of every slice, one row per unit."""
    rows = []
    for v, s in zip(values, slices):
        moved = v.movedim(s.axis, 0)
        rows.append(moved.reshape(count, s.block, *moved.shape[1:]).reshape(count, -1))
    return torch.cat(rows, dim=1)


def _split(matrix: torch.Tensor, shapes: list[torch.Size], slices: list[_Slice], count: int) -> list[torch.Tensor]:
    """The inverse of :func:`_units`: one tensor of slice shape per slice."""
    out, start = [], 0
    for shape, s in zip(shapes, slices):
        moved = torch.Size([shape[s.axis], *[n for i, n in enumerate(shape) if i != s.axis]])
        width = moved.numel() // count
        part = matrix[:, start:start + width].reshape(moved)
        out.append(part.movedim(0, s.axis))
        start += width
    return out


def gradmax(rw, module: torch.nn.Module, batch, loss: Optional[Callable] = None, seed: int = 0) -> float:
    """Set the outgoing weights of the new units of ``rw`` (an ``add_filters init=gradmax`` rewrite) in ``module``
    (built for ``rw.graph``, weights carried) from the gradient on ``batch``: ``(inputs, targets)``, ``inputs`` a
    tensor (or a tuple of tensors, one per graph input, or a dict by input id). ``loss(output, targets)`` defaults
    to cross-entropy. Returns the norm of the new units' incoming-weight gradient the chosen weights give (0 when
    no fan-out can make one). The module's buffers (batchnorm statistics) and the global RNG are left as they
    were."""
    count = int(rw.rule.count)
    fan_in, fan_out = _slices(rw, count)
    if not fan_in or not fan_out:
        return 0.0
    loss = loss or torch.nn.functional.cross_entropy
    inputs, targets = batch
    params = dict(module.named_parameters())
    param = {s.name: params[s.name] for s in (*fan_in, *fan_out)}
    out_shapes = [_take(param[s.name], s).shape for s in fan_out]
    in_values = [torch.zeros_like(_take(param[s.name], s)) for s in fan_in]
    buffers = {k: b.detach().clone() for k, b in module.named_buffers()}

    def gradient_of(units: torch.Tensor, create_graph: bool):
        v = _split(units, out_shapes, fan_out, count)
        u = [x.clone().requires_grad_(True) for x in in_values]
        overrides = {s.name: _with(param[s.name], s, x) for s, x in zip(fan_in, u)}
        overrides.update({s.name: _with(param[s.name], s, x) for s, x in zip(fan_out, v)})
        out = torch.func.functional_call(module, overrides, _args(inputs), _kwargs(inputs), strict=False)
        value = loss(out, targets)
        return torch.autograd.grad(value, u, create_graph=create_graph)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        first = next(iter(param.values()))
        width = sum(shape.numel() for shape in out_shapes) // count
        units = _orthonormal_rows(torch.randn(count, width, dtype=first.dtype, device=first.device), count)
        try:
            for _ in range(ITERATIONS):
                # sum_j |A v_j|^2 / 2 has gradient A^T A v_j with respect to unit j's fan-out v_j
                v = units.detach().requires_grad_(True)
                grads = gradient_of(v, create_graph=True)
                objective = sum(g.pow(2).sum() for g in grads) / 2
                if not objective.requires_grad or float(objective.detach()) == 0.0:
                    units = torch.zeros_like(units)
                    break
                step = torch.autograd.grad(objective, v)[0]
                units = _orthonormal_rows(step, count)
            units = units.detach() * _existing_norm(param, fan_out, count)
            achieved = float(torch.sqrt(sum(g.detach().pow(2).sum() for g in gradient_of(units, False))))
        finally:
            with torch.no_grad():
                for k, b in module.named_buffers():
                    b.copy_(buffers[k])
    with torch.no_grad():
        for s, values in zip(fan_out, _split(units, out_shapes, fan_out, count)):
            param[s.name].index_copy_(s.axis, torch.tensor(s.positions, device=values.device), values)
    if achieved == 0.0:
        warnings.warn("gradmax: the new units' incoming weights get no gradient whatever their outgoing weights "
                      "(a ReLU after them has slope 0 at 0 in PyTorch): their outgoing weights stay zero",
                      stacklevel=2)
    return achieved


def _orthonormal_rows(step: torch.Tensor, count: int) -> torch.Tensor:
    """The rows of ``step`` made orthonormal (orthogonal iteration); more units than directions get zero rows."""
    q = torch.linalg.qr(step.detach().T)[0].T
    if q.shape[0] < count:
        q = torch.cat([q, torch.zeros(count - q.shape[0], q.shape[1], dtype=q.dtype, device=q.device)])
    return q


def _existing_norm(param: dict, fan_out: list[_Slice], count: int) -> float:
    """The mean norm of the old units' outgoing weights (every reader's entries of one unit together); 1 when
    there are none."""
    total, units = 0.0, 0
    for s in fan_out:
        w = param[s.name].detach().movedim(s.axis, 0)
        old = [i for i in range(w.shape[0]) if i not in set(s.positions)]
        if not old:
            continue
        kept = w[old].reshape(len(old) // s.block, -1)
        total += float(kept.pow(2).sum())
        units = max(units, kept.shape[0])
    return (total / units) ** 0.5 if units and total > 0 else 1.0


def _args(inputs) -> tuple:
    if isinstance(inputs, dict):
        return ()
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _kwargs(inputs) -> dict:
    return dict(inputs) if isinstance(inputs, dict) else {}
