"""Knowledge distillation: the network (the student) learns to match a frozen teacher's softened outputs.

The teacher is a graph and its weights (``method.teacher``, ``method.teacher_weights``: files relative to the run
file), built once on the run's device, in eval mode, every parameter frozen, run under ``torch.no_grad`` on the
same batch as the student. The objective of a training step is

    alpha * task_loss + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))
                      + hidden_weight * mean MSE(student hidden, teacher hidden)

(Hinton et al. 2015; :mod:`archgraph.train.teacher`), with ``T`` = ``temperature``. Hidden states are matched at
``hidden``: ``none``; ``auto``, the outputs that feed a residual add (what each block adds to the stream and the
stream's start) where the student and the teacher hold the same node id with the same output shape (a width pruned
in the student no longer agrees and is left out); or explicit ``{student_node: teacher_node}`` pairs. The pairs are
found again after every rewrite of the student. The method applies no rewrites itself: it recovers a pruned or
smaller network (``archgraph compress`` runs it between pruning rounds).

    method: {name: distill, teacher: teacher.yaml, teacher_weights: teacher.safetensors, temperature: 2.0}
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union

from pydantic import Field, PositiveFloat

from ...errors import ConfigError
from ..deferred import deferred
from .base import MethodConfig, Strategy

if TYPE_CHECKING:
    import torch

    from .. import teacher as teachers
else:   # imported when a run trains: validating a run file reads the settings without torch
    torch = deferred("torch")
    teachers = deferred("archgraph.train.teacher")


class DistillSettings(MethodConfig):
    """Knowledge distillation from a frozen teacher network (see archgraph/train/strategies/distill.py)."""
    name: Literal["distill"] = "distill"
    strategy = "archgraph.train.strategies.distill:DistillStrategy"
    files = ("teacher", "teacher_weights")
    teacher: str = Field(description="the teacher's graph file (relative to the run file)")
    teacher_weights: str = Field(description="the teacher's weights, a safetensors file with keys "
                                             "<node_id>.<param> (relative to the run file)")
    temperature: PositiveFloat = Field(2.0, description="both networks' logits are divided by this before the "
                                                        "softmax; the KL is multiplied by its square")
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.0, description="weight of the task loss: the objective is alpha * task + (1 - alpha) * T^2 * KL "
                         "(0: distillation alone)")
    hidden: Union[Literal["none", "auto"], dict[str, str]] = Field(
        "none", description="hidden states matched by mean squared error: none; auto (the nodes whose outputs feed "
                            "a residual add, where both graphs have the node id with the same output shape); or "
                            "{student_node: teacher_node} pairs (a pair whose shapes differ is left out)")
    hidden_weight: PositiveFloat = Field(1.0, description="weight of the hidden-state term (with hidden set)")


class DistillStrategy(Strategy):
    """Adds the distillation terms to each training step; no rewrites."""

    name = "distill"
    STATE = ()

    def __init__(self, settings, config=None):
        super().__init__(settings, config)
        self.teacher: Optional[teachers.Teacher] = None
        self.match: Optional[teachers.HiddenMatch] = None
        self._kl_sum: Optional[torch.Tensor] = None
        self._kl_steps = 0

    def attach(self, trainer) -> None:
        if self.teacher is None:
            self.teacher = teachers.Teacher(self.settings.teacher, self.settings.teacher_weights, device=trainer.device)
        else:
            self.teacher.to(trainer.device)
        self._check_outputs(trainer.graph)
        self._match(trainer)

    def _check_outputs(self, graph) -> None:
        assert self.teacher is not None
        mine, theirs = graph.shapes()[graph.outputs[0]], self.teacher.graph.shapes()[self.teacher.graph.outputs[0]]
        if mine != theirs:
            raise ConfigError(f"the teacher's output has shape {list(theirs)}, the network's {list(mine)}: "
                              "distillation needs the same outputs", field="method.teacher")

    def pairs(self, graph) -> list[tuple[str, str]]:
        """The (student node, teacher node) pairs whose outputs are matched on ``graph``."""
        assert self.teacher is not None
        hidden = self.settings.hidden
        if hidden == "none":
            return []
        if hidden == "auto":
            return [(n, n) for n in teachers.shared_hidden(graph, self.teacher.graph)]
        for s, t in hidden.items():
            if s not in graph.nodes:
                raise ConfigError(f"the network has no node {s!r}", field="method.hidden")
            if t not in self.teacher.graph.nodes:
                raise ConfigError(f"the teacher has no node {t!r}", field="method.hidden")
        return [(s, t) for s, t in hidden.items()]

    def _match(self, trainer) -> None:
        if self.match is not None:
            self.match.close()
            self.match = None
        pairs = self.pairs(trainer.graph)
        if pairs:
            assert self.teacher is not None
            self.match = teachers.HiddenMatch(trainer.module, self.teacher, pairs)

    def on_rewrite(self, trainer, rewrite) -> None:
        self._match(trainer)

    def task_weight(self, trainer) -> float:
        return self.settings.alpha

    def output_loss(self, trainer, inputs: Any, output: Any) -> Optional[torch.Tensor]:
        assert self.teacher is not None
        out = output[0] if isinstance(output, tuple) else output
        kl = teachers.kd_loss(out, self.teacher(inputs), self.settings.temperature)
        detached = kl.detach()
        self._kl_sum = detached if self._kl_sum is None else self._kl_sum + detached
        self._kl_steps += 1
        loss = (1.0 - self.settings.alpha) * kl
        if self.match is not None:
            hidden = self.match.loss()
            if hidden is not None:
                loss = loss + self.settings.hidden_weight * hidden
        return loss

    def metrics(self, trainer) -> dict:
        """``distill_kl``: the mean of the steps' ``T^2 * KL`` since the last epoch end."""
        if not self._kl_steps or self._kl_sum is None:
            return {}
        kl = float(self._kl_sum) / self._kl_steps
        self._kl_sum, self._kl_steps = None, 0
        return {"distill_kl": kl}

    def summary(self, trainer) -> dict:
        return {"hidden_pairs": len(self.pairs(trainer.graph))}
