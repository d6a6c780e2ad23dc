"""Every growth/pruning method under ``torchrun`` (two gloo processes): the ranks stay one run.

For CGaP, SCS, GbP, Gumbel and Budget, tests/ddp_worker.py hashes each rank's weights, buffers, optimizer state,
strategy tensors and the strategy's whole state (gate logits, saliencies, its optimizers, counters) after the seed,
every epoch, every rewrite and at the end; the two ranks' traces must be equal. The data give the ranks shares of
unequal size (a last batch of 27: 14 and 13) and the seed has a dropout layer, so a method that read its random
draws from a per-rank RNG, or decided from its own share's statistics, would drift (SCS's Bernoulli gates and
Gumbel's noise draw from the global RNG, which dropout advances by the share's size).
"""
import copy
import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from method_helpers import TINY_METHODS
from test_ddp import pytestmark, torchrun, weights_hash  # noqa: F401  (pytestmark: the same skip)
from train_helpers import TINY_SEED, tiny_config, write_mnist

from archgraph.fx.weights import load_weights

#: settings that make each method rewrite within three epochs, and the kinds of rewrite they must make
METHODS = {
    "cgap": ({**TINY_METHODS["cgap"], "prune_start": 2}, {"growth", "prune"}),
    "scs": (TINY_METHODS["scs"], {"growth"}),
    "gbp": ({**TINY_METHODS["gbp"], "threshold": 0.9}, {"growth", "prune"}),
    # the per-weight mask methods rewrite only to remove the channels their masks emptied, at the end
    "gumbel": ({"name": "gumbel", "mask_lr": 0.2, "sparsity": 3.0}, {"prune"}),
    "budget": ({"name": "budget", "target": 0.05, "threshold": 1.5}, {"prune"}),
}


def seed_with_dropout() -> dict:
    """The tiny seed with 8 channels in each conv (so masks can empty some) and a dropout before the classifier."""
    seed = copy.deepcopy(TINY_SEED)
    nodes = seed["nodes"]
    nodes["c1"]["out_channels"] = nodes["c2"]["out_channels"] = 8
    nodes["drop"] = {"op": "dropout", "in": "flat", "p": 0.2}
    nodes["fc"] = {**nodes.pop("fc"), "in": "drop"}
    return seed


def traced_ranks(cfg: dict, tmp_path) -> tuple[list[list[dict]], Path]:
    """Run ``cfg`` under ``torchrun`` (two ranks, tests/ddp_worker.py tracing each rank's state); the two traces
    and the run directory."""
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(cfg))
    trace, out = tmp_path / "trace", tmp_path / "run"
    trace.mkdir()
    torchrun([str(ROOT / "tests" / "ddp_worker.py"), str(run_file), "--out", str(out), "--quiet"], tmp_path,
             DDP_TRACE_DIR=str(trace))
    return [[json.loads(line) for line in (trace / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)], out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 194 examples: 39 validation, 155 training = 4 batches of 32 and one of 27 (14 + 13 on the two ranks)
    return write_mnist(tmp_path_factory.mktemp("data"), n_train=194, n_test=40)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_keeps_ranks_identical(method, data, tmp_path):
    settings, kinds = METHODS[method]
    cfg = tiny_config(data, method="dense", epochs=3)
    cfg["seed"] = seed_with_dropout()
    cfg["method"] = dict(settings)
    ranks, out = traced_ranks(cfg, tmp_path)
    whats = [e["what"] for e in ranks[0]]
    assert whats[0] == "start" and whats[-1] == "end" and whats.count("epoch") == 3
    for a, b in zip(ranks[0], ranks[1], strict=True):
        assert a == b, f"{method}: the ranks differ after {a['what']} (version {a['version']}, step {a['step']})"
    assert all(e["world_size"] == 2 for e in ranks[0])
    assert len({e["hash"] for e in ranks[0]}) > 3   # the state changes, so equal hashes mean something

    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["method"] == method
    events = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    rewrites = [e for e in events if e["event"] == "rewrite"]
    assert {e["kind"] for e in rewrites} >= kinds
    assert [e["version"] for e in rewrites] == [e["version"] for e in ranks[0] if e["what"].startswith("rewrite")]
    saved = load_weights(out / "weights" / "final.safetensors")
    assert [e for e in ranks[1] if e["what"] == "end"][0]["weights"] == weights_hash(saved)
