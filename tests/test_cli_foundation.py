"""The foundation commands: validate, summary, init, render and their --help, through ``python -m archgraph``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, SEEDS
from safetensors import safe_open
from safetensors.torch import load_file

import archgraph
from archgraph.cli import main, parser

TINY = ROOT / "examples" / "seeds" / "tiny_cnn.yaml"
RESNET = ROOT / "examples" / "seeds" / "resnet_cifar.yaml"
BAD = ROOT / "tests" / "malformed" / "dangling_reference.yaml"


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "archgraph", *map(str, args)], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def run_main(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# ---- python -m archgraph and --help ------------------------------------------------------------------------------

def test_python_dash_m_archgraph_runs():
    result = cli("--help")
    assert result.returncode == 0
    for command in ("validate", "summary", "init", "render"):
        assert command in result.stdout
    version = cli("--version")
    assert version.returncode == 0 and archgraph.__version__ in version.stdout


def commands() -> list[str]:
    sub = next(a for a in parser()._actions if a.dest == "command")
    return sorted(sub.choices)


@pytest.mark.parametrize("command", commands())
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert out.startswith(f"usage: archgraph {command}")


def test_no_command_is_a_usage_error():
    result = cli()
    assert result.returncode == 2 and "usage:" in result.stderr and "Traceback" not in result.stderr


# ---- validate ---------------------------------------------------------------------------------------------------

def test_validate_accepts_every_seed():
    result = cli("validate", *SEEDS)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(SEEDS)
    for seed, line in zip(SEEDS, lines):
        g = archgraph.load(seed)
        assert line.startswith(f"{seed}: ok") and f"{g.params:,} params" in line and f"{g.macs:,} MACs" in line


def test_validate_refuses_and_names_the_culprit():
    result = cli("validate", TINY, BAD)
    assert result.returncode == 2
    assert f"{TINY}: ok" in result.stdout  # files before the bad one are still reported
    err = " ".join(result.stderr.split())
    assert str(BAD) in err and "node 'c2'" in err and "field 'in'" in err and "Traceback" not in err


def test_validate_missing_file(tmp_path):
    result = cli("validate", tmp_path / "nope.yaml")
    assert result.returncode == 2 and "no such file" in result.stderr and "Traceback" not in result.stderr


# ---- summary ----------------------------------------------------------------------------------------------------

def test_summary_table(capsys):
    code, out, _ = run_main(capsys, "summary", RESNET)
    g = archgraph.load(RESNET)
    assert code == 0
    for nid in g.nodes:
        assert nid in out
    assert f"{g.params:,} params" in out and f"{g.macs:,} MACs" in out
    assert "32x16x16" in out  # b2_c1's output shape, written CxHxW


@pytest.mark.parametrize("seed", SEEDS, ids=[s.stem for s in SEEDS])
def test_summary_json(seed):
    result = cli("summary", seed, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    g = archgraph.load(seed)
    module = archgraph.build(g)
    assert info["params"] == g.params == sum(p.numel() for p in module.parameters())
    assert info["macs"] == g.macs
    assert info["shapes"] == {k: list(v) for k, v in g.shapes().items()}
    assert set(info["shapes"]) == set(g.inputs) | set(g.nodes)
    assert [layer["id"] for layer in info["layers"]] == list(g.nodes)
    assert sum(layer["params"] for layer in info["layers"]) == info["params"]
    assert sum(layer["macs"] for layer in info["layers"]) == info["macs"]
    assert info["outputs"] == {o: list(g.shapes()[o]) for o in g.outputs}


def test_summary_of_a_bad_file():
    result = cli("summary", BAD, "--json")
    assert result.returncode == 2 and result.stdout == "" and "node 'c2'" in result.stderr


# ---- init -------------------------------------------------------------------------------------------------------

def test_init_is_deterministic_and_keyed_by_node_id(tmp_path, capsys):
    a, b, c = tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "c.safetensors"
    for path, seed in ((a, 7), (b, 7), (c, 8)):
        code, out, _ = run_main(capsys, "init", RESNET, "--seed", seed, "-o", path)
        assert code == 0 and str(path) in out
    wa, wb, wc = load_file(a), load_file(b), load_file(c)
    g = archgraph.load(RESNET)
    expected_keys = set(archgraph.build(g).state_dict())
    assert set(wa) == set(wb) == set(wc) == expected_keys
    for key in wa:
        node, param = key.split(".")
        assert node in g.nodes and param
        assert torch.equal(wa[key], wb[key]), key
    assert a.read_bytes() == b.read_bytes()
    assert any(not torch.equal(wa[k], wc[k]) for k in wa if wa[k].is_floating_point() and wa[k].std() > 0)
    # the weights are the ones build() makes with that seed, and they load into the built module strictly
    built = archgraph.build(g, seed=7)
    for key, tensor in built.state_dict().items():
        assert torch.equal(tensor, wa[key]), key
    archgraph.build(g, seed=0).load_state_dict(wa, strict=True)
    with safe_open(str(a), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["seed"] == "7" and len(meta["graph_sha256"]) == 64


def test_init_in_a_subprocess_matches_in_process(tmp_path):
    path = tmp_path / "w.safetensors"
    result = cli("init", TINY, "--seed", "3", "-o", path)
    assert result.returncode == 0, result.stderr
    weights = load_file(path)
    built = archgraph.build(archgraph.load(TINY), seed=3)
    assert all(torch.equal(t, weights[k]) for k, t in built.state_dict().items())


def test_init_refuses_a_non_safetensors_output(tmp_path):
    result = cli("init", TINY, "-o", tmp_path / "w.pt")
    assert result.returncode == 2 and ".safetensors" in result.stderr and not (tmp_path / "w.pt").exists()


# ---- render -----------------------------------------------------------------------------------------------------

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' is not installed")


def test_render_dot(tmp_path):
    out = tmp_path / "g.dot"
    result = cli("render", RESNET, "-o", out)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.startswith("digraph")
    g = archgraph.load(RESNET)
    for nid, node in g.nodes.items():
        assert f"\t{nid} [label=\"{nid}\n{node.op}" in text
        for src in node.inputs:
            assert f"{src} -> {nid}" in text


@needs_dot
def test_render_svg(tmp_path):
    out = tmp_path / "g.svg"
    result = cli("render", RESNET, "-o", out)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "<svg" in text and text.rstrip().endswith("</svg>")
    for nid in archgraph.load(RESNET).nodes:
        assert f">{nid}</text>" in text
    assert "16x32x32" in text  # output shapes are drawn


@needs_dot
def test_render_png(tmp_path):
    out = tmp_path / "g.png"
    result = cli("render", TINY, "-o", out)
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_render_refuses_unknown_format(tmp_path):
    result = cli("render", TINY, "-o", tmp_path / "g.bmp")
    assert result.returncode == 2 and ".bmp" in result.stderr and "Traceback" not in result.stderr


def test_unwritable_output_is_a_message_not_a_traceback(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = cli("render", TINY, "-o", blocker / "g.dot")
    assert result.returncode == 2 and str(blocker / "g.dot") in result.stderr and "Traceback" not in result.stderr
