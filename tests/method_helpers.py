"""Tiny runs of the CGaP, SCS and GbP strategies and the checks every finished run directory must pass."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from train_helpers import events, tiny_config

import archgraph
from archgraph.fx.weights import load_weights
from archgraph.graph import content_hash
from archgraph.shapes import count_nonzero_params

#: settings that make each method grow and prune within a few epochs of the tiny seed
TINY_METHODS = {
    "cgap": {"name": "cgap", "grow_epochs": 2, "grow_every": 1, "growth_rate": 1.0, "prune_start": 3,
             "prune_every": 1, "prune_rate": 0.3, "target_ratio": 0.4, "min_width": 1},
    "scs": {"name": "scs", "s_init": 1.0, "beta_final": 50.0, "gate_lr": 0.5, "penalty": 5.0, "grow_every": 1,
            "grow_until": 0.5, "grow_threshold": 0.5, "growth_factor": 2.0, "max_growths": 1, "min_width": 1,
            "close_below": 0.2},
    "gbp": {"name": "gbp", "expand_after": 1, "expand_factor": 2.0, "penalty": 5.0, "anneal_start": 0,
            "anneal_epochs": 3, "threshold": 0.6, "max_prune_fraction": 0.5, "min_width": 1},
}


def stub_trainer(graph, epoch: int = 0, epochs: int = 10, batch_size: int = 8, seed: int = 0):
    """What the CGaP, SCS and GbP strategies read from the trainer (:class:`archgraph.train.view.RunView`), without
    a run (``graph`` built with ``seed``)."""
    return SimpleNamespace(graph=graph, module=archgraph.build(graph, seed=seed).train(), device=torch.device("cpu"),
                           epoch=epoch, epochs=epochs, batch_samples=batch_size, apply=archgraph.apply)


def attached(strategy, trainer):
    """``(strategy, trainer)`` with ``strategy`` set up and attached as at the start of a run."""
    strategy.setup(trainer)
    strategy.attach(trainer)
    return strategy, trainer


def method_config(root, method: str, epochs: int = 6, **settings) -> dict:
    """A run of a few seconds: the tiny seed on 300 generated MNIST images."""
    cfg = tiny_config(root, method="dense", epochs=epochs)
    cfg["method"] = {**TINY_METHODS[method], **settings}
    return cfg


def check_run(run, summary: dict, test_x=None, test_y=None) -> list[dict]:
    """A finished run is consistent: every version is its parent with the logged rule applied, the counts match,
    the saved weights hold exactly the non-zero parameters the summary reports and rebuild a network of the
    reported accuracy. Returns the events."""
    log = events(run)
    assert log[0]["event"] == "start" and log[-1] == {"event": "end", "summary": summary}
    versions = sorted((run / "versions").glob("*.yaml"))
    graphs = [archgraph.load(p) for p in versions]
    assert len(graphs) == summary["versions"]
    rewrites = [e for e in log if e["event"] == "rewrite"]
    for e in rewrites:
        rule = archgraph.rules.parse(e["rule"], e["args"])
        assert archgraph.apply(graphs[e["parent"]], rule).graph == graphs[e["version"]]
        assert e["hash"] == content_hash(graphs[e["version"]])
    assert sum(e["kind"] == "growth" for e in rewrites) == summary["growth_events"]
    assert sum(e["kind"] == "prune" for e in rewrites) == summary["prune_events"]
    final = graphs[-1]
    weights = load_weights(run / "weights" / "final.safetensors")
    assert count_nonzero_params(final, weights) == summary["nonzero_params"]
    assert summary["params"] == final.params and summary["macs"] == final.macs
    if test_x is not None:
        module = archgraph.build(final)
        module.load_state_dict(weights)
        module.eval()
        with torch.no_grad():
            acc = (module(test_x).argmax(1) == test_y).float().mean().item()
        assert acc == pytest.approx(summary["test_acc"])
    return log


def held_out(root):
    """The generated test images as the run sees them."""
    from archgraph.data.feed import load_data as load_dataset
    from archgraph.train.config import DataConfig
    ds = load_dataset(DataConfig(name="mnist", root=str(root), val_fraction=0.2))
    return ds.batch(ds.test, torch.arange(len(ds.test)))
