"""benchmarks/growth_compute.py on a micro configuration: the FLOPs accounting, the crossing, and that watching a run
does not change it."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import growth_compute as gc  # noqa: E402

import archgraph  # noqa: E402

# a few windows, a small validation split, stages after steps 3 and 7 of 16 (two epochs of 8)
MICRO = {"data.limit": 128, "data.batch_size": 16, "data.split": [0.98, 0.01, 0.01]}
STEPS = [3, 7]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gc")
    scratch = gc.train(gc.SCRATCH, tmp / "scratch", seed=0, epochs=2, every=4, settings=MICRO)
    grown = gc.train(gc.GROWN, tmp / "grown", seed=0, epochs=2, every=4, settings=MICRO, stage_steps=STEPS)
    return scratch, grown, tmp


def test_grown_run_ends_in_the_target(runs):
    scratch, grown, _ = runs
    assert grown["final_macs"] == scratch["final_macs"] and grown["params"] == scratch["params"]
    assert grown["versions"] == 1 + 3 + 3   # three rules in each stage, one version each


def test_flops_are_the_sum_over_versions(runs):
    scratch, grown, _ = runs
    for run in (scratch, grown):
        assert run["flops"] == sum(gc.FLOPS_PER_MAC * v["macs"] * v["samples"] for v in run["ledger"])
        assert sum(v["steps"] for v in run["ledger"]) == 16 and sum(v["samples"] for v in run["ledger"]) == 256
    # the versions that trained: the seed until step 3, the widened one until step 7, the target after
    assert [v["steps"] for v in grown["ledger"]] == [3, 4, 9]
    assert grown["ledger"][-1]["macs"] == scratch["ledger"][0]["macs"]
    assert grown["ledger"][0]["macs"] < grown["ledger"][1]["macs"] < grown["ledger"][2]["macs"]
    # a point's FLOPs are those of the steps before it; the last point is the end of the run
    for run in (scratch, grown):
        for p in run["curve"]:
            assert p["flops"] == _flops_until(run["ledger"], p["step"])
        assert [p["step"] for p in run["curve"]] == [0, 4, 8, 12, 16]
        assert run["curve"][-1]["val_bpc"] == pytest.approx(run["val_bpc"], rel=1e-6)


def _flops_until(ledger, step):
    total, done = 0, 0
    for v in ledger:
        n = max(0, min(v["steps"], step - done))
        total += gc.FLOPS_PER_MAC * v["macs"] * v["samples"] // v["steps"] * n   # full batches here
        done += v["steps"]
    return total


def test_watching_does_not_change_the_run(runs):
    _, grown, tmp = runs
    stages = [dict(s.model_dump(mode="json"), step=step) for s, step in
              zip(gc.load_config(gc.GROWN).method.stages, STEPS)]
    plain = archgraph.grow(gc.GROWN, tmp / "plain", quiet=True,
                           settings={**MICRO, "schedule.epochs": 2, "schedule.seed": 0, "method.stages": stages})
    assert plain["hash"] == grown["hash"]
    assert plain["test_bpc"] == grown["test_bpc"]


def test_crossing_is_the_first_point_at_or_below():
    curve = [{"step": s, "val_bpc": b, "flops": 10 * s, "wall_s": s / 10} for s, b in
             [(0, 5.0), (1, 3.0), (2, 2.5), (3, 2.6), (4, 2.4)]]
    raw = gc.smoothed(curve, 1)
    assert gc.crossing(raw, 2.5)["step"] == 2
    assert gc.crossing(raw, 2.45)["step"] == 4
    assert gc.crossing(raw, 2.0) is None
    assert [p["bpc"] for p in gc.smoothed(curve, 2)] == pytest.approx([5.0, 4.0, 2.75, 2.55, 2.5])
    scratch = {"seed": 0, "curve": curve, "test_bpc": 2.4}
    grown = {"curve": [dict(p, flops=p["flops"] // 2) for p in curve], "test_bpc": 2.4}
    row = gc.compare(scratch, grown)
    assert row["threshold_bpc"] == 2.4 and row["scratch_step"] == row["grown_step"] == 4
    assert row["flops_ratio"] == 0.5 and row["wall_ratio"] == 1.0
    row = gc.compare(scratch, grown, window=2)   # the threshold and the crossings on the mean of two evaluations
    assert row["threshold_bpc"] == 2.5 and row["scratch_step"] == 4
    row = gc.compare(scratch, grown, every=2)   # only the points at steps 0, 2, 4
    assert row["threshold_bpc"] == 2.4
    grown["curve"][3]["val_bpc"] = 2.0   # step 3 is off the grid: it does not cross
    assert gc.compare(scratch, grown, every=2)["grown_step"] == 4


def test_cached_train_trains_once_per_setting(tmp_path, monkeypatch):
    calls = []

    def fake(run_file, out_dir, **kw):
        calls.append(kw)
        return {"seed": kw["seed"], "curve": [], "settings": kw.get("settings")}
    monkeypatch.setattr(gc, "train", fake)
    kw = dict(seed=1, epochs=2, every=4, settings={"schedule.lr_schedule": "cosine"})
    first = gc.cached_train(gc.SCRATCH, tmp_path / "a", tmp_path / "cache", **kw)
    again = gc.cached_train(gc.SCRATCH, tmp_path / "b", tmp_path / "cache", **kw)
    other = gc.cached_train(gc.SCRATCH, tmp_path / "c", tmp_path / "cache", **dict(kw, settings=None))
    assert first == again and other["settings"] is None and len(calls) == 2
    assert len(list((tmp_path / "cache").glob("growth_compute_scratch-s1-e2-*.json"))) == 2
    gc.cached_train(gc.SCRATCH, tmp_path / "d", None, **kw)   # no cache: always trains
    assert len(calls) == 3
