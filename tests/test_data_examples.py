"""The examples/data_*.yaml run files (one per data source) validate and run, briefly, on the data
examples/data/make_data.py writes, as docs/training.md tells users to run them."""
import sys

import pytest
from conftest import ROOT

import archgraph
from archgraph.cli import main

EXAMPLES = sorted((ROOT / "examples").glob("data_*.yaml"))
PATHS = {"data_folder": "shapes", "data_arrays": "shapes.npz", "data_tokens": "corpus"}


@pytest.fixture(scope="module")
def example_data(tmp_path_factory):
    sys.path.insert(0, str(ROOT))
    from examples.data.make_data import main as make
    out = tmp_path_factory.mktemp("example_data")
    make(str(out))
    return out


def test_every_new_source_has_an_example():
    assert {p.stem for p in EXAMPLES} == {"data_folder", "data_arrays", "data_tokens", "data_text_tokenizer",
                                          "data_python"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_data_example_runs(path, example_data, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))   # the python example's factory lives in examples/data/
    assert main(["validate", str(path)]) in (0, None)
    settings = {"schedule.epochs": 1, "data.limit": 96, "data.test_limit": 64, "data.workers": 0}
    if path.stem in PATHS:
        settings["data.path"] = str(example_data / PATHS[path.stem])
    if path.stem == "data_text_tokenizer":
        settings["data.tokenizer"] = str(example_data / "tokenizer.json")
    summary = archgraph.grow(path, tmp_path / "run", quiet=True, settings=settings)
    assert summary["epochs"] == 1
    assert ("test_ppl" in summary) == (path.stem in ("data_tokens", "data_text_tokenizer"))
