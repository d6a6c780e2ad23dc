"""The runnable examples in the training modules' docstrings."""
import doctest
import importlib

import pytest

MODULES = ["archgraph.train.config", "archgraph.train.augment", "archgraph.train.plateau", "archgraph.train.masks",
           "archgraph.train.optim", "archgraph.train.strategies.base"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch):
    from conftest import ROOT
    monkeypatch.chdir(ROOT)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
