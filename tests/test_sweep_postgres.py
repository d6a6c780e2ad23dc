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
