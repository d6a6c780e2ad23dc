"""Rules a user can add, and find: the rule registry refuses a name registered twice; ``archgraph rules``,
``archgraph methods`` and ``archgraph ops`` list the live registries with their fields; a package installed into a
throwaway venv contributes a rule through the ``archgraph.rules`` entry point group, usable from ``apply``."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from archgraph.cli import main
from archgraph.errors import PluginError
from archgraph.rules import RULES, Rule

ROOT = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
OFFLINE = ["--no-deps", "--no-build-isolation", "--no-index"]


def test_a_rule_name_registered_twice_is_refused():
    before = dict(RULES)
    with pytest.raises(PluginError, match="add_filters.*taken by archgraph.rules.widen.AddFilters"):
        class Widen(Rule):
            name = "add_filters"
    assert RULES == before


def _listed(capsys, command: str) -> dict:
    assert main([command, "--json"]) == 0
    return {e["name"]: e for e in json.loads(capsys.readouterr().out)}


def test_the_listings_read_the_live_registries_with_their_fields(capsys):
    from archgraph.ops.registry import OPS
    from archgraph.train.config import METHOD_SETTINGS
    rules = _listed(capsys, "rules")
    assert set(rules) == set(RULES)
    for name, cls in RULES.items():
        assert [f["name"] for f in rules[name]["fields"]] == list(cls.model_fields)
        assert rules[name]["kind"] == cls.kind and rules[name]["source"] == "archgraph"
    assert {"name": "count", "type": "int", "required": False, "default": 1, "description": ""} in \
        rules["add_filters"]["fields"]
    methods = _listed(capsys, "methods")
    assert set(methods) == {m.model_fields["name"].default for m in METHOD_SETTINGS}
    ops = _listed(capsys, "ops")
    assert set(ops) == set(OPS)
    conv = {f["name"]: f for f in ops["conv2d"]["fields"]}
    assert conv["out_channels"]["required"] and conv["bias"] == {"name": "bias", "type": "bool", "required": False,
                                                                 "default": True, "description": ""}
    assert ops["conv2d"]["family"] == "convolution"
    assert main(["rules"]) == 0 and "add_filters [kind: growth] [source: archgraph]" in capsys.readouterr().out


PLUGIN = '''
"""A tiny archgraph plugin: one rule, built on the public API."""
from typing import ClassVar

from archgraph.rules import AddFilters, Rewrite, Rule


class DoubleWidth(Rule):
    """Double the output channels of a conv2d or linear (the same function: new outgoing weights start at zero)."""

    name: ClassVar[str] = "double_width"
    node: str

    def apply(self, graph) -> Rewrite:
        self.need_node(graph, self.node)
        width = graph.shape(self.node)[0]
        done = AddFilters(node=self.node, count=width).apply(graph)
        return Rewrite(done.graph, graph, self, done.plan)
'''

METHOD_SETTINGS = '''
"""A tiny method's settings: plain data, nothing of archgraph.train imported."""
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict


class TinySettings(BaseModel):
    """Plain training, the learning rate scaled (a method from a plugin)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    strategy: ClassVar[str] = "tiny_strategy:TinyStrategy"
    name: Literal["tiny"] = "tiny"
    note: str = "hello"
'''

METHOD_STRATEGY = '''
from archgraph.train.strategies.base import Strategy


class TinyStrategy(Strategy):
    name = "tiny"
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "archgraph-tiny-plugin"
version = "0.1"

[project.entry-points."archgraph.rules"]
double_width = "tiny_rules"

[project.entry-points."archgraph.methods"]
tiny = "tiny_method:TinySettings"

[tool.setuptools]
py-modules = ["tiny_rules", "tiny_method", "tiny_strategy"]
'''


@pytest.mark.slow
def test_a_plugin_package_adds_a_rule_that_apply_uses_and_a_method_that_grow_runs(tmp_path):
    src = tmp_path / "plugin"
    src.mkdir()
    (src / "tiny_rules.py").write_text(textwrap.dedent(PLUGIN))
    (src / "tiny_method.py").write_text(textwrap.dedent(METHOD_SETTINGS))
    (src / "tiny_strategy.py").write_text(textwrap.dedent(METHOD_STRATEGY))
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    # a throwaway venv that sees this checkout and this venv's packages as plain paths (not its editable install)
    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "paths.pth").write_text("\n".join([str(ROOT), *deps]) + "\n")
    subprocess.run(PIP + ["install", *OFFLINE, "--target", str(site), str(src)], check=True, capture_output=True)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def cli(*argv):
        return subprocess.run([python, "-m", "archgraph", *argv], cwd=tmp_path, env=env, capture_output=True,
                              text=True)

    listed = cli("rules", "--json")
    assert listed.returncode == 0, listed.stderr
    rules = {e["name"]: e for e in json.loads(listed.stdout)}
    assert rules["double_width"]["source"] == "archgraph-tiny-plugin"
    assert [f["name"] for f in rules["double_width"]["fields"]] == ["node"]
    out = tmp_path / "wide"
    done = cli("apply", str(ROOT / "examples/seeds/tiny_cnn.yaml"), "double_width", "node=c2", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "double_width(node=c2)" in done.stdout and "function unchanged" in done.stdout
    graph = subprocess.run([python, "-c", f"import archgraph; print(archgraph.load({str(out / 'graph.yaml')!r})"
                                          ".nodes['c2'].out_channels)"], env=env, capture_output=True, text=True)
    assert graph.stdout.strip() == "16", graph.stderr
    # a typo in the rule's name still gets the closest name, the plugin's included
    typo = cli("apply", str(ROOT / "examples/seeds/tiny_cnn.yaml"), "double_widht", "node=c2", "-o",
               str(tmp_path / "typo"))
    assert typo.returncode == 2 and "did you mean 'double_width'" in typo.stderr
    # its method: listed with its settings, accepted by run files, run by grow
    methods = {e["name"]: e for e in json.loads(cli("methods", "--json").stdout)}
    assert methods["tiny"]["source"] == "archgraph-tiny-plugin"
    assert [f["name"] for f in methods["tiny"]["fields"]] == ["note"]
    run = tmp_path / "run.yaml"
    run.write_text(f"seed: {ROOT / 'examples/seeds/digits_cnn.yaml'}\n"
                   "data: {name: digits, limit: 128, test_limit: 64}\n"
                   "method: {name: tiny, note: hi}\nschedule: {epochs: 1, threads: 1}\n")
    assert cli("validate", str(run)).returncode == 0
    grown = cli("grow", str(run), "--out", str(tmp_path / "grown"), "--quiet")
    assert grown.returncode == 0, grown.stderr
    assert json.loads(grown.stdout.strip().splitlines()[-1])["versions"] == 1


def test_a_plugin_that_fails_to_load_is_warned_about_and_listed(monkeypatch, capsys):
    from importlib.metadata import EntryPoint

    from archgraph.format import plugins
    broken = EntryPoint(name="broken", value="no_such_module_here:Rule", group="archgraph.rules")
    monkeypatch.setattr(plugins, "entry_points", lambda group: [broken] if group == "archgraph.rules" else [])
    monkeypatch.setattr(plugins, "_LOADED", {})
    with pytest.warns(UserWarning, match="plugin 'broken'.*was not loaded: ModuleNotFoundError"):
        loaded = plugins.load("archgraph.rules")
    assert [(p.name, p.loaded) for p in loaded] == [("broken", None)] and "no_such_module_here" in loaded[0].error
    rules = _listed(capsys, "rules")
    assert "no_such_module_here" in rules["broken"]["error"] and set(rules) == set(RULES) | {"broken"}
