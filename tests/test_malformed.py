"""The malformed corpus: every file in tests/malformed/ is refused by ``archgraph validate`` with exit status 2 and a
one-paragraph message naming the file and the culprit, never a traceback.

Each file's first line says what the message must contain: ``# expect: A | B | C`` means every fragment A, B and C
appears in stderr (whitespace-normalised, since the CLI wraps long lines). Files that cannot carry a comment (an empty
file) are listed in SIDECAR. Timings are measured by benchmarks/malformed_timing.py, not asserted here.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

import archgraph
from archgraph.errors import ArchgraphError

CORPUS = ROOT / "tests" / "malformed"
FILES = sorted(CORPUS.glob("*.yaml"))
SIDECAR = {"empty_file.yaml": ["the file is empty"]}
MARKER = "archgraph_tag_executed"  # what python_object_apply_tag.yaml would create if its tag ran
HANG_GUARD_S = 30


def expectations(path) -> list[str]:
    if path.name in SIDECAR:
        return SIDECAR[path.name]
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8")
    assert first.startswith("# expect:"), f"{path.name} does not say what its error must mention"
    return [part.strip() for part in first.removeprefix("# expect:").split("|") if part.strip()]


def validate(path, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "archgraph", "validate", str(path)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)


def test_corpus_is_big_enough():
    assert len(FILES) >= 30


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_validate_refuses(path, tmp_path):
    result = validate(path, tmp_path)
    stderr = " ".join(result.stderr.split())
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    assert stderr.startswith("archgraph: error: ")
    assert str(path) in stderr, "the message must name the file"
    for fragment in expectations(path):
        assert fragment in stderr, f"{fragment!r} not in: {stderr}"
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_load_raises_a_domain_error_naming_the_file(path):
    with pytest.raises(ArchgraphError) as info:
        archgraph.load(path)
    assert info.value.file == str(path)
    assert info.value.node or info.value.field or "line" in info.value.message or info.value.message


def test_the_code_executing_tag_would_have_run(tmp_path):
    """Control for the marker check above: an unsafe loader really runs the tag and creates the marker, so its
    absence after ``archgraph validate`` means our loader did not run it."""
    path = CORPUS / "python_object_apply_tag.yaml"
    code = f"import yaml; yaml.unsafe_load(open({str(path)!r}).read())"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, timeout=HANG_GUARD_S)
    assert (tmp_path / MARKER).exists()
    (tmp_path / MARKER).unlink()
    assert validate(path, tmp_path).returncode == 2
    assert not (tmp_path / MARKER).exists()


def test_alias_bomb_really_is_a_bomb():
    """Control: the bombs expand to hundreds of millions of values (counted on the composed node graph, without
    building them), far past any sane seed."""
    for name in ("alias_bomb.yaml", "alias_bomb_mapping.yaml"):
        assert _count(yaml.compose((CORPUS / name).read_text())) > 10**7, name


def _count(node, memo=None) -> int:
    memo = {} if memo is None else memo
    if id(node) in memo:
        return memo[id(node)]
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_count(c, memo) for c in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_count(k, memo) + _count(v, memo) for k, v in node.value)
    memo[id(node)] = total
    return total


def test_duplicate_key_is_not_last_one_wins():
    """Control: a plain safe loader silently keeps the last duplicate, which is why the corpus must be refused."""
    data = yaml.safe_load((CORPUS / "duplicate_node_id.yaml").read_text())
    assert data["nodes"]["c1"]["out_channels"] == 8
