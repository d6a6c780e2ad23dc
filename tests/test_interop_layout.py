"""The importer's house (issue 27, section 5): inside archgraph/interop no import circle (counting imports inside
functions too), no module writing another module's tables, no private name used across modules, small modules."""
import ast
from pathlib import Path

import networkx as nx
import pytest
from conftest import ROOT

INTEROP = ROOT / "archgraph" / "interop"
MUTATORS = {"update", "setdefault", "append", "extend", "insert", "pop", "popitem", "clear", "remove", "add",
            "discard", "__setitem__", "__delitem__"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(INTEROP.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST):
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _type_checking(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _bindings(name: str, path: Path):
    """(local name, archgraph module it names or None, imported attribute or None) of each import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for stmt in _imports(ast.parse(path.read_text())):
        if isinstance(stmt, ast.Import):
            for a in stmt.names:
                if a.name.startswith("archgraph"):
                    yield (a.asname or a.name.split(".")[0]), a.name, None
            continue
        if stmt.level:
            base = package.split(".")
            base = base[:len(base) - (stmt.level - 1)]
            target = ".".join(base + ([stmt.module] if stmt.module else []))
        else:
            target = stmt.module or ""
        if not target.startswith("archgraph"):
            continue
        for a in stmt.names:
            sub = f"{target}.{a.name}"
            if sub in MODULES or (INTEROP.parent.parent / (sub.replace(".", "/") + ".py")).exists() or \
                    (INTEROP.parent.parent / sub.replace(".", "/") / "__init__.py").exists():
                yield a.asname or a.name, sub, None
            else:
                yield a.asname or a.name, target, a.name


def test_no_import_circle_inside_interop():
    g = nx.DiGraph()
    for name, path in MODULES.items():
        g.add_node(name)
        for _, module, _ in _bindings(name, path):
            if module in MODULES and module != name and not name.startswith(module + "."):
                g.add_edge(name, module)
    cycles = list(nx.simple_cycles(g))
    assert not cycles, cycles[:5]


def _root_name(node: ast.AST):
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _writes(tree: ast.AST):
    """(line, written expression) of every assignment into an attribute or item, and every mutating call."""
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for t in targets:
            if isinstance(t, (ast.Attribute, ast.Subscript)):
                yield node.lineno, t
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
            yield node.lineno, node.func.value


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_writes_another_modules_tables(name):
    """A table belongs to its module: others call its functions (decorators, register_module) to add to it."""
    path = MODULES[name]
    imported = {local: (module, attr) for local, module, attr in _bindings(name, path)}
    found = []
    for line, target in _writes(ast.parse(path.read_text())):
        root = _root_name(target)
        if root in imported:
            module, attr = imported[root]
            if attr is None or attr.isupper() or attr.startswith("_"):   # a module, or a table imported by name
                found.append((line, ast.unparse(target)))
    assert not found, found


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_name_crosses_modules(name):
    """Between interop's modules (what they share is public: the importer's handlers import ``pair``, not
    ``_pair``)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    modules = {local for local, module, attr in _bindings(name, path) if attr is None and module in MODULES}
    found = [(a, module) for _, module, a in _bindings(name, path) if a and a.startswith("_") and
             not a.startswith("__") and module in MODULES]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules and \
                node.attr.startswith("_") and not node.attr.startswith("__"):
            found.append((f"{node.value.id}.{node.attr}", node.lineno))
    assert not found, found


def test_the_importer_is_a_package_of_small_modules():
    package = INTEROP / "importer"
    assert (package / "__init__.py").exists() and not (INTEROP / "importer.py").exists()
    sizes = {p.relative_to(package).as_posix(): len(p.read_text().splitlines()) for p in package.rglob("*.py")}
    assert len(sizes) >= 10 and max(sizes.values()) <= 500, sizes   # importer.py was 1,904 lines


def test_the_checks_find_what_they_look_for(tmp_path):
    """The walkers above see a write into another module's table and a private import (they can fail)."""
    src = "from . import table\nfrom .values import _secret\ntable._modules['x'] = 1\ntable.HANDLERS.update({})\n"
    path = tmp_path / "probe.py"
    path.write_text(src)
    bindings = list(_bindings("archgraph.interop.importer.probe", path))
    assert ("table", "archgraph.interop.importer.table", None) in bindings
    assert ("_secret", "archgraph.interop.importer.values", "_secret") in bindings
    assert [ast.unparse(t) for _, t in _writes(ast.parse(src))] == ["table._modules['x']", "table.HANDLERS"]
