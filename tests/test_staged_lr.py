"""The staged method's learning rate that follows the growth: the seed's factor, each stage's, and its warm-up."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from transformer_helpers import gpt_graph

import archgraph
from archgraph.train.strategies.staged import StagedSettings, StagedStrategy

WIDEN = [{"rule": "add_filters", "args": {"node": "b0_fc", "count": 2}}]


def strategy(**settings) -> StagedStrategy:
    return StagedStrategy(StagedSettings(**settings))


def test_the_factor_follows_the_stages_and_their_warm_up():
    s = strategy(lr_factor=4.0, stages=[{"step": 10, "lr_factor": 2.0, "rules": WIDEN},
                                         {"step": 20, "lr_factor": 1.0, "warmup_steps": 4, "rules": WIDEN},
                                         {"step": 30, "rules": WIDEN}])
    at = lambda step: s.lr_factor(SimpleNamespace(step=step))  # noqa: E731
    assert at(0) == at(9) == 4.0
    s.done, s.done_steps = [0], [10]
    assert at(10) == 2.0
    s.done, s.done_steps = [0, 1], [10, 20]
    assert [at(k) for k in (20, 21, 22, 24, 40)] == [2.0, 1.75, 1.5, 1.0, 1.0]
    s.done, s.done_steps = [0, 1, 2], [10, 20, 30]   # a stage without a factor keeps the one before
    assert at(31) == 1.0


def test_without_factors_the_schedule_is_unchanged():
    s = strategy(stages=[{"step": 1, "rules": WIDEN}])
    s.done, s.done_steps = [0], [1]
    assert s.lr_factor(SimpleNamespace(step=5)) == 1.0


def test_factors_are_validated():
    with pytest.raises(ValueError):
        StagedSettings(lr_factor=0.0)
    with pytest.raises(ValueError):
        StagedSettings(stages=[{"step": 1, "lr_factor": -1.0, "rules": WIDEN}])


def test_a_checkpoint_without_done_steps_loads():
    s = strategy(stages=[{"step": 3, "lr_factor": 0.5, "warmup_steps": 10, "rules": WIDEN}])
    s.load_state_dict({"done": [0]})
    assert s.done_steps == [3] and s.state_dict() == {"done": [0], "done_steps": [3]}


def test_a_staged_run_trains_at_the_stage_factor(tmp_path):
    archgraph.save(gpt_graph(depth=1, d=8, vocab=128, t=8, norm="rmsnorm"), tmp_path / "seed.yaml")
    cfg = {"seed": str(tmp_path / "seed.yaml"),
           "data": {"name": "text", "limit": 64, "test_limit": 16, "batch_size": 16, "eval_batch_size": 64},
           "method": {"name": "staged", "lr_factor": 3.0,
                      "stages": [{"step": 1, "lr_factor": 0.5, "rules": WIDEN}]},
           "schedule": {"epochs": 1, "lr": 0.01, "device": "cpu", "threads": 1, "format": "eager"}}
    archgraph.grow(cfg, tmp_path / "run", quiet=True)
    events = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    epoch = next(e for e in events if e["event"] == "epoch")
    assert epoch["metrics"]["lr"] == pytest.approx(0.005)
