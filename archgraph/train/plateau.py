"""Saturation detection: a metric that has not improved for ``patience`` epochs is on a plateau.

>>> p = PlateauDetector(mode="min", patience=2)
>>> [p.update(v) for v in [1.0, 0.5, 0.6, 0.55]]
[False, False, False, True]
>>> p.best
0.5
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .state import Stateful


@dataclass
class PlateauDetector(Stateful):
    """Tracks the best value of a metric; :meth:`update` says when ``patience`` epochs in a row did not beat it by
    more than ``min_delta`` (and at least ``min_epochs`` values were seen since the last :meth:`reset`)."""

    STATE = ("best", "bad_epochs", "seen")

    mode: str = "min"           # "min" for losses, "max" for accuracies
    patience: int = 5
    min_delta: float = 0.0
    min_epochs: int = 0
    best: float = field(default=math.nan)
    bad_epochs: int = 0
    seen: int = 0

    def __post_init__(self):
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {self.mode!r}")

    def improves(self, value: float, reference: float) -> bool:
        """Whether ``value`` beats ``reference`` by more than ``min_delta``."""
        if math.isnan(reference):
            return not math.isnan(value)
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def update(self, value: float) -> bool:
        """Record one epoch's value; ``True`` when the metric is on a plateau."""
        self.seen += 1
        if self.improves(value, self.best):
            self.best = float(value)
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience and self.seen >= self.min_epochs

    def reset(self) -> None:
        """Start a new phase: forget the best value (a rewrite changed the network)."""
        self.best = math.nan
        self.bad_epochs = 0
        self.seen = 0
