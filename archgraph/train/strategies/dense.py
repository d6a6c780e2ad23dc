"""Dense training of the seed as it is: the baseline every method is compared against."""
from __future__ import annotations

from .base import Strategy


class DenseStrategy(Strategy):
    """No growth, no pruning: train the seed for the epoch budget."""

    name = "dense"
