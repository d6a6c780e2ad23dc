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


def step_samples(trainer) -> int:
    """Samples in the batch the loop just trained on (called from ``on_step_end``)."""
    es = trainer.epoch_state
    if es is None:
        return trainer.config.data.batch_size
    bs = trainer.config.data.batch_size
    b = es.batch - 1
    return int(es.perm[b * bs:(b + 1) * bs].numel())


class TrainCost:
    """Running total of training MACs (plain floats, checkpointed through the strategy's state)."""

    def __init__(self):
        self.macs = 0.0

    def add(self, macs_per_sample: float, samples: int) -> None:
        self.macs += float(macs_per_sample) * samples

    def state_dict(self) -> dict:
        return {"macs": self.macs}

    def load_state_dict(self, state: dict) -> None:
        self.macs = float(state["macs"])
