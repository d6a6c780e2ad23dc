"""Issue 12: what a new user broke in one afternoon. Each test here would have caught one of the faults."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from archgraph.cli import main
from conftest import ROOT

SEEDS = ROOT / "examples" / "seeds"
MLP = SEEDS / "mlp.yaml"
TINY = SEEDS / "tiny_cnn.yaml"
RUN = ROOT / "examples" / "digits_gnap.yaml"
BAD = ROOT / "tests" / "malformed" / "self_loop.yaml"


def cli(*args, cwd=None, timeout=120, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "archgraph", *map(str, args)], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)


def run_main(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, " ".join(err.split())


# ---- bounded reads ------------------------------------------------------------------------------------------------

def test_an_endless_device_is_refused_quickly():
    result = cli("validate", "/dev/urandom", timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "/dev/urandom: is larger than the limit" in result.stderr


def test_a_pipe_that_ends_is_read_like_a_file(tmp_path):
    fifo = tmp_path / "seed.fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat {MLP} > {fifo}"])
    try:
        result = cli("validate", fifo, timeout=30)
    finally:
        writer.wait(timeout=30)
    assert result.returncode == 0, result.stderr


def test_an_empty_file_name_says_so(capsys):
    code, _, err = run_main(capsys, "validate", "")
    assert code == 2 and "no file name given" in err and "directory" not in err


# ---- validate: every file, run files ------------------------------------------------------------------------------

def test_validate_checks_every_file_and_reports_each(capsys):
    other = ROOT / "tests" / "malformed" / "dangling_reference.yaml"
    code, out, err = run_main(capsys, "validate", MLP, BAD, TINY, other)
    assert code == 2
    assert f"{MLP}: ok" in out and f"{TINY}: ok" in out
    assert str(BAD) in err and str(other) in err and err.count("archgraph: error:") == 2


def test_validate_checks_a_run_file_and_its_seed(capsys, tmp_path):
    code, out, _ = run_main(capsys, "validate", RUN)
    assert code == 0 and "run file" in out and "seed 9 nodes" in out
    bad = tmp_path / "run.yaml"
    (tmp_path / "seed.yaml").write_text(BAD.read_text())
    bad.write_text("seed: seed.yaml\ndata: {name: digits}\nmethod: {name: gnap}\n")
    code, _, err = run_main(capsys, "validate", bad)
    assert code == 2 and "seed.yaml" in err and "node 'r1'" in err
    bad.write_text("seed: seed.yaml\ndata: {name: digits}\nmethod: {name: gnap, patiense: 3}\n")
    code, _, err = run_main(capsys, "validate", bad)
    assert code == 2 and "method.patiense" in err


def test_a_graph_given_to_grow_and_a_run_given_to_summary_say_what_they_are(capsys, tmp_path):
    code, _, err = run_main(capsys, "grow", MLP, "--out", tmp_path / "out")
    assert code == 2 and "this is a graph file" in err
    code, _, err = run_main(capsys, "summary", RUN)
    assert code == 2 and "this is a run file" in err


def test_set_with_a_misspelled_field_suggests_the_right_one(capsys, tmp_path):
    code, _, err = run_main(capsys, "grow", RUN, "--out", tmp_path / "out", "--set", "schedule.epoch=3")
    assert code == 2 and "did you mean 'schedule.epochs'" in err


def test_a_gnap_budget_that_never_grows_is_warned_about(capsys):
    from archgraph.train.config import check_budget, load_config, with_overrides
    cfg = load_config(RUN)
    assert check_budget(cfg) == []
    short = with_overrides(cfg, {"schedule.epochs": 10})
    (warning,) = check_budget(short)
    assert "never grow" in warning and "finetune_epochs (30)" in warning
    code, out, _ = run_main(capsys, "validate", RUN)
    assert "warning" not in out


# ---- closed pipes -------------------------------------------------------------------------------------------------

def test_a_closed_pipe_ends_quietly():
    result = subprocess.run(f"{sys.executable} -m archgraph summary {SEEDS / 'resnet_cifar.yaml'} --json | head -2; "
                            "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", cwd=ROOT,
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 2


def test_a_pipe_closed_before_a_long_output_ends_quietly():
    """More output than a pipe holds: the write itself fails, not only the final flush."""
    code = ("import sys; from archgraph.cli import main; "
            f"sys.exit(main(['validate'] + [{str(MLP)!r}] * 3000))")
    result = subprocess.run(f"{sys.executable} -c \"{code}\" | head -1; exit ${{PIPESTATUS[0]}}", shell=True,
                            executable="/bin/bash", cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0 and "Broken pipe" not in result.stderr and "Traceback" not in result.stderr
