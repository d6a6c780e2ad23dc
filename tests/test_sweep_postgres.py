"""A sweep shared by two "machines" through a real PostgreSQL server (``--storage postgresql://...``): the test
starts a throwaway server on 127.0.0.1 from the system's PostgreSQL (Debian's ``postgresql`` package; ``make
system`` installs it) and runs two ``archgraph sweep`` processes, each with its own ``--out``, on one study. Every
trial runs once, and both read the same Pareto front. Skipped when the server binaries or psycopg2 are missing."""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import ROOT
from test_ddp import free_port
from test_sweep import FAST, RUN, env

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install psycopg2-binary)")


def pg_bin(name: str):
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[::-1]), None)
    return found


@pytest.fixture(scope="module")
def postgres_url():
    initdb, server = pg_bin("initdb"), pg_bin("postgres")
    if not (initdb and server):
        pytest.skip("no PostgreSQL server binaries here (Debian: apt-get install postgresql; `make system`)")
    folder = tempfile.mkdtemp(prefix="archgraph-pg-", dir="/tmp")
    as_user: list[str] = []
    if os.geteuid() == 0:   # the server refuses to run as root
        os.chown(folder, 65534, 65534)
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    data = os.path.join(folder, "data")
    subprocess.run(as_user + [initdb, "-D", data, "-U", "archgraph", "--auth=trust"], check=True,
                   capture_output=True, timeout=120)
    port = free_port()
    proc = subprocess.Popen(as_user + [server, "-D", data, "-h", "127.0.0.1", "-p", str(port), "-k", folder],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"postgresql+psycopg2://archgraph@127.0.0.1:{port}/postgres"   # psycopg2-binary
    import psycopg2
    for _ in range(300):
        try:
            psycopg2.connect(url.replace("+psycopg2", "")).close()
            break
        except psycopg2.OperationalError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the PostgreSQL server did not start")
    yield url
    proc.send_signal(signal.SIGINT)   # fast shutdown: the test's own connections are still open
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_machines_share_one_study(postgres_url, tmp_path):
    def sweep(out):
        return subprocess.Popen([sys.executable, "-m", "archgraph", "sweep", str(RUN), "--param",
                                 "method.param_cost=loguniform:0.0005:0.5", "--trials", "4", "--out", str(out),
                                 "--no-progress", "--storage", postgres_url, "--study", "shared", *FAST],
                                cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    machines = [sweep(tmp_path / "a"), sweep(tmp_path / "b")]
    outputs = [m.communicate(timeout=600)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], "\n".join(outputs)
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4 and len({t.number for t in done}) == 4
    ran = sorted(p.name for m in ("a", "b") for p in (tmp_path / m / "trials").glob("*") if p.is_dir())
    assert ran == sorted(f"{t.number:04d}" for t in done)          # each trial ran once, on one of the machines
    # each machine writes the front when it stops; the first may stop while the other's last trial runs, so
    # read it again from each once both are done (the same command has nothing left to run)
    again = [sweep(tmp_path / m) for m in ("a", "b")]
    assert [m.wait(timeout=300) for m in again] == [0, 0]
    fronts = [json.loads((tmp_path / m / "pareto.json").read_text())["front"] for m in ("a", "b")]
    key = [[(e["trial"], e["val_acc"], e["nonzero_params"]) for e in f] for f in fronts]
    assert key[0] == key[1] and key[0]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_killed_machines_trial_is_retried(postgres_url, tmp_path):
    """Machine A is SIGKILLed while its trial runs (its launcher sleeps, so the trial is surely running); machine B,
    with a 1 s heartbeat and a 3 s grace period (ARCHGRAPH_SWEEP_HEARTBEAT_S / _GRACE_S), fails that trial, reruns
    its parameters and finishes the study."""
    import optuna.storages as storages
    retried = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    quick = dict(env(), ARCHGRAPH_SWEEP_HEARTBEAT_S="1", ARCHGRAPH_SWEEP_GRACE_S="3")

    def sweep(out, *extra, **kw):
        return subprocess.Popen([sys.executable, "-m", "archgraph", "sweep", str(RUN), "--param",
                                 "method.param_cost=loguniform:0.0005:0.5", "--trials", "2", "--out", str(out),
                                 "--no-progress", "--storage", postgres_url, "--study", "killed", *FAST, *extra],
                                cwd=ROOT, env=quick, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                **kw)
    a = sweep(tmp_path / "a", "--launcher", "sh -c 'sleep 300' sh", start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                study = optuna.load_study(study_name="killed", storage=postgres_url)
                # running with its parameters drawn (a kill between optuna's ask and the draw leaves a trial
                # with none, whose retry draws afresh)
                if any(t.state.name == "RUNNING" and t.params for t in study.trials):
                    break
            except KeyError:   # the study is not made yet
                pass
            assert a.poll() is None, a.communicate()[0]
            time.sleep(0.2)
        else:
            pytest.fail("machine A never started a trial")
    finally:
        os.killpg(a.pid, signal.SIGKILL)   # A and its launcher's sleep
        a.communicate(timeout=30)
    killed = next(t for t in study.trials if t.state.name == "RUNNING")
    assert killed.params
    b = sweep(tmp_path / "b")
    out = b.communicate(timeout=120)[0]
    assert b.returncode == 0, out
    trials = optuna.load_study(study_name="killed", storage=postgres_url).trials
    states = {t.number: t.state.name for t in trials}
    assert sorted(states) == list(range(len(trials)))                     # every trial number accounted for
    assert states[killed.number] == "FAIL"
    assert set(states.values()) <= {"COMPLETE", "FAIL"} and list(states.values()).count("FAIL") == 1
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 2
    retry = [t for t in done if retried.retried_trial_number(t) == killed.number]
    assert len(retry) == 1 and retry[0].params == killed.params            # the killed trial's parameters, rerun
    ran = sorted(p.name for p in (tmp_path / "b" / "trials").glob("*") if p.is_dir())
    assert ran == sorted(f"{t.number:04d}" for t in done)                 # B ran both complete trials
    again = sweep(tmp_path / "a")   # A's folder: the same command has nothing left to run, writes the front
    assert again.wait(timeout=120) == 0, again.communicate()[0]
    fronts = [json.loads((tmp_path / m / "pareto.json").read_text())["front"] for m in ("a", "b")]
    key = [[(e["trial"], e["val_acc"], e["nonzero_params"]) for e in f] for f in fronts]
    assert key[0] == key[1] and key[0]
