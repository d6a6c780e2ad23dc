"""The runnable examples in the docstrings of the CGaP, SCS and GbP modules and their helpers."""
import doctest
import importlib

import pytest

MODULES = ["archgraph.train.gates", "archgraph.train.groups", "archgraph.train.strategies.costs",
           "archgraph.train.strategies.scs"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch):
    from conftest import ROOT
    monkeypatch.chdir(ROOT)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
