"""The runnable examples in the rewrite modules' docstrings."""
import doctest
import importlib

import pytest

MODULES = ["archgraph.channels", "archgraph.plan", "archgraph.rules", "archgraph.rules.base", "archgraph.rules.widen",
           "archgraph.rules.prune", "archgraph.rules.deepen", "archgraph.rules.collapse", "archgraph.engine",
           "archgraph.transfer", "archgraph.prune"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch):
    from conftest import ROOT
    monkeypatch.chdir(ROOT)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
