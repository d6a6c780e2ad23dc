"""The CGaP, SCS and GbP example run files load, pass the run schema, name a seed whose output fits their dataset,
and their strategies set up on that seed (gates, groups) without training."""
import json
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import torch
import yaml
from conftest import ROOT

import archgraph
from archgraph.train.config import load_config, load_seed
from archgraph.train.strategies import make_strategy

EXAMPLES = sorted(p for m in ("cgap", "scs", "gbp") for p in (ROOT / "examples").glob(f"*_{m}*.yaml"))
OUTPUTS = {"digits": (10,), "mnist": (10,), "fashion_mnist": (10,), "cifar10": (10,), "cifar100": (100,),
           "svhn": (10,), "digits_scenes": (11, 32, 32), "mnist_scenes": (11, 64, 64)}


def test_every_method_has_its_examples():
    names = {p.stem for p in EXAMPLES}
    assert {f"{d}_{m}" for d in ("digits", "mnist") for m in ("cgap", "scs", "gbp")} <= names
    assert {"cifar10_scs_resnet", "cifar100_cgap_vgg"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_loads_and_its_strategy_sets_up(path: Path):
    schema = json.loads((ROOT / "schemas" / "run.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    cfg = load_config(path)
    graph = load_seed(cfg, path.parent, str(path))
    out = graph.shapes()[graph.outputs[0]]
    if cfg.data.name == "text":   # next-token scores at every position: [T, V], V at least the token input's vocab
        tokens = next(iter(graph.inputs.values()))
        assert out == (tokens[0], out[1]) and out[1] >= tokens.vocab
    else:
        assert out == OUTPUTS[cfg.data.name]
    st = make_strategy(cfg.method, cfg)
    trainer = SimpleNamespace(graph=graph, module=archgraph.build(graph), device=torch.device("cpu"), epoch=0,
                              epochs=cfg.schedule.epochs, apply=archgraph.apply)
    st.setup(trainer)
    st.attach(trainer)
    assert st.state_dict()
