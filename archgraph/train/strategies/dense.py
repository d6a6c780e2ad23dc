"""Dense training of the seed as it is: the baseline every method is compared against."""
from __future__ import annotations

from typing import Literal

from .base import MethodConfig, Strategy


class DenseSettings(MethodConfig):
    """Plain training of the seed: no rewrites, no masks (the baseline)."""
    name: Literal["dense"] = "dense"
    strategy = "archgraph.train.strategies.dense:DenseStrategy"



class DenseStrategy(Strategy):
    """No growth, no pruning: train the seed for the epoch budget."""

    name = "dense"
