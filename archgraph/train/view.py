"""What a strategy sees of the training run: :class:`RunView`, the ``trainer`` argument of every strategy hook.

A strategy reads the run through these names only (a test may pass any object that has the ones a hook uses):

========================  ==========================================================================================
``graph``, ``module``     the current version's graph and its module (the strategy may write the module's
                          parameters in place, e.g. hard masks as exact zeros, under ``torch.no_grad()``)
``device``                where the module and the strategy's tensors live
``epoch``, ``epochs``     epochs done and the run's epoch budget
``step``                  training steps done (the one just taken, in ``on_step_end``)
``progress``              epochs done, fractional (the position the learning rate was taken at)
``lr``, ``base_lr``       the learning rate of the current step (the schedule times the strategy's
                          :meth:`~archgraph.train.strategies.base.Strategy.lr_factor`) and the run's base rate
``batch_samples``         examples in the global batch of the step just taken
``metrics``               the last epoch's metrics (``{}`` before the first epoch end)
``apply(graph, rule)``    :func:`archgraph.apply` (the :class:`~archgraph.rules.base.Rewrite`), remembered until the
                          loop has applied the rules of the current event, so a rule a strategy tried is not
                          applied again when the loop applies it; the loop hands the same Rewrite to
                          :meth:`~archgraph.train.strategies.base.Strategy.on_rewrite`
``forward(x, overrides)``  the current network on ``x`` in the version's format (AMP, channels-last)
``train_inputs()``        the training inputs in order, in evaluation-sized batches, without augmentation
========================  ==========================================================================================

Random numbers come from torch's global RNG, which the loop checkpoints (a strategy drawing from it sets
``uses_global_rng``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional

import torch

from ..rules.base import Rewrite, Rule, apply

if TYPE_CHECKING:   # the loop imports this module
    from ..data.settings import DataBase
    from ..graph import Graph
    from .loop import Trainer


class RememberedRewrites:
    """The rewrites a strategy asked for during one event, so asking twice does not apply a rule twice."""

    _rewrites: dict[tuple[int, Rule], Rewrite]

    def apply(self, graph: Graph, rule: Rule) -> Rewrite:
        """``archgraph.apply(graph, rule)``, remembered for this event (the graph is immutable, so the Rewrite of
        the same rule on the same graph object is the same)."""
        key = (id(graph), rule)
        rw = self._rewrites.get(key)
        if rw is None or rw.old is not graph:
            rw = apply(graph, rule)
            self._rewrites[key] = rw
        return rw

    def forget(self) -> None:
        """Drop the remembered rewrites (the loop calls it once an event's rules are applied)."""
        self._rewrites.clear()


class RunView(RememberedRewrites):
    """The narrow view of a :class:`~archgraph.train.loop.Trainer` that strategies get (see the module docstring)."""

    def __init__(self, trainer: "Trainer"):
        self._trainer = trainer
        self._rewrites: dict[tuple[int, Rule], Rewrite] = {}

    @property
    def graph(self) -> Graph:
        return self._trainer.graph

    @property
    def module(self) -> torch.nn.Module:
        """The current module; under ``parallel: fsdp`` with its parameters gathered whole (a collective call)."""
        sharding = getattr(self._trainer, "sharding", None)
        return self._trainer.module if sharding is None else sharding.full(self._trainer.module)

    @property
    def device(self) -> torch.device:
        return self._trainer.device

    @property
    def epoch(self) -> int:
        return self._trainer.epoch

    @property
    def epochs(self) -> int:
        return self._trainer.epochs

    @property
    def step(self) -> int:
        return self._trainer.step

    @property
    def progress(self) -> float:
        return self._trainer.progress

    @property
    def lr(self) -> float:
        return self._trainer.lr

    @property
    def base_lr(self) -> float:
        return self._trainer.schedule.lr

    @property
    def batch_samples(self) -> int:
        return self._trainer.batch_samples

    @property
    def metrics(self) -> dict:
        return self._trainer.loop.last_metrics

    def forward(self, x: torch.Tensor, overrides: Optional[dict] = None) -> torch.Tensor:
        return self._trainer.forward(x, overrides or {})

    def train_inputs(self) -> Iterator[torch.Tensor]:
        t = self._trainer
        split = t.dataset.train
        data: DataBase = t.config.data
        bs = data.eval_batch_size
        index = [torch.arange(start, min(start + bs, len(split))) for start in range(0, len(split), bs)]
        for x, _ in t.dataset.batches(split, index):
            yield x
