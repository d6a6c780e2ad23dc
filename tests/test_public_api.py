"""The top-level package: ``dir(archgraph)`` shows the lazily loaded names, every error class lives in
``archgraph.errors`` and is exported, environment workarounds are not public, and a CLI command whose module fails
to import fails loudly instead of vanishing from ``--help``."""
import ast
import importlib
import inspect
from pathlib import Path

import pytest

import archgraph
import archgraph.errors
from archgraph import cli

ROOT = Path(__file__).resolve().parents[1]


def test_dir_lists_every_public_name_and_each_resolves():
    names = dir(archgraph)
    assert set(archgraph.__all__) <= set(names)
    for lazy in ("build", "rewrite", "prune", "from_module", "grow", "replay"):
        assert lazy in names and callable(getattr(archgraph, lazy))


def test_environment_workarounds_are_not_public():
    assert "import_torchvision" not in archgraph.__all__ and "import_torchvision" not in dir(archgraph)
    with pytest.raises(AttributeError):
        archgraph.import_torchvision


def test_every_error_class_is_in_archgraph_errors_and_exported():
    """No module of the package defines an exception class of its own; each is in archgraph.errors, in its __all__
    and exported from archgraph."""
    defined = []
    for path in (ROOT / "archgraph").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception")) or b.id == "Exception")
                    for b in node.bases):
                defined.append((path.relative_to(ROOT).as_posix(), node.name))
    assert defined and all(path == "archgraph/errors.py" for path, _ in defined), defined
    classes = {n for n, c in vars(archgraph.errors).items() if inspect.isclass(c) and issubclass(c, Exception)}
    assert {name for _, name in defined} == classes == set(archgraph.errors.__all__)
    for name in classes:
        assert getattr(archgraph, name) is getattr(archgraph.errors, name) and name in archgraph.__all__


def test_every_cli_command_module_imports_and_registers():
    sub = next(a for a in cli.parser()._actions if a.dest == "command")
    assert len(sub.choices) == len(cli.COMMANDS)
    for name in cli.COMMANDS:
        assert callable(importlib.import_module(f"archgraph.cli.{name}").register)


def test_a_command_module_that_fails_to_import_fails_the_cli_loudly(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, "no_such_command"])
    with pytest.raises(ModuleNotFoundError, match="no_such_command"):
        cli.parser()
