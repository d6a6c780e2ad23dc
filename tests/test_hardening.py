"""Issue 12: what a new user broke in one afternoon. Each test here would have caught one of the faults."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from archgraph.cli import main

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


# ---- one output policy --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["apply", TINY, "add_filters", "node=c1", "count=2"],
    ["import", "torchvision:resnet18", "--input-shape", "3,32,32"],
], ids=["apply", "import"])
def test_a_non_empty_output_folder_is_refused_without_force(argv, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run_main(capsys, *argv, "-o", out)
    assert code == 2 and "not empty" in err and "--force" in err
    assert (out / "notes.txt").read_text() == "mine" and not (out / "graph.yaml").exists()
    if argv[0] == "apply":
        code, _, _ = run_main(capsys, *argv, "-o", out, "--force")
        assert code == 0 and (out / "graph.yaml").is_file()


def test_prune_refuses_a_non_empty_folder_and_has_a_quiet_mode_and_a_heading(tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    assert run_main(capsys, "init", TINY, "-o", weights)[0] == 0
    code, out, _ = run_main(capsys, "prune", TINY, "--weights", weights, "--ratio", "0.5", "-o", tmp_path / "p")
    assert code == 0 and "the pruned channels, as rules for 'archgraph apply':" in out
    code, _, err = run_main(capsys, "prune", TINY, "--weights", weights, "--ratio", "0.5", "-o", tmp_path / "p")
    assert code == 2 and "not empty" in err
    code, out, _ = run_main(capsys, "prune", TINY, "--weights", weights, "--ratio", "0.5", "-o", tmp_path / "p",
                            "--force", "--quiet")
    assert code == 0 and "prune_channels" not in out and "pruned " in out


@pytest.mark.parametrize("argv", [
    ["export", MLP, "--python", "{missing}/x.py"],
    ["export", MLP, "--onnx", "{missing}/x.onnx", "--weights", "{missing}/w.safetensors"],
    ["render", MLP, "-o", "{missing}/x.svg"],
    ["init", MLP, "-o", "{missing}/w.safetensors"],
    ["diff", MLP, MLP, "-o", "{missing}/d.svg"],
], ids=["python", "onnx", "render", "init", "diff"])
def test_a_file_output_in_a_missing_folder_is_refused_and_nothing_is_created(argv, tmp_path, capsys):
    missing = tmp_path / "nonexistent_dir"
    code, _, err = run_main(capsys, *[str(a).format(missing=missing) for a in argv])
    assert code == 2 and f"its folder '{missing}' does not exist" in err
    assert not missing.exists()


def test_render_without_a_suffix_says_so(tmp_path, capsys):
    code, _, err = run_main(capsys, "render", MLP, "-o", tmp_path / "noext")
    assert code == 2 and "has no suffix" in err and "'.'" not in err


def test_render_left_to_right_and_dpi(tmp_path, capsys):
    import struct
    resnet = SEEDS / "resnet_cifar.yaml"

    def size(*extra):
        out = tmp_path / f"r{len(extra)}.png"
        assert run_main(capsys, "render", resnet, "-o", out, *extra)[0] == 0
        return struct.unpack(">II", out.read_bytes()[16:24])

    tall = size()
    wide = size("--rankdir", "LR")
    assert tall[1] > tall[0] and wide[0] > wide[1]
    small = size("--rankdir", "LR", "--dpi", "24")
    assert small[0] < wide[0] / 2
    assert "rankdir=LR" in (tmp_path / "x.dot").read_text() if run_main(
        capsys, "render", resnet, "-o", tmp_path / "x.dot", "--rankdir", "LR")[0] == 0 else False


# ---- Rewrite.exact: a zero channel through a batchnorm is a constant -----------------------------------------------

CONCAT_BN = """
archgraph: 1
inputs: {x: [3, 8, 8]}
nodes:
  a: {op: conv2d, in: x, out_channels: 4, kernel_size: 3, padding: 1}
  b: {op: conv2d, in: x, out_channels: 4, kernel_size: 3, padding: 1}
  cat: {op: concat, in: [a, b]}
  bn: {op: batchnorm2d, in: cat}
  c: {op: conv2d, in: bn, out_channels: 2, kernel_size: 3, padding: 1}
outputs: [c]
"""


def test_pruning_a_zero_channel_before_a_batchnorm_is_not_claimed_exact():
    import torch

    import archgraph
    from archgraph import rules
    from archgraph.format.yaml_io import loads
    from archgraph.fx.builder import build
    from archgraph.fx.materialise import materialise
    g = loads(CONCAT_BN)
    m = build(g, seed=0).eval()
    with torch.no_grad():
        m.a.weight[1].zero_()
        m.a.bias[1] = 0.0  # channel 1 of 'a' (and of 'cat') carries zeros
        m.bn.running_mean.uniform_(0.5, 1.0)
        m.bn.bias.uniform_(0.5, 1.0)
    rw = archgraph.apply(g, rules.PruneChannels(node="a", indices=(1,)))
    assert not rw.exact
    assert "'bn' (batchnorm2d) maps a zero channel to a constant" in rw.plan.note
    m2 = materialise(rw, m, seed=0).eval()
    x = torch.randn(2, 3, 8, 8)
    assert not torch.allclose(m(x), m2(x), atol=1e-4)  # the note is right: the function changes
    # without the batchnorm, the same zero channel is removed exactly, and the note says the simple condition
    plain = loads(CONCAT_BN.replace("  bn: {op: batchnorm2d, in: cat}\n", "").replace("in: bn,", "in: cat,"))
    rw2 = archgraph.apply(plain, rules.PruneChannels(node="a", indices=(1,)))
    assert "carry zeros" in rw2.plan.note and "batchnorm" not in rw2.plan.note


# ---- dtypes, big networks ---------------------------------------------------------------------------------------

def test_float16_weights_stay_float16_through_apply_and_prune(tmp_path, capsys):
    import torch
    from safetensors.torch import load_file, save_file
    w32 = tmp_path / "w32.safetensors"
    assert run_main(capsys, "init", TINY, "-o", w32)[0] == 0
    w16 = tmp_path / "w16.safetensors"
    save_file({k: v.half() for k, v in load_file(w32).items()}, w16)
    assert run_main(capsys, "apply", TINY, "add_filters", "node=c1", "count=2", "--weights", w16,
                    "-o", tmp_path / "a")[0] == 0
    saved = load_file(tmp_path / "a" / "weights.safetensors").values()
    assert {v.dtype for v in saved if v.is_floating_point()} == {torch.float16}
    assert run_main(capsys, "prune", TINY, "--weights", w16, "--ratio", "0.25", "-o", tmp_path / "p")[0] == 0
    saved = load_file(tmp_path / "p" / "weights.safetensors").values()
    assert {v.dtype for v in saved if v.is_floating_point()} == {torch.float16}


def test_weights_from_an_endless_device_are_refused(capsys, tmp_path):
    code, _, err = run_main(capsys, "apply", TINY, "add_filters", "node=c1", "--weights", "/dev/zero",
                            "-o", tmp_path / "a")
    assert code == 2 and "/dev/zero" in err and "limit" in err


def test_diff_marks_the_batchnorms_that_lost_channels_too():
    import archgraph
    from archgraph import rules
    from archgraph.history.diff import PRUNED, diff_dot, graph_diff
    g = archgraph.load(SEEDS / "resnet_cifar.yaml")
    rw = archgraph.apply(g, rules.PruneChannels(node="b1_c1", indices=(0, 1)))
    d = graph_diff(g, rw.graph)
    bns = [n for n, node in g.nodes.items() if node.op == "batchnorm2d" and n in d.follows]
    assert bns and all(d.follows[n] == -2 for n in bns)
    dot = diff_dot(g, rw.graph)
    for n in bns:
        start = dot.index(f"\t{n} [")
        entry = dot[start:dot.index("\n\t", dot.index("fillcolor", start))]
        assert PRUNED in entry and "-2 channels" in entry


# ---- help ---------------------------------------------------------------------------------------------------------

def test_every_positional_argument_has_a_description_and_help_lines_are_short():
    import argparse

    from archgraph.cli import parser
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for action in p._actions:
            if not action.option_strings and action.dest != "help":
                assert action.help, f"{name}: positional {action.metavar or action.dest} has no description"
        text = p.format_help()
        assert max(len(line) for line in text.splitlines()) <= 120, name
    epilog = sub.choices["apply"].format_help()
    assert "op=none takes conv2d" in epilog and "bias=none" in epilog


def test_import_errors_carry_no_tracing_noise(tmp_path, capsys):
    code, _, err = run_main(capsys, "import", "torchvision:resnet18", "--input-shape", "1,64,64", "-o", tmp_path / "i")
    assert code == 2 and "fx node 'conv1'" in err and "to have 3 channels" in err
    assert "While executing" not in err and "tlparse" not in err and "Original traceback" not in err


@pytest.mark.parametrize("field, value", [("schedule.epochs", '"3"'), ("data.augment.flip", "1"),
                                          ("schedule.lr", "true")])
def test_run_files_are_strict_too(tmp_path, capsys, field, value):
    section, _, rest = field.partition(".")
    body = {"schedule": f"schedule: {{{rest}: {value}}}\n",
            "data": "data: {name: digits, augment: {flip: 1}}\n"}[section]
    run = tmp_path / "run.yaml"
    run.write_text(f"seed: {TINY}\nmethod: {{name: gnap}}\n" + body)
    code, _, err = run_main(capsys, "validate", run)
    assert code == 2 and field in err
