"""archgraph sweep: parameter specs, the error path, and end to end on the bundled digits (two jobs, killed and
resumed, the Pareto front checked against the trials' summaries)."""
from __future__ import annotations

import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT

from archgraph.cli import main
from archgraph.errors import ConfigError
from archgraph.sweep import parse_param, parse_params, parse_seeds
from archgraph.sweep.front import dominates

optuna = pytest.importorskip("optuna")

RUN = ROOT / "examples" / "digits_gnap.yaml"
#: each grow a fraction of a second once torch is warm: 4 epochs of 400 digits, one growth at most
FAST = ["--set", "schedule.epochs=4", "--set", "method.finetune_epochs=1", "--set", "method.min_phase_epochs=1",
        "--set", "method.patience=1", "--set", "data.limit=400", "--set", "data.test_limit=200",
        "--set", "method.max_growths=1", "--device", "cpu"]


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                OMP_NUM_THREADS="1")


def sweep_args(out: Path, trials: int, *more: str) -> list[str]:
    return ["sweep", str(RUN), "--param", "method.param_cost=loguniform:0.0005:0.5", "--trials", str(trials),
            "--out", str(out), "--no-progress", *FAST, *more]


def load_study(out: Path):
    return optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'study.db'}")


def states(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in load_study(out).get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


# ---- parameter specs ----------------------------------------------------------------------------------------------

def test_parse_every_distribution():
    p = parse_param("method.param_cost=loguniform:0.0005:0.05")
    assert (p.key, p.kind, p.low, p.high) == ("method.param_cost", "loguniform", 0.0005, 0.05)
    assert parse_param("method.min_gain=uniform:-0.5:1").low == -0.5
    i = parse_param("method.patience=int:2:6")
    assert (i.kind, i.low, i.high) == ("int", 2, 6) and isinstance(i.low, int)
    c = parse_param("method.grow_init=choice:preserve,random")
    assert c.choices == ("preserve", "random")
    # choices are YAML scalars: numbers, booleans, null, quoted strings
    assert parse_param("a.b=choice:1,2.5,true,null,'3'").choices == (1, 2.5, True, None, "3")
    assert parse_param(" method.param_cost = uniform: 0.1 : 0.2").spec == "uniform:0.1:0.2"
    assert parse_seeds("0,1,2") == [0, 1, 2]


def test_space_docstring_examples():
    import doctest

    import archgraph.sweep.space
    result = doctest.testmod(archgraph.sweep.space)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("text, words", [
    ("method.param_cost=normal:0:1", "unknown distribution 'normal'"),
    ("method.param_cost=loguniform:0.05:0.0005", "must be below"),
    ("method.param_cost=uniform:0.1:0.1", "must be below"),
    ("method.patience=int:6:2", "must be below"),
    ("method.param_cost=loguniform:0:1", "LO > 0"),
    ("method.param_cost", "wants KEY=DIST:ARGS"),
    ("=uniform:0:1", "wants KEY=DIST:ARGS"),
    ("method.param_cost=", "wants KEY=DIST:ARGS"),
    ("method.param_cost=uniform:0", "uniform wants uniform:LO:HI"),
    ("method.param_cost=uniform:0:1:2", "uniform wants uniform:LO:HI"),
    ("method.param_cost=uniform:a:1", "'a' is not a number"),
    ("method.patience=int:1.5:4", "'1.5' is not an integer"),
    ("method.param_cost=uniform:0:inf", "not a finite number"),
    ("method.grow_init=choice:preserve", "two or more values"),
    ("method.grow_init=choice:a,a", "repeated"),
    ("method.grow_init=choice:[1],2", "not a scalar"),
    ("schedule.seed=int:0:3", "set by --seeds"),
    ("method..x=uniform:0:1", "not a dotted field name"),
])
def test_bad_specs(text, words):
    with pytest.raises(ConfigError) as info:
        parse_param(text)
    assert words in str(info.value)
    assert str(info.value).startswith("--param ")


def test_bad_seeds_and_repeated_keys():
    for text in ("0,x", "0,0", "-1", ""):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(text)
    with pytest.raises(ConfigError, match="given twice"):
        parse_params(["method.param_cost=uniform:0:1", "method.param_cost=uniform:0:2"])


@pytest.mark.parametrize("param, words", [
    ("method.param_cst=loguniform:0.0005:0.05", "field 'method.param_cst': --param method.param_cst="),
    ("optimizer.lr=uniform:0.001:0.1", "cannot set 'optimizer.lr'"),
    ("method.patience=uniform:1:5", "use int:LO:HI"),
    ("method.growth_factor=uniform:0.5:2", "greater than 1"),
    ("method.monitor=choice:val_loss,foo", "'val_loss' or 'val_acc'"),
    ("method.param_cost=normal:0:1", "unknown distribution 'normal'; known: loguniform, uniform, int, choice"),
])
def test_cli_errors_exit_2_with_one_line(tmp_path, capsys, param, words):
    out = tmp_path / "sweep"
    code = main(["sweep", str(RUN), "--param", param, "--trials", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("archgraph: error: ") and err.count("\n") == 1 and words in err, err
    assert not out.exists()   # nothing is created before the specs are checked


def test_cli_other_errors(tmp_path, capsys):
    cases = [(["--set", "schedule.seed=3"], "set by --seeds"),
             (["--set", "method.param_cost=0.1"], "both --set and --param"),
             (["--set", "data.val_fraction=0"], "data.val_fraction must be above 0"),
             (["--seeds", "0,0"], "--seeds"), (["--jobs", "0"], "--jobs must be at least 1")]
    for extra, words in cases:
        code = main(["sweep", str(RUN), "--param", "method.param_cost=uniform:0.1:0.2", "--trials", "2",
                     "--out", str(tmp_path / "s"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and words in err and err.count("\n") == 1, (extra, err)


def test_error_path_through_python_dash_m_has_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "archgraph", "sweep", str(RUN), "--param",
                        "method.param_cost=loguniform:0.5:0.05", "--trials", "3", "--out", str(tmp_path / "s")],
                       cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr == ("archgraph: error: --param method.param_cost=loguniform:0.5:0.05: LO (0.5) must be below "
                        "HI (0.05)\n")
    assert "Traceback" not in r.stderr


def test_dominates():
    a, b = {"val_acc": 0.9, "nonzero_params": 100}, {"val_acc": 0.8, "nonzero_params": 100}
    assert dominates(a, b) and not dominates(b, a) and not dominates(a, a)
    assert not dominates({"val_acc": 0.95, "nonzero_params": 200}, a)


# ---- end to end ---------------------------------------------------------------------------------------------------

def check_outputs(out: Path, trials: int, seeds: list[int]) -> dict:
    """The study has exactly ``trials`` complete trials and none running; pareto.json's front is non-dominated,
    covers every non-dominated trial, and its numbers are its trials' summaries'."""
    study = load_study(out)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    assert len(complete) == trials
    assert not [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
    data = json.loads((out / "pareto.json").read_text())
    assert data["trials_complete"] == trials and data["seeds"] == seeds
    points = [{"val_acc": t.values[0], "nonzero_params": t.values[1], "trial": t.number} for t in complete]
    front = data["front"]
    assert front
    members = {m["trial"] for m in front}
    for m in front:   # no complete trial dominates a member
        assert not any(dominates(p, m) for p in points), m
    for p in points:   # and every trial left out is dominated by one
        if p["trial"] not in members:
            assert any(dominates(q, p) for q in points), p
    by_number = {t.number: t for t in complete}
    for m in front:
        trial = by_number[m["trial"]]
        summaries = [json.loads((out / "trials" / f"{m['trial']:04d}" / f"seed-{s}" / "summary.json").read_text())
                     for s in seeds]
        assert m["val_acc"] == statistics.median(s["val_acc"] for s in summaries) == trial.values[0]
        assert m["nonzero_params"] == statistics.median(s["nonzero_params"] for s in summaries) == trial.values[1]
        assert m["test_acc"] == statistics.median(s["test_acc"] for s in summaries)
        assert [r["seed"] for r in m["seeds"]] == seeds == [s["seed"] for s in summaries]
        for s, summary in zip(seeds, summaries):
            attrs = trial.user_attrs[f"seed-{s}"]
            assert attrs["val_acc"] == summary["val_acc"] and attrs["nonzero_params"] == summary["nonzero_params"]
        assert 0.0005 <= m["params"]["method.param_cost"] <= 0.5
        assert m["params"] == trial.params
    md = (out / "pareto.md").read_text()
    assert md.count("\n| ") == len(front) + 1   # header and one row per member
    for m in front:
        assert f"| {m['trial']} |" in md and f"{m['test_acc']:.4f}" in md
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def test_sweep_in_process_and_storage_url(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = sweep_args(out, 2, "--seeds", "0", "--set", "data.limit=200")
    assert main(args) == 0
    text = capsys.readouterr().out
    assert len([line for line in text.splitlines() if line.startswith("trial ")]) == 2 and "[2/2]" in text
    assert "on the Pareto front" in text
    check_outputs(out, 2, [0])
    # the same command again has nothing to do; more trials continue the study
    assert main(args) == 0 and "resuming study 'digits_gnap': 2 of 2" in capsys.readouterr().out
    assert main(sweep_args(out, 3, "--seeds", "0", "--set", "data.limit=200")) == 0
    assert "trial 0002" in capsys.readouterr().out
    check_outputs(out, 3, [0])
    # another search space in the same study is refused
    assert main(sweep_args(out, 3, "--seeds", "0,1", "--set", "data.limit=200")) == 2
    assert "a resumed sweep must repeat the command" in capsys.readouterr().err
    # --storage: an Optuna RDB URL instead of DIR/study.db
    other = tmp_path / "other"
    db = tmp_path / "shared.db"
    assert main(sweep_args(other, 1, "--seeds", "0", "--set", "data.limit=200", "--storage",
                           f"sqlite:///{db}", "--study", "shared")) == 0
    assert not (other / "study.db").exists() and db.exists()
    assert len(optuna.load_study(study_name="shared", storage=f"sqlite:///{db}").trials) == 1
    assert json.loads((other / "pareto.json").read_text())["front"][0]["test_acc"] is not None


def test_failed_trial_stops_the_sweep_and_is_not_counted(tmp_path, capsys, monkeypatch):
    import archgraph.sweep.runner

    def broken(*args, **kwargs):
        raise RuntimeError("the loss is NaN")

    out = tmp_path / "sweep"
    args = sweep_args(out, 1, "--seeds", "0", "--set", "data.limit=200")
    monkeypatch.setattr(archgraph.sweep.runner, "grow", broken)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("archgraph: error: trial 0000 failed: RuntimeError: the loss is NaN (traceback in ")
    assert err.count("\n") == 1
    assert "RuntimeError" in (out / "trials" / "0000" / "error.txt").read_text()
    assert states(out) == {"FAIL": 1}
    monkeypatch.undo()
    assert main(args) == 0   # the failed trial does not count: one more runs
    assert states(out) == {"FAIL": 1, "COMPLETE": 1}
    assert "trial 0001:" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_gives_way_when_the_study_is_full(tmp_path):
    """Two workers that both saw room for the last trial: the later-numbered one runs nothing (PRUNED, not
    counted), so parallel workers never exceed N complete trials."""
    from archgraph.sweep import plan
    from archgraph.sweep.runner import _objective, prepare
    spec = plan(RUN, tmp_path / "sweep", ["method.param_cost=loguniform:0.0005:0.5"], trials=1)
    study, done, failed = prepare(spec)
    assert (done, failed) == (0, 0)
    study.ask()   # trial 0: another worker's, running
    box: dict = {}
    study.optimize(lambda trial: _objective(spec, study, trial, box), n_trials=1)
    assert box == {"number": 1}   # nothing was sampled or run
    assert [t.state.name for t in study.trials] == ["RUNNING", "PRUNED"]
    assert "skipped" in study.trials[1].user_attrs
    # a new sweep on this DIR fails what a killed one left running, and nothing is counted
    study, done, failed = prepare(spec)
    assert (done, failed) == (0, 1)
    assert [t.state.name for t in study.trials] == ["FAIL", "PRUNED"]


def read_lines(stream, lines: "queue.Queue[str]") -> None:
    for line in stream:
        lines.put(line)
    lines.put("")


@pytest.mark.slow
def test_two_jobs_killed_and_resumed(tmp_path):
    out = tmp_path / "sweep"
    trials, seeds = 5, [0, 1]
    cmd = [sys.executable, "-m", "archgraph", *sweep_args(out, trials, "--seeds", "0,1", "--jobs", "2")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        line = lines.get(timeout=180)
        assert line.startswith("trial "), (line, proc.stderr.read() if proc.poll() is not None else "")
        os.kill(proc.pid, signal.SIGKILL)   # the sweep itself; its workers notice and end too
        proc.wait(timeout=30)
        deadline = time.time() + 20
        while time.time() < deadline:   # no orphan keeps training: the whole session is gone
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.25)
        else:
            pytest.fail("a sweep worker outlived the killed sweep")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stderr.close()
    before = states(out)
    assert 1 <= before.get("COMPLETE", 0) < trials, before

    r = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"resuming study 'digits_gnap': {before['COMPLETE']} of {trials} trials complete" in r.stdout
    if before.get("RUNNING"):
        assert "left running as failed" in r.stdout
    finished = [line for line in r.stdout.splitlines() if line.startswith("trial ")]
    assert len(finished) == trials - before["COMPLETE"]
    after = states(out)
    assert after["COMPLETE"] == trials and "RUNNING" not in after
    assert after.get("FAIL", 0) == before.get("FAIL", 0) + before.get("RUNNING", 0)
    data = check_outputs(out, trials, seeds)
    # every complete trial has both seeds' runs; the two jobs ran trials side by side
    for t in data["trials"]:
        for s in seeds:
            assert (out / "trials" / f"{t['trial']:04d}" / f"seed-{s}" / "summary.json").exists()


def test_heartbeat_env_is_validated(monkeypatch):
    from archgraph.sweep.runner import GRACE_S, HEARTBEAT_S, heartbeat_settings
    monkeypatch.delenv("ARCHGRAPH_SWEEP_HEARTBEAT_S", raising=False)
    monkeypatch.delenv("ARCHGRAPH_SWEEP_GRACE_S", raising=False)
    assert heartbeat_settings() == (HEARTBEAT_S, GRACE_S)
    monkeypatch.setenv("ARCHGRAPH_SWEEP_HEARTBEAT_S", "0.5")
    monkeypatch.setenv("ARCHGRAPH_SWEEP_GRACE_S", "3")
    assert heartbeat_settings() == (0.5, 3)
    for bad in ("0", "-2", "soon", "nan", "inf"):
        monkeypatch.setenv("ARCHGRAPH_SWEEP_GRACE_S", bad)
        with pytest.raises(ConfigError, match="ARCHGRAPH_SWEEP_GRACE_S"):
            heartbeat_settings()
    monkeypatch.setenv("ARCHGRAPH_SWEEP_GRACE_S", "0.5")   # not longer than the heartbeat interval
    with pytest.raises(ConfigError, match="longer than"):
        heartbeat_settings()


def test_bad_heartbeat_env_is_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARCHGRAPH_SWEEP_HEARTBEAT_S", "-1")
    code = main(["sweep", str(RUN), "--param", "method.param_cost=loguniform:0.0005:0.5", "--trials", "1",
                 "--out", str(tmp_path / "s"), "--no-progress", *FAST])
    assert code == 2 and "ARCHGRAPH_SWEEP_HEARTBEAT_S" in capsys.readouterr().err
