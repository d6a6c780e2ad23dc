"""Shared pieces of the Gumbel and Budget tests: a stand-in for the trainer and tiny runs on generated MNIST."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from conftest import ROOT
from train_helpers import events, tiny_config

import archgraph
from archgraph.fx.weights import load_weights
from archgraph.shapes import count_nonzero_params

DIGITS = ROOT / "examples" / "seeds" / "digits_cnn.yaml"


def stub_trainer(graph, module, progress: float = 0.0, epochs: int = 10, lr: float = 0.01):
    """What the strategies read from the trainer (:class:`archgraph.train.view.RunView`), without a run."""
    return SimpleNamespace(graph=graph, module=module, progress=progress, epoch=int(progress), epochs=epochs,
                           device=torch.device("cpu"), lr=lr, base_lr=lr, apply=archgraph.apply)


def attached(strategy, progress: float = 0.0, epochs: int = 10, seed: int = 0):
    """``(strategy, trainer)``: ``strategy`` set up and attached on the digits seed built with ``seed``, with a
    stand-in trainer."""
    g = archgraph.load(DIGITS)
    t = stub_trainer(g, archgraph.build(g, seed=seed), progress, epochs)
    strategy.setup(t)
    strategy.attach(t)
    return strategy, t


def batch(seed: int = 0, n: int = 32):
    x = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    return x, torch.arange(n) % 10


def method_config(root, settings: dict, epochs: int = 5, widths: tuple[int, int] = (8, 16)) -> dict:
    """The tiny run with ``settings`` as its method, from the tiny seed widened to ``widths`` channels (there is
    more to prune and, for a subnetwork of random weights, something to find)."""
    cfg = tiny_config(root, method="dense", epochs=epochs)
    cfg["method"] = settings
    cfg["seed"]["nodes"]["c1"]["out_channels"], cfg["seed"]["nodes"]["c2"]["out_channels"] = widths
    return cfg


def check_run(run, summary, seed_params: int):
    """The run directory of a pruning run: honest counts of the saved weights, fewer non-zero parameters than the
    dense seed, every version the previous one with the logged rule applied."""
    log = events(run)
    assert log[0]["event"] == "start" and log[-1] == {"event": "end", "summary": summary}
    graphs = [archgraph.load(p) for p in sorted((run / "versions").glob("*.yaml"))]
    assert len(graphs) == summary["versions"] and graphs[0].params == seed_params
    for e in (e for e in log if e["event"] == "rewrite"):
        assert e["kind"] == "prune" and e["rule"] == "prune_channels"
        rule = archgraph.rules.parse(e["rule"], e["args"])
        assert archgraph.apply(graphs[e["parent"]], rule).graph == graphs[e["version"]]
    weights = load_weights(run / "weights" / "final.safetensors")
    assert count_nonzero_params(graphs[-1], weights) == summary["nonzero_params"] < seed_params
    assert summary["params"] == graphs[-1].params and summary["macs"] == graphs[-1].macs
    epochs = [e for e in log if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, summary["epochs"] + 1))
    return log, graphs, weights
