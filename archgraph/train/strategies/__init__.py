"""Growth/pruning methods, one module per method, all driving the same loop and rule engine.

``STRATEGIES`` maps a method name (``method.name`` in the run file) to ``module:Class``; modules are imported only
when used.
"""
from __future__ import annotations

import importlib

from ... import plugins as _plugins
from .base import RULE_KIND, Strategy

STRATEGIES = {
    "dense": "archgraph.train.strategies.dense:DenseStrategy",
    "gnap": "archgraph.train.strategies.gnap:GnapStrategy",
    "cgap": "archgraph.train.strategies.cgap:CgapStrategy",
    "scs": "archgraph.train.strategies.scs:ScsStrategy",
    "gbp": "archgraph.train.strategies.gbp:GbpStrategy",
    "gumbel": "archgraph.train.strategies.gumbel:GumbelStrategy",
    "budget": "archgraph.train.strategies.budget:BudgetStrategy",
    "staged": "archgraph.train.strategies.staged:StagedStrategy",
}


def make_strategy(settings, config=None) -> Strategy:
    """The strategy for ``settings.name``, constructed with its settings and the whole run config."""
    # a method of another package (archgraph.methods) names its strategy in its settings (archgraph.plugins)
    module, _, cls = (STRATEGIES.get(settings.name) or _plugins.method_target(settings.name) or "").partition(":")
    return getattr(importlib.import_module(module), cls)(settings, config)


__all__ = ["RULE_KIND", "STRATEGIES", "Strategy", "make_strategy"]
