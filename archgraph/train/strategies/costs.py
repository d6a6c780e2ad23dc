"""Training cost: multiply-accumulates spent on forward passes during training, integrated over steps.

``train_macs`` counts, for every training step, the conv/linear MACs per sample of the network as it was trained at
that step (the active structures only, for methods that switch structures off) times the batch's samples. Backward
passes cost about twice as much again for every method, so ratios between methods are the same with or without
them; evaluation passes are not counted.

>>> cost = TrainCost()
>>> cost.add(1000, 64)
>>> cost.macs
64000.0
"""
from __future__ import annotations

from ..state import Stateful


class TrainCost(Stateful):
    """Running total of training MACs (plain floats, checkpointed through the strategy's state)."""

    STATE = ("macs",)

    def __init__(self):
        self.macs = 0.0

    def add(self, macs_per_sample: float, samples: int) -> None:
        self.macs += float(macs_per_sample) * samples

    def add_step(self, trainer, macs_per_sample: float | None = None) -> None:
        """Count the step the loop just trained: ``macs_per_sample`` (default: the current graph's MACs) times the
        batch's samples."""
        self.add(trainer.graph.macs if macs_per_sample is None else macs_per_sample, trainer.batch_samples)


class SizeLedger(Stateful):
    """Seed and peak size (parameters and MACs) of a network that grows and shrinks, for the summary's reductions.

    >>> from types import SimpleNamespace as G
    >>> sizes = SizeLedger()
    >>> sizes.start(G(params=100, macs=1000))
    >>> sizes.update(G(params=300, macs=2500)); sizes.update(G(params=150, macs=1500))
    >>> s = sizes.summary(G(params=150, macs=1500))
    >>> s["peak_params"], s["seed_macs"], s["params_reduction"], s["macs_reduction"]
    (300, 1000, 0.5, 0.4)
    """

    STATE = ("seed_params", "seed_macs", "peak_params", "peak_macs")

    def __init__(self):
        self.seed_params = self.seed_macs = self.peak_params = self.peak_macs = 0

    def start(self, graph) -> None:
        """Record the seed (also the first peak)."""
        self.seed_params = self.peak_params = graph.params
        self.seed_macs = self.peak_macs = graph.macs

    def update(self, graph) -> None:
        """Follow a rewrite: raise the peaks to ``graph``'s size."""
        self.peak_params = max(self.peak_params, graph.params)
        self.peak_macs = max(self.peak_macs, graph.macs)

    def summary(self, graph) -> dict:
        """Peak and seed sizes and the reductions of ``graph`` (the final network) against the peak."""
        return {"peak_params": self.peak_params, "peak_macs": self.peak_macs,
                "seed_params": self.seed_params, "seed_macs": self.seed_macs,
                "params_reduction": 1 - graph.params / self.peak_params if self.peak_params else 0.0,
                "macs_reduction": 1 - graph.macs / self.peak_macs if self.peak_macs else 0.0}
