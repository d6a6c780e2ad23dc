"""The method matrix on the sequence and segmentation seeds (issue 15): GNAP, SCS and CGaP on the tiny GPT, the LSTM
language model and the small U-Net; GbP, Gumbel and Budget on the GPT and the U-Net (GbP on the LSTM too). Each
runs a few epochs on tiny data with settings that make it rewrite, and must: finish with the task's metrics (bits
per character, mean IoU and pixel accuracy), record the rules the method is meant to use there (heads, stream and
MLP width, transformer blocks, LSTM units, U-Net channels; pruned heads, neurons, units, channels), and leave a
consistent run directory (every version is its parent with the logged rule applied, the final weights match the
reported counts).

One LM run and one segmentation run are also killed at a write and resumed (the same final summary as an
uninterrupted run), and their run directories go through ``archgraph report`` and ``archgraph render``."""
from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT
from method_helpers import check_run
from test_resume import count_writes, crash_then_resume

import archgraph
from archgraph.cli import main

SEEDS = {"gpt": "gpt_text.yaml", "lstm": "lstm_text.yaml", "unet": "unet_scenes.yaml"}
TEXT = {"name": "text", "limit": 64, "test_limit": 16, "batch_size": 16, "eval_batch_size": 64}
DATA = {"gpt": TEXT, "lstm": TEXT,
        "unet": {"name": "digits_scenes", "limit": 48, "test_limit": 8, "batch_size": 16, "val_fraction": 0.2}}
METRICS = {"gpt": ("val_bpc", "test_bpc"), "lstm": ("val_bpc", "test_bpc"), "unet": ("test_miou", "test_pixel_acc")}

GNAP = {"name": "gnap", "patience": 1, "min_phase_epochs": 1, "min_delta": 10.0, "smoothing": 0.0,
        "finetune_epochs": 0, "max_growths": 2, "param_cost": 20.0, "mask_lr": 0.05}
CGAP = {"name": "cgap", "grow_epochs": 2, "grow_every": 1, "growth_rate": 1.0, "prune_start": 2, "prune_every": 1,
        "prune_rate": 0.3, "target_ratio": 0.4, "min_width": 1}
SCS = {"name": "scs", "s_init": 1.0, "beta_final": 50.0, "gate_lr": 0.5, "penalty": 5.0, "grow_every": 1,
       "grow_until": 0.5, "grow_threshold": 0.5, "growth_factor": 2.0, "max_growths": 1, "min_width": 1,
       "close_below": 0.2}
GBP = {"name": "gbp", "expand_after": 1, "expand_factor": 2.0, "penalty": 5.0, "anneal_start": 0, "anneal_epochs": 2,
       "threshold": 0.6, "max_prune_fraction": 0.5, "min_width": 1}
GUMBEL = {"name": "gumbel", "mask_lr": 0.5, "sparsity": 20.0}
BUDGET = {"name": "budget", "target": 0.05, "threshold": 1.5}

#: (method, seed) -> (method settings, epochs, rewrites that must be in the history as (rule, node or None))
CASES = {
    # GPT: a wider stream (through the embedding), a wider MLP, more heads, then (widening stopped paying off:
    # min_gain) a transformer block; dead MLP neurons pruned
    ("gnap", "gpt"): ({**GNAP, "min_gain": 100.0}, 5,
                      {("add_filters", "wte"), ("add_filters", "b0_fc"), ("add_heads", "b0_attn"),
                       ("insert_block", None), ("prune_channels", "b0_fc")}),
    ("gnap", "lstm"): (GNAP, 3, {("add_filters", "lstm"), ("add_filters", "embed")}),
    ("gnap", "unet"): (GNAP, 3, {("add_filters", "e1_conv"), ("add_filters", "mid_conv"), ("add_filters", "up2"),
                                 ("prune_channels", None)}),
    ("cgap", "gpt"): (CGAP, 3, {("split_filters", "b0_fc"), ("prune_channels", "b0_fc")}),
    ("cgap", "lstm"): (CGAP, 3, {("split_filters", "lstm"), ("prune_channels", "lstm")}),
    ("cgap", "unet"): (CGAP, 3, {("split_filters", "mid_conv"), ("split_filters", "up2"),
                                 ("prune_channels", None)}),
    # SCS with block growth and no penalty: it grows heads, the MLP and a block, then closes heads, neurons and the
    # new block's branches
    ("scs", "gpt"): ({**SCS, "grow_blocks": True, "penalty": 0.0, "grow_threshold": 0.3, "close_below": 0.01}, 3,
                     {("add_heads", "b0_attn"), ("add_filters", "b0_fc"), ("insert_block", None),
                      ("prune_heads", "b0_attn"), ("prune_channels", "b0_fc")}),
    ("scs", "lstm"): (SCS, 3, {("add_filters", "lstm"), ("prune_channels", "lstm")}),
    ("scs", "unet"): (SCS, 3, {("add_filters", "e1_conv"), ("add_filters", "up2"), ("prune_channels", None)}),
    # GbP expands the stream (the attention's output space) and the MLP, then prunes stream channels and neurons
    ("gbp", "gpt"): (GBP, 3, {("add_filters", "b0_fc"), ("add_filters", None), ("prune_channels", "b0_fc")}),
    ("gbp", "lstm"): (GBP, 3, {("add_filters", "lstm"), ("prune_channels", "lstm")}),
    ("gbp", "unet"): (GBP, 3, {("add_filters", "e1_conv"), ("add_filters", "up2"), ("prune_channels", None)}),
    # the per-weight mask methods rewrite only to remove the channels their masks emptied
    ("gumbel", "gpt"): (GUMBEL, 3, {("prune_channels", "b0_fc")}),
    ("gumbel", "unet"): (GUMBEL, 3, {("prune_channels", None)}),
    ("budget", "gpt"): (BUDGET, 3, {("prune_channels", "b0_fc")}),
    ("budget", "unet"): (BUDGET, 3, {("prune_channels", None)}),
}


def config(method: str, net: str, epochs: int | None = None) -> dict:
    settings, default_epochs, _ = CASES[(method, net)]
    return {"seed": str(ROOT / "examples" / "seeds" / SEEDS[net]), "data": dict(DATA[net]), "method": dict(settings),
            "schedule": {"optimizer": "adamw", "lr": 0.01, "epochs": epochs or default_epochs, "seed": 0,
                         "device": "cpu", "threads": 1, "format": "eager"}}


def recorded(log: list[dict]) -> set[tuple[str, str | None]]:
    """Every rewrite of the history as (rule, node) and (rule, None)."""
    out = set()
    for e in log:
        if e["event"] == "rewrite":
            node = e["args"].get("node", e["args"].get("after"))
            out |= {(e["rule"], node), (e["rule"], None)}
    return out


@pytest.mark.parametrize("method, net", sorted(CASES), ids=[f"{m}-{n}" for m, n in sorted(CASES)])
def test_method_rewrites_the_new_seeds(method, net, tmp_path):
    _, epochs, expected = CASES[(method, net)]
    run = tmp_path / "run"
    summary = archgraph.grow(config(method, net), run, quiet=True)
    assert summary["method"] == method and summary["epochs"] == epochs
    for key in METRICS[net]:
        assert summary[key] is not None and summary[key] > 0, key
    if net == "unet":
        assert summary["test_miou"] <= 1 and summary["test_pixel_acc"] <= 1
    log = check_run(run, summary)
    missing = expected - recorded(log)
    assert not missing, f"{method} on {net}: no {sorted(missing, key=str)} in {sorted(recorded(log), key=str)}"
    final = archgraph.load(sorted((run / "versions").glob("*.yaml"))[-1])
    assert summary["params"] == final.params


#: one LM run and one segmentation run, killed mid-run (after their first rewrites) and near the end
RESUMED = [("scs", "lstm"), ("scs", "unet")]


@pytest.mark.parametrize("method, net", RESUMED, ids=[f"{m}-{n}" for m, n in RESUMED])
def test_crash_then_resume_then_report_and_render(method, net, tmp_path, monkeypatch):
    cfg = config(method, net)
    reference = tmp_path / "reference"
    archgraph.grow(cfg, reference, quiet=True)
    total = count_writes(reference)
    for k in (total // 2, total - 3):
        crash_then_resume(cfg, tmp_path / f"crash{k}", k, monkeypatch, reference)

    assert main(["report", str(reference)]) == 0
    page = (reference / "report.html").read_text()
    assert page.count("<html") >= 1 and len(page) > 1000
    if shutil.which("dot") is None:
        pytest.skip("graphviz 'dot' is not installed")
    assert main(["render", str(reference), "-o", str(tmp_path / "history.svg")]) == 0
    assert (tmp_path / "history.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    assert main(["render", str(sorted((reference / "versions").glob("*.yaml"))[-1]),
                 "-o", str(tmp_path / "final.svg")]) == 0


def test_summary_names_the_task_metrics(tmp_path):
    """The summary file written to disk is the one returned (what the CLI and the report read)."""
    run = tmp_path / "run"
    summary = archgraph.grow(config("budget", "gpt", epochs=1), run, quiet=True)
    assert json.loads((run / "summary.json").read_text()) == summary


@pytest.mark.slow
def test_scs_on_the_lstm_lm_keeps_ddp_ranks_identical(tmp_path):
    """SCS on the LSTM LM under ``torchrun`` (two gloo processes, tests/ddp_worker.py traces each rank's state
    after every epoch and rewrite): the ranks stay one run, and it rewrites. 69 training windows make a last batch
    of 5 (3 and 2 on the ranks); the Bernoulli gate samples draw from the global RNG."""
    from test_ddp import pytestmark as ddp_skip
    from test_ddp_methods import traced_ranks
    if ddp_skip.args[0]:
        pytest.skip(ddp_skip.kwargs["reason"])
    cfg = config("scs", "lstm")
    cfg["data"]["limit"] = 69
    ranks, out = traced_ranks(cfg, tmp_path)
    for a, b in zip(ranks[0], ranks[1], strict=True):
        assert a == b, f"the ranks differ after {a['what']} (version {a['version']}, step {a['step']})"
    assert len({e["hash"] for e in ranks[0]}) > 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["test_bpc"] > 0
    assert {("add_filters", "lstm"), ("prune_channels", "lstm")} <= recorded(
        [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()])
