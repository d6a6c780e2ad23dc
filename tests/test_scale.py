"""Speed settings in the training loop (schedule.format, AMP on CUDA) and the single-process side of the
distributed helpers; the two-process runs are in tests/test_ddp.py."""
import doctest
import importlib

import pytest
import torch
from conftest import ROOT
from train_helpers import tiny_config, write_mnist

import archgraph
from archgraph.fx.speed import Format, candidates
from archgraph.train import distributed
from archgraph.train.formats import speed_summary


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("data"), n_train=200, n_test=60)


@pytest.mark.parametrize("name", ["archgraph.train.distributed", "archgraph.fx.speed"])
def test_docstring_examples_run(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_format_names_round_trip():
    for fmt in candidates(torch.device("cpu"), True, True):
        assert Format.from_name(fmt.name) == fmt
    assert Format.from_name("channels_last", amp=True).describe() == "channels_last+amp"
    with pytest.raises(ValueError):
        Format.from_name("channels_first")


def test_one_process_needs_no_process_group():
    d = distributed.from_env(torch.device("cpu"))
    assert (d.enabled, d.rank, d.world_size, d.part(10)) == (False, 0, 1, slice(None))
    assert d.span(10) == (0, 10) and d.all_reduce_sum([1.5, 2]) == [1.5, 2]
    m = torch.nn.Linear(2, 2)
    assert d.wrap(m) is m
    d.check_same("0" * 64, "nothing")   # a no-op


def test_shares_cover_a_batch_once():
    for world in (2, 3, 4):
        for n in (6, 7, 32, 33):
            parts = [distributed.Dist(r, world, r, torch.device("cpu")) for r in range(world)]
            taken = sorted(i for d in parts for i in range(n)[d.part(n)])
            assert taken == list(range(n))
            assert max(len(range(n)[d.part(n)]) for d in parts) - min(len(range(n)[d.part(n)]) for d in parts) <= 1
            spans = [d.span(n) for d in parts]
            assert spans[0][0] == 0 and spans[-1][1] == n and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_digest_sees_every_tensor_and_key():
    a = {"w": torch.ones(2, 2), "opt": [{"step": torch.tensor(1.0)}]}
    assert distributed.digest(a) == distributed.digest({"opt": [{"step": torch.tensor(1.0)}], "w": torch.ones(2, 2)})
    assert distributed.digest(a) != distributed.digest({**a, "w": torch.ones(4)})          # shape
    assert distributed.digest(a) != distributed.digest({**a, "w": torch.ones(2, 2).double()})  # dtype
    b = torch.ones(2, 2)
    b[1, 1] = 1 + 1e-7
    assert distributed.digest(a) != distributed.digest({**a, "w": b})


@pytest.mark.parametrize("fmt", ["auto", "channels_last"])
def test_formats_in_the_loop(fmt, data_root, tmp_path):
    cfg = tiny_config(data_root, epochs=4)
    cfg["schedule"]["format"] = fmt
    summary = archgraph.grow(cfg, tmp_path / "run", quiet=True)
    assert summary["format"] == fmt and summary["amp"] == "off" and summary["growth_events"] >= 1
    records = summary["speed"]["versions"]
    assert [r["kind"] for r in records] == ["seed"] + ["rewrite"] * (summary["versions"] - 1)
    assert [r["version"] for r in records] == list(range(summary["versions"]))
    allowed = {"eager", "channels_last"} if fmt == "auto" else {"channels_last"}
    assert {r["format"] for r in records} <= allowed
    assert (records[0]["measure_s"] > 0) == (fmt == "auto")
    assert all(r["rewrite_s"] >= 0 for r in records) and "step_s" in records[0]
    assert summary["speed"]["event_s_mean"] >= 0


def test_speed_summary_counts_rewrites_only():
    records = [{"kind": "seed", "rewrite_s": 1.0, "measure_s": 1.0, "first_step_s": 9.0, "step_s": 1.0},
               {"kind": "rewrite", "rewrite_s": 0.01, "measure_s": 0.02, "first_step_s": 5.0, "step_s": 1.0},
               {"kind": "rewrite", "rewrite_s": 0.03, "measure_s": 0.0},
               {"kind": "resume", "rewrite_s": 7.0, "measure_s": 0.0}]
    assert speed_summary(records)["event_s_mean"] == pytest.approx(((0.03 + 4.0) + 0.03) / 2)
    assert speed_summary(records[:1])["event_s_mean"] is None


@pytest.mark.cuda
@pytest.mark.parametrize("amp", ["float16", "bfloat16"])
def test_amp_and_measured_format(amp, device, data_root, tmp_path):
    if device == "cpu" and amp == "bfloat16":
        pytest.skip("the CPU ignores amp: the float16 case covers it")
    cfg = tiny_config(data_root, epochs=4)
    cfg["schedule"].update(device=device, format="auto", amp=amp)
    summary = archgraph.grow(cfg, tmp_path / "run", quiet=True)
    assert summary["device"] == device and summary["amp"] == (amp if device == "cuda" else "off")
    assert summary["growth_events"] >= 1 and 0 <= summary["test_acc"] <= 1
    # a run killed after a rewrite and resumed, with AMP: tests/test_cuda.py
