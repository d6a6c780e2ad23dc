"""The examples in the history modules' docstrings run (those that need a run directory are marked +SKIP)."""
import doctest
import importlib

import pytest

MODULES = ["archgraph.history", "archgraph.history_render", "archgraph.diff", "archgraph.plots", "archgraph.report"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch):
    from conftest import ROOT
    monkeypatch.chdir(ROOT)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if name == "archgraph.diff":
        assert result.attempted > 0
