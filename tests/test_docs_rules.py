"""docs/rules.md runs: its Python blocks (a trailing comment on a print line is the exact output) and its
archgraph commands."""
from __future__ import annotations

import contextlib
import io
import re
import shlex

from conftest import ROOT

from archgraph.cli import main

DOC = (ROOT / "docs" / "rules.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S)


def test_python_examples_print_what_the_doc_says(monkeypatch):
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    checked = 0
    for block in blocks("python"):
        for line in block.splitlines():
            match = re.match(r"^(print\(.*\))\s+# (.+)$", line)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(match.group(1) if match else line, namespace)
            if match:
                assert out.getvalue().strip() == match.group(2).strip(), line
                checked += 1
    assert checked >= 10


def test_commands_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    commands = [line for block in blocks("sh") for line in block.splitlines() if line.startswith("archgraph ")]
    assert len(commands) >= 10
    for line in commands:
        argv = [a.replace("runs/", f"{tmp_path}/") for a in shlex.split(line)[1:]]
        assert main(argv) == 0, line
    capsys.readouterr()
