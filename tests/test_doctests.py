"""The runnable examples in the modules' docstrings."""
import doctest
import importlib

import pytest

MODULES = [
    # rewriting
    "archgraph.channels", "archgraph.plan", "archgraph.rules", "archgraph.rules.base", "archgraph.rules.widen",
    "archgraph.rules.prune", "archgraph.rules.deepen", "archgraph.rules.collapse", "archgraph.fx.materialise",
    "archgraph.fx.apply_plan", "archgraph.fx.magnitude",
    # import
    "archgraph.interop.importer", "archgraph.interop.importer.converter", "archgraph.interop.importer.builder",
    "archgraph.interop.importer.handlers.norms", "archgraph.interop.importer.handlers.timm_layers",
    "archgraph.interop.importer.handlers.split_attention",
    # training
    "archgraph.train.config", "archgraph.data.augment", "archgraph.train.plateau", "archgraph.train.masks",
    "archgraph.train.optim", "archgraph.train.strategies.base", "archgraph.train.state", "archgraph.train.deferred",
    # CGaP, SCS, GbP and their helpers
    "archgraph.train.gates", "archgraph.train.groups", "archgraph.train.strategies.costs",
    "archgraph.train.strategies.scs",
    # per-weight masks (Gumbel, Budget)
    "archgraph.train.unstructured", "archgraph.train.strategies.gumbel", "archgraph.train.strategies.budget",
    # language modelling and segmentation
    "archgraph.data.text", "archgraph.data.scenes", "archgraph.train.tasks", "archgraph.train.console",
    # data sources
    "archgraph.data", "archgraph.data.registry", "archgraph.data.settings", "archgraph.data.builtin",
    "archgraph.data.folder", "archgraph.data.arrays", "archgraph.data.tokens", "archgraph.data.feed",
    # history
    "archgraph.history.run", "archgraph.history.timeline", "archgraph.history.diff", "archgraph.history.plots",
    "archgraph.history.report",
]
# modules whose examples all need a run directory (marked +SKIP): they must import and fail nothing
ALL_SKIPPED = {"archgraph.history.timeline", "archgraph.history.plots", "archgraph.history.report"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch):
    from conftest import ROOT
    monkeypatch.chdir(ROOT)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0 or name in ALL_SKIPPED
