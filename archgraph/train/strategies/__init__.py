"""Growth/pruning methods, one file per method: its settings model (subclassing
:class:`~archgraph.train.strategies.base.MethodConfig`, which registers it in :data:`METHODS`), its strategy and
nothing else. Importing this package registers the built-in methods; torch is imported only when a run trains
(:mod:`archgraph.train.deferred`). :func:`make_strategy` imports the strategy a settings model names.
"""
from __future__ import annotations

import importlib

from . import budget, cgap, dense, distill, gbp, gnap, gumbel, scs, staged  # noqa: F401  (importing registers each method)
from .base import METHODS, MethodConfig, Strategy


def make_strategy(settings, config=None) -> Strategy:
    """The strategy of ``settings`` (its model's ``strategy``), constructed with them and the whole run config."""
    module, _, cls = type(settings).strategy.partition(":")
    return getattr(importlib.import_module(module), cls)(settings, config)


__all__ = ["METHODS", "MethodConfig", "Strategy", "make_strategy"]
