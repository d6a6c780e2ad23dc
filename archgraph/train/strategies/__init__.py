"""Growth/pruning methods, one module per method, all driving the same loop and rule engine.

A method's settings model (:class:`~archgraph.train.config.MethodConfig`) names its strategy as ``module:Class``;
:func:`make_strategy` imports that module only when a run uses it.
"""
from __future__ import annotations

import importlib

from ..config import METHODS
from .base import Strategy


def make_strategy(settings, config=None) -> Strategy:
    """The strategy of ``settings`` (its model's ``strategy``), constructed with them and the whole run config."""
    module, _, cls = type(settings).strategy.partition(":")
    return getattr(importlib.import_module(module), cls)(settings, config)


__all__ = ["METHODS", "Strategy", "make_strategy"]
