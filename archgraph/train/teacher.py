"""Knowledge distillation's pieces: a frozen teacher network, the softened-logit KL and hidden-state matching.

The teacher is a graph and its weights, built once, kept in eval mode with every parameter frozen, and run under
``torch.no_grad``. The student learns from ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` over the class
axis of every position (Hinton et al. 2015; the ``T^2`` keeps the gradients' scale as ``T`` changes), averaged over
the batch and positions, optionally mixed with the task loss (``alpha``) and plus the mean squared difference of
hidden states the two networks share (the same node id with the same output shape; a pruned width no longer
agrees and is left out).

>>> import archgraph, torch
>>> g = archgraph.load("examples/seeds/tiny_cnn.yaml")
>>> teacher = Teacher(g, archgraph.build(g, seed=1).state_dict())
>>> student = archgraph.build(g, seed=2)
>>> x = torch.randn(4, 1, 28, 28)
>>> float(kd_loss(student(x), teacher(x), temperature=2.0)) > 0
True
"""
from __future__ import annotations

import os
from typing import Iterable, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..format.yaml_io import load
from ..fx.builder import build
from ..fx.weights import check_weights, load_weights
from ..graph import Graph
from ..ops.registry import OPS
from ..topology import users_of


def class_axis(out: torch.Tensor) -> int:
    """The class axis of scores: the last of a language model's ``[B, T, V]``, else 1 (``[B, K]``,
    ``[B, K, H, W]``)."""
    return -1 if out.dim() == 3 else 1


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` over the class axis, averaged over the batch and
    every position."""
    axis = class_axis(student)
    s = F.log_softmax(student.float() / temperature, dim=axis)
    t = F.log_softmax(teacher.float() / temperature, dim=axis)
    kl = (t.exp() * (t - s)).sum(dim=axis)
    return kl.mean() * temperature * temperature


def _frozen_module(graph: Graph, weights: Mapping[str, torch.Tensor], device=None) -> torch.nn.Module:
    module = build(graph)
    state = dict(weights)
    check_weights(module, state, "teacher_weights")
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    module = module.to(device) if device is not None else module
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class Teacher:
    """A frozen network: built from ``graph`` with ``weights`` (a state dict or a safetensors file), eval mode,
    no gradients. Calling it runs the forward pass under ``torch.no_grad``; :attr:`hidden` holds the outputs of
    the nodes it was asked to watch (:meth:`watch`) in its last call."""

    def __init__(self, graph: Union[Graph, str, os.PathLike], weights, device=None):
        self.graph = graph if isinstance(graph, Graph) else load(graph)
        state = load_weights(weights) if isinstance(weights, (str, os.PathLike)) else dict(weights)
        self.module = _frozen_module(self.graph, state, device)
        self.hidden: dict[str, torch.Tensor] = {}
        self._hooks: list = []

    def to(self, device) -> "Teacher":
        self.module.to(device)
        return self

    def watch(self, nodes: Iterable[str]) -> None:
        """Keep the outputs of these nodes (submodules) in :attr:`hidden` at every call."""
        for h in self._hooks:
            h.remove()
        self._hooks = [_capture(self.module, nid, self.hidden) for nid in nodes]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        self.module.eval()   # a caller's .train() on a parent never reaches here, but be sure
        with torch.no_grad():
            out = self.module(*inputs)
        return out[0] if isinstance(out, tuple) else out


def _capture(module: torch.nn.Module, nid: str, into: dict):
    def hook(_mod, _args, out):
        into[nid] = out[0] if isinstance(out, tuple) else out
    return module.get_submodule(nid).register_forward_hook(hook)


def shared_hidden(student: Graph, teacher: Graph, nodes: Optional[Sequence[str]] = None) -> list[str]:
    """The nodes whose outputs are matched: ``nodes`` (default: the module inputs of residual adds, i.e. what each
    block adds to the stream and the stream's start) that both graphs hold as modules with the same output shape."""
    s_shapes, t_shapes = student.shapes(), teacher.shapes()
    if nodes is None:
        users = users_of(student)
        nodes = [nid for nid in student.nodes
                 if any(OPS[student.nodes[u].op].rewrite.residual for u in users.get(nid, ()))]
    out = []
    for nid in nodes:
        if nid not in student.nodes or nid not in teacher.nodes:
            continue
        if OPS[student.nodes[nid].op].build.module is None or OPS[teacher.nodes[nid].op].build.module is None:
            continue
        if s_shapes[nid] == t_shapes[nid]:
            out.append(nid)
    return out


class HiddenMatch:
    """Mean squared difference of the student's and the teacher's outputs at ``nodes`` (hooks on both modules;
    :meth:`loss` after a forward pass of each). A node is an id both networks hold, or a ``(student_node,
    teacher_node)`` pair; a pair whose outputs differ in shape is left out of the loss."""

    def __init__(self, student: torch.nn.Module, teacher: Teacher, nodes: Sequence[Union[str, tuple[str, str]]]):
        self.pairs = [(n, n) if isinstance(n, str) else (n[0], n[1]) for n in nodes]
        self.nodes = [s for s, _ in self.pairs]
        self.student: dict[str, torch.Tensor] = {}
        self._hooks = [_capture(student, s, self.student) for s in dict.fromkeys(self.nodes)]
        teacher.watch(dict.fromkeys(t for _, t in self.pairs))
        self.teacher = teacher

    def loss(self) -> Optional[torch.Tensor]:
        terms = [F.mse_loss(self.student[s].float(), self.teacher.hidden[t].float())
                 for s, t in self.pairs if s in self.student and t in self.teacher.hidden
                 and self.student[s].shape == self.teacher.hidden[t].shape]
        self.student.clear()
        return torch.stack(terms).mean() if terms else None

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self.teacher.watch([])


def distill_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, task_loss: Optional[torch.Tensor] = None, *,
                 temperature: float = 1.0, alpha: float = 0.0, hidden: Optional[torch.Tensor] = None,
                 hidden_weight: float = 0.0) -> torch.Tensor:
    """``(1 - alpha) * kd_loss + alpha * task_loss + hidden_weight * hidden``."""
    loss = kd_loss(student_out, teacher_out, temperature)
    if alpha > 0 and task_loss is not None:
        loss = (1.0 - alpha) * loss + alpha * task_loss
    if hidden is not None and hidden_weight > 0:
        loss = loss + hidden_weight * hidden
    return loss
