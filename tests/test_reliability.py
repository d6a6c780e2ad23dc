"""Reliability and security (issue 26): each test closes a class of fault, not one case.

* generated code: nothing from a graph file reaches exported Python except as an escaped literal;
* run folders: resume only a run, never delete what a run did not write, never write through a link, one writer;
* output folders: written as one unit, a full disk named as such.
"""
import importlib.util
import os
import sys

import pytest

import archgraph
from archgraph.interop.export import export_python

HOSTILE_NAMES = [
    'x"""+str(__import__("os").system("touch PWNED"))+"""',
    "x'''+str(__import__('os').system('touch PWNED'))+'''",
    'a\\"""\nimport os; os.system("touch PWNED")\n"""',
    "<net> javascript:alert(1) \x1b[31mred\x1b[0m \u202e\u00e9\u4e2d",
    "None", "class", "self", "\\", "\r\n\"\"\"\\N{", "",
]

MLP = """
archgraph: 1
name: mlp
inputs: {x: [4]}
nodes:
  fc1: {op: linear, in: x, out_features: 3}
  act: {op: relu, in: fc1}
  fc2: {op: linear, in: act, out_features: 2}
outputs: [fc2]
"""


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_exported_python_with_a_hostile_graph_name_imports_without_running_it(tmp_path, monkeypatch, name):
    graph = archgraph.loads(MLP).model_copy(update={"name": name})
    path = tmp_path / "m.py"
    export_python(graph, path)
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location(f"hostile_{abs(hash(name))}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert not (tmp_path / "PWNED").exists()
    assert mod.GRAPH_NAME == name                       # the name survives, as data
    assert mod.__doc__.count('"') == 0 and "\\" not in mod.__doc__
    import torch
    (cls,) = [v for v in vars(mod).values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
              and v.__module__ == mod.__name__]
    assert cls.__name__.isidentifier() and cls.__name__.isascii()
    assert cls()(torch.zeros(1, 4)).shape == (1, 2)
