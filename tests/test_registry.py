"""Every op of the format has every entry of the per-op registry (build, export, import and picture included),
the registry matches the spec union, and no code outside ``archgraph/ops/`` compares an op with a literal name."""
import ast
import re
from pathlib import Path

import pytest

from archgraph.ops.registry import BUFFERS, DEFS, OPS, PACKINGS, ROLES, WIDTH_FIELDS, channel_width
from archgraph.ops.spec import KIND_BY_OP, NODE_KINDS


def test_registry_covers_exactly_the_spec_ops():
    assert set(OPS) == set(KIND_BY_OP)
    assert len(NODE_KINDS) == len(KIND_BY_OP)


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_has_every_entry(op):
    d = OPS[op]
    assert d.op == op and d.kind is KIND_BY_OP[op]
    for name in ("shape", "channels", "layout", "params", "macs", "nonzero_macs", "resize", "nonneg", "identity",
                 "mixes"):
        assert callable(getattr(d, name)), name
    # exactly one way to build it
    assert [d.module is not None, d.function is not None, d.passthrough].count(True) == 1, op
    assert d.packing in PACKINGS
    assert re.fullmatch(r"#[0-9a-f]{6}", d.colour), "render: a fill colour"
    for flag in ("weighted", "conv", "shifts_zero", "is_norm", "running_stats", "is_activation", "block_activation", "is_pool",
                 "is_dropout", "residual", "branch_end", "passthrough"):
        assert isinstance(getattr(d, flag), bool), flag
    if d.weighted:
        # identity_fill: how an inserted layer of this op starts as the identity (None: it cannot be inserted)
        assert d.width_field in d.kind.model_fields and d.identity_fill in (None, "dirac", "eye") and d.in_rank
        assert d.nonzero_macs is not OPS["relu"].nonzero_macs
    else:
        assert not d.conv
    # a source that is not weighted (an embedding) may still set its width
    assert d.width_field is None or d.width_field in d.kind.model_fields
    assert not d.block_activation or d.is_activation
    assert not d.running_stats or (d.is_norm and d.buffers)
    assert not d.residual or d.branch_end
    assert set(d.buffers) <= BUFFERS
    if d.module is None:
        assert not d.python and not d.buffers, "only modules have export constructors and buffers"
    else:
        assert d.python, "export: the constructor of every module class it builds"


def test_one_entry_per_op_written_once():
    import inspect
    from archgraph.ops.registry import OpDef
    assert len(DEFS) == len(OPS)
    # the op name comes from the spec kind; every fact is given by keyword
    params = inspect.signature(OpDef).parameters
    assert "op" not in params and all(p.kind is p.KEYWORD_ONLY for p in params.values())
    assert {"out_channels", "out_features", "embedding_dim"} <= set(WIDTH_FIELDS)


@pytest.mark.parametrize("op", sorted(OPS))
def test_built_modules_and_functions_have_their_entries(op):
    """The build makes only module classes the export can write, and picture labels work."""
    from strategies import example_node
    from archgraph.fx.builder import build
    from archgraph.fx.torchnames import resolve
    from archgraph.history.render import node_label
    from archgraph.interop.export import python_source
    g, nid = example_node(op)
    d = OPS[op]
    gm = build(g)
    modules = dict(gm.named_children())
    if d.module is not None:
        assert type(modules[nid]) in {resolve(c) for c in d.python}
        for name in d.buffers:
            # a buffer the node's layout names (a layernorm has its mask only with mask_ramp) is the module's
            assert name in dict(modules[nid].named_buffers()) or name not in d.layout(g.nodes[nid], g.input_shapes(nid))
    else:
        assert nid not in modules
    compile(python_source(g), op, "exec")
    assert op in node_label(g, nid)


def test_layernorm_builds_both_of_its_export_classes():
    from archgraph import loads
    from archgraph.fx.builder import build
    from archgraph.fx.torchnames import resolve
    g = loads("archgraph: 1\ninputs: {x: [3, 4, 4]}\nnodes: {n: {op: layernorm, in: x}}\noutputs: [n]\n")
    assert {type(build(g).n)} < {resolve(c) for c in OPS["layernorm"].python}


# ---- importer coverage ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_says_how_it_is_imported(op):
    from archgraph.fx.torchnames import resolve, try_resolve
    from archgraph.interop import importer
    i = OPS[op].imports
    assert i.modules or i.functions or i.methods or i.via or i.unsupported, \
        "import: torch names, the pattern it comes from, or why it cannot be imported yet"
    assert not (i.unsupported and (i.modules or i.functions or i.methods or i.via))
    for cls in i.modules:
        assert importer.MODULES[resolve(cls)] is not None
    functions = importer._functions()
    for name in i.functions:
        target = try_resolve(name) if name.startswith("torchvision.") else resolve(name)
        assert target is None or target in functions, name
    for name in i.methods:
        assert name in importer.METHODS


def test_import_tables_hold_only_registry_ops_and_views():
    from archgraph.fx.torchnames import resolve, try_resolve
    from archgraph.interop import importer
    assert set(importer.MODULES) == {resolve(c) for d in DEFS for c in d.imports.modules}
    named = {try_resolve(f) for d in DEFS for f in d.imports.functions} - {None}
    assert set(importer._functions()) == named | set(importer.VIEW_FUNCTIONS)
    assert set(importer.METHODS) == {m for d in DEFS for m in d.imports.methods} | set(importer.VIEW_METHODS)
    assert set(importer.MODULE_HANDLERS) <= set(OPS) and set(importer.FUNCTION_HANDLERS) <= set(OPS)


ROUND_TRIP = sorted(op for op, d in OPS.items() if not d.imports.via and not d.imports.unsupported and not d.passthrough
                    and op != "stochastic_depth")   # built as archgraph's own module; imported from torchvision


@pytest.mark.parametrize("op", ROUND_TRIP)
def test_build_imports_back_as_the_same_op(op):
    """Importing an op's own build gives the op back (every input of a multi-input op reads the one input)."""
    from strategies import EXAMPLE_NODES
    from archgraph.format.yaml_io import graph_from_data
    from archgraph.fx.builder import build
    from archgraph.interop.importer import from_module
    inputs, node = EXAMPLE_NODES[op]
    (first, shape), = list(inputs.items())[:1]
    node = {**node, "in": [first] * len(node["in"]) if isinstance(node["in"], list) else first}
    g = graph_from_data({"archgraph": 1, "name": op, "inputs": {first: shape}, "nodes": {"n": {"op": op, **node}},
                         "outputs": ["n"]})
    tokens = isinstance(shape, dict)
    back, _ = from_module(build(g), input_shape=shape["shape"] if tokens else shape,
                          vocab=shape["vocab"] if tokens else None)
    assert [n.op for n in back.nodes.values()] == [op]


# ---- no op-name comparisons outside ops/ ------------------------------------------------------------------------

PACKAGE = Path(__file__).parents[1] / "archgraph"


def _literals(expr) -> list[str]:
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return [expr.value]
    if isinstance(expr, (ast.Tuple, ast.List, ast.Set)):
        return [v for e in expr.elts for v in _literals(e)]
    return []


def _is_op_expr(expr) -> bool:
    """``node.op``, ``op``, ``self.activation``, ``graph.nodes[u].op``: an expression that holds an op name."""
    name = expr.attr if isinstance(expr, ast.Attribute) else expr.id if isinstance(expr, ast.Name) else ""
    return name in ("op", "activation", "norm") or name.endswith("_op")


def op_name_comparisons(root: Path = PACKAGE) -> list[str]:
    """``file:line: code`` of every comparison of an op with a literal op name, and of every module-level tuple of
    op names (a membership table), outside ``archgraph/ops/``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] == "ops":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                literal = any(v in OPS for s in sides for v in _literals(s))
                if literal and any(_is_op_expr(s) for s in sides):
                    found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                values = _literals(node.value)
                if values and all(v in OPS for v in values):
                    found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_op_name_comparisons_outside_ops():
    assert op_name_comparisons() == [], "ask the registry (OPS[node.op].weighted, ...) instead"


def test_the_scan_finds_op_name_comparisons(tmp_path):
    pkg = tmp_path / "archgraph"
    (pkg / "ops").mkdir(parents=True)
    (pkg / "ops" / "x.py").write_text('A = node.op == "conv2d"\n')
    (pkg / "y.py").write_text('NORMS = ("batchnorm2d", "layernorm")\n'
                              'ok = [n for n in g if n.op in ("conv2d", "linear")]\n'
                              'def f(self, op):\n    return self.init == "identity" or op != "add"\n')
    assert [f.split(":")[1] for f in op_name_comparisons(pkg)] == ["2", "4", "1"]


@pytest.mark.parametrize("op", sorted(OPS))
def test_rewrite_facts_answer(op):
    from strategies import example_node
    g, nid = example_node(op)
    node, ins = g.nodes[nid], g.input_shapes(nid)
    d = OPS[op]
    width = channel_width(g.shapes()[nid])
    changes = d.resize(node, width)
    assert isinstance(changes, dict)
    assert node.replace(**changes) == node  # resizing to its own width changes nothing
    flags = [True] * len(node.inputs)
    assert isinstance(d.nonneg(node, flags), bool) and isinstance(d.nonneg(node, [False] * len(flags)), bool)
    assert isinstance(d.identity(node, flags), bool)
    assert isinstance(d.mixes(node, ins), bool)
    if d.identity(node, [False] * len(flags)):
        assert g.shapes()[nid] == ins[0], "an identity keeps its input's shape"
    if d.module is not None and d.layout(node, ins):
        assert d.identity(node, flags) is False  # layers with weights are never assumed to be identities


def test_resize_sets_widths():
    from archgraph.ops import spec as S
    conv = S.Conv2d.model_validate({"in": "x", "out_channels": 4, "kernel_size": 3})
    dw = S.Conv2d.model_validate({"in": "x", "out_channels": 4, "kernel_size": 3, "groups": 4})
    fc = S.Linear.model_validate({"in": "x", "out_features": 4})
    assert OPS["conv2d"].resize(conv, 6) == {"out_channels": 6}
    assert OPS["conv2d"].resize(dw, 6) == {"out_channels": 6, "groups": 6}
    assert OPS["linear"].resize(fc, 2) == {"out_features": 2}
    assert OPS["relu"].nonneg(None, [False]) and not OPS["gelu"].nonneg(None, [True])
    assert OPS["relu"].identity(None, [True]) and not OPS["relu"].identity(None, [False])
    assert OPS["add"].nonneg(None, [True, True]) and not OPS["add"].nonneg(None, [True, False])
    assert OPS["layernorm"].mixes(None, [(4,)]) and not OPS["batchnorm1d"].mixes(None, [(4,)])


def test_roles_are_known():
    from archgraph import loads
    g = loads("""
archgraph: 1
inputs: {x: [4, 6, 6]}
nodes:
  a: {op: conv2d, in: x, out_channels: 4, kernel_size: 3, padding: 1}
  b: {op: conv2d, in: a, out_channels: 4, kernel_size: 3, padding: 1, groups: 4}
  c: {op: conv2d, in: b, out_channels: 8, kernel_size: 1, groups: 2}
  f: {op: flatten, in: c}
outputs: [f]
""")
    roles = {nid: OPS[n.op].channels(n, g.input_shapes(nid)) for nid, n in g.nodes.items()}
    assert roles == {"a": "source", "b": "through", "c": "grouped", "f": "flatten"}
    assert set(roles.values()) <= set(ROLES)
