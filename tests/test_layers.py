"""The package's layers: the graph layer works with torch blocked, imports form no cycle, the root stays small."""
import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import networkx as nx
import pytest
from conftest import ROOT
from rundir_fixture import steps_from_rules, write_run

import archgraph
from archgraph import rules

PACKAGE = ROOT / "archgraph"

TORCH_BLOCKED = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None          # any 'import torch' now fails
    import archgraph
    from archgraph import rules
    from archgraph.cli import main
    g = archgraph.load("examples/seeds/tiny_cnn.yaml")
    rw = archgraph.apply(g, rules.AddFilters(node="c1", count=2))
    assert rw.graph.nodes["c1"].out_channels == g.nodes["c1"].out_channels + 2 and rw.exact
    assert archgraph.loads(archgraph.dumps(rw.graph)) == rw.graph
    assert main(["validate", "examples/seeds/tiny_cnn.yaml"]) in (0, None)
    assert main(["schema", "-o", sys.argv[2]]) in (0, None)
    from archgraph.history.run import Run
    run = Run(sys.argv[1])
    last = archgraph.replay(sys.argv[1])
    assert last == archgraph.load(run.path / "versions" / f"{run.latest:04d}.yaml")
    assert main(["replay", sys.argv[1]]) in (0, None)
    assert "torch" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
    print("graph layer ok without torch")
""")


@pytest.fixture
def grown_run(tmp_path):
    seed = archgraph.load(ROOT / "examples/seeds/tiny_cnn.yaml")
    steps = steps_from_rules(seed, [rules.AddFilters(node="c1", count=2), rules.PruneChannels(node="c1", indices=[0])])
    return write_run(tmp_path / "run", seed, steps)


def test_graph_layer_works_with_torch_blocked(tmp_path, grown_run):
    result = subprocess.run([sys.executable, "-c", TORCH_BLOCKED, str(grown_run), str(tmp_path / "schemas")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "graph layer ok without torch" in result.stdout
    assert {p.name for p in (tmp_path / "schemas").iterdir()} == {"graph.schema.json", "run.schema.json"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _top_level_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The archgraph modules ``name`` imports at module level (``from . import x`` counts x when it is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for stmt in ast.parse(path.read_text()).body:
        if isinstance(stmt, ast.ImportFrom):
            if stmt.level:
                base = package.split(".")
                base = base[:len(base) - (stmt.level - 1)]
                target = ".".join(base + ([stmt.module] if stmt.module else []))
            else:
                target = stmt.module or ""
            if not target.startswith("archgraph"):
                continue
            for alias in stmt.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        elif isinstance(stmt, ast.Import):
            found.update(a.name for a in stmt.names if a.name in known)
    return {m for m in found if m in known and m != name}


def test_module_level_imports_form_no_cycle():
    mods = _modules()
    g = nx.DiGraph()
    for name, path in mods.items():
        g.add_node(name)
        for dep in _top_level_imports(name, path, set(mods)):
            if not name.startswith(dep + "."):  # a module may import its own package's __init__ names
                g.add_edge(name, dep)
    cycles = list(nx.simple_cycles(g))
    assert not cycles, cycles[:5]


def test_graph_core_imports_no_torch_side_module():
    """The pure core (graph, shapes, channels, plan, ops, rules, format, topology) never imports fx, interop,
    train or torch at module level."""
    mods = _modules()
    core = [m for m in mods if m.split(".")[1:2] and m.split(".")[1] in
            {"graph", "shapes", "channels", "plan", "errors", "topology", "ops", "rules", "format"}]
    assert len(core) >= 10
    for name in core:
        source = mods[name].read_text()
        tree = ast.parse(source)
        for stmt in tree.body:
            if isinstance(stmt, ast.Import):
                assert not any(a.name.split(".")[0] == "torch" for a in stmt.names), name
            if isinstance(stmt, ast.ImportFrom):
                assert not (stmt.module or "").startswith("torch"), name
        for dep in _top_level_imports(name, mods[name], set(mods)):
            assert dep.split(".")[1] not in {"fx", "interop", "train", "history", "cli"}, (name, dep)


def test_package_root_holds_at_most_ten_modules():
    root_modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root_modules) <= 10, root_modules
    # no module named like the public function it defines
    import archgraph
    for name in ("build", "prune", "transfer", "apply", "rewrite", "replay", "grow"):
        assert not (PACKAGE / f"{name}.py").exists(), name
        assert callable(getattr(archgraph, name))


def test_few_in_function_imports_of_archgraph_outside_cli():
    """Imports are ordinary top-level imports; the few inside functions (outside cli/, whose commands load their
    modules on demand) each say why on their line."""
    found = []
    for name, path in _modules().items():
        if name.startswith("archgraph.cli"):
            continue
        lines = path.read_text().splitlines()
        for stmt in ast.walk(ast.parse(path.read_text())):
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(stmt):
                    if isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or "").startswith(
                            "archgraph")):
                        found.append((name, inner.lineno, lines[inner.lineno - 1]))
                    elif isinstance(inner, ast.Import) and any(a.name.startswith("archgraph") for a in inner.names):
                        found.append((name, inner.lineno, lines[inner.lineno - 1]))
    assert len(found) <= 10, found
    unexplained = [f for f in found if "#" not in f[2]]
    assert not unexplained, unexplained
