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
    from dataclasses import fields
    from typing import Callable, get_type_hints

    from archgraph.ops.opdef import RECORDS
    d = OPS[op]
    assert d.op == op and d.kind is KIND_BY_OP[op]
    # every record of every op is there and typed: its callables callable, its flags plain booleans
    for attr, record in RECORDS.items():
        facts = getattr(d, attr)
        assert type(facts) is record, attr
        hints = get_type_hints(record, globalns=vars(__import__("archgraph.ops.opdef", fromlist=["x"])))
        for f in fields(record):
            value = getattr(facts, f.name)
            if hints[f.name] is bool:
                assert isinstance(value, bool), f"{attr}.{f.name}"
            elif getattr(hints[f.name], "__origin__", None) is getattr(Callable, "__origin__", object()):
                assert callable(value), f"{attr}.{f.name}"
    s, c, t, b, r, e = d.sizes, d.coupling, d.traits, d.build, d.rewrite, d.export
    # exactly one way to build it
    assert [b.module is not None, b.function is not None, b.passthrough].count(True) == 1, op
    assert b.packing in PACKINGS
    assert re.fullmatch(r"#[0-9a-f]{6}", e.colour), "render: a fill colour"
    if t.weighted:
        # identity_fill: how an inserted layer of this op starts as the identity (None: it cannot be inserted)
        assert c.width_field in d.kind.model_fields and r.identity_fill in (None, "dirac", "eye") and s.in_rank
        assert s.nonzero_macs is not OPS["relu"].sizes.nonzero_macs
    else:
        assert not t.conv
    # a source that is not weighted (an embedding) may still set its width
    assert c.width_field is None or c.width_field in d.kind.model_fields
    assert not t.block_activation or t.is_activation
    assert not t.running_stats or (t.is_norm and c.buffers)
    assert not r.residual or r.branch_end
    assert set(c.buffers) <= BUFFERS
    if b.module is None:
        assert not e.python and not c.buffers, "only modules have export constructors and buffers"
    else:
        assert e.python, "export: the constructor of every module class it builds"


def test_flat_fact_names_read_the_records():
    """``OPS[op].weighted`` is ``OPS[op].traits.weighted``; ``.channels`` is the channel role; a typo raises."""
    from archgraph.ops.opdef import FLAT
    d = OPS["conv2d"]
    for name, (attr, field) in FLAT.items():
        assert getattr(d, name) is getattr(getattr(d, attr), field), name
    assert d.channels is d.coupling.role
    with pytest.raises(AttributeError, match="weigthed"):
        d.weigthed


def test_every_family_module_holds_its_kinds_beside_their_entries():
    from archgraph.ops.families import FAMILIES
    seen = []
    for family in FAMILIES:
        for d in family.DEFS:
            assert d.kind.__module__ == family.__name__, f"{d.op}: its spec model lives in {d.kind.__module__}"
            seen.append(d.op)
    assert sorted(seen) == sorted(OPS)


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
    assert {type(build(g).n)} < {resolve(c) for c in OPS["layernorm"].export.python}


# ---- importer coverage ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_says_how_it_is_imported(op):
    from archgraph.fx.torchnames import resolve, try_resolve
    from archgraph.interop.importer import handlers
    table = handlers()
    i = OPS[op].imports
    assert i.modules or i.functions or i.methods or i.via or i.unsupported, \
        "import: torch names, the pattern it comes from, or why it cannot be imported yet"
    assert not (i.unsupported and (i.modules or i.functions or i.methods or i.via))
    for cls in i.modules:
        assert table.modules[resolve(cls)] is not None
    for name in i.functions:
        target = try_resolve(name) if name.startswith("torchvision.") else resolve(name)
        assert target is None or target in table.functions, name
    for name in i.methods:
        assert name in table.methods


def test_import_table_holds_registry_ops_and_registered_handlers_only():
    """Every key of the merged table is an import the op registry names, or one a handler module registered by
    name (a view, a composition, a class kept whole): nothing else writes into it."""
    from archgraph.fx.torchnames import resolve, try_resolve
    from archgraph.interop.importer import handlers
    from archgraph.interop.importer import table as handler_table
    merged = handlers()
    explicit_modules = {k for k in handler_table._modules if not isinstance(k, str)}
    assert set(merged.modules) == {resolve(c) for d in DEFS for c in d.imports.modules} | explicit_modules
    named = {try_resolve(f) for d in DEFS for f in d.imports.functions} - {None}
    explicit = {try_resolve(k) if isinstance(k, str) else k for k in handler_table._functions} - {None}
    assert set(merged.functions) == named | explicit
    assert set(merged.methods) == {m for d in DEFS for m in d.imports.methods} | set(handler_table._methods)
    assert set(handler_table._op_modules) <= set(OPS) and set(handler_table._op_functions) <= set(OPS)


def test_a_key_registered_twice_is_an_error():
    from archgraph.interop.importer import method
    from archgraph.interop.importer import table as handler_table
    assert "permute" in handler_table._methods
    with pytest.raises(ValueError, match="two handlers"):
        method("permute")(lambda c, n, x, *dims: x)
    assert handler_table._methods["permute"].__module__.endswith("handlers.views")


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
    assert op_name_comparisons() == [], "ask the registry (OPS[node.op].traits.weighted, ...) instead"


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
    assert OPS["conv2d"].rewrite.resize(conv, 6) == {"out_channels": 6}
    assert OPS["conv2d"].rewrite.resize(dw, 6) == {"out_channels": 6, "groups": 6}
    assert OPS["linear"].rewrite.resize(fc, 2) == {"out_features": 2}
    assert OPS["relu"].rewrite.nonneg(None, [False]) and not OPS["gelu"].rewrite.nonneg(None, [True])
    assert OPS["relu"].rewrite.identity(None, [True]) and not OPS["relu"].rewrite.identity(None, [False])
    assert OPS["add"].rewrite.nonneg(None, [True, True]) and not OPS["add"].rewrite.nonneg(None, [True, False])
    assert OPS["layernorm"].coupling.mixes(None, [(4,)]) and not OPS["batchnorm1d"].coupling.mixes(None, [(4,)])


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
    roles = {nid: OPS[n.op].coupling.role(n, g.input_shapes(nid)) for nid, n in g.nodes.items()}
    assert roles == {"a": "source", "b": "through", "c": "grouped", "f": "flatten"}
    assert set(roles.values()) <= set(ROLES)


def test_every_channel_role_has_one_handler():
    """Each role's analysis and realisation live in one handler (archgraph.channels.roles), keyed by role as OPS by
    op."""
    from archgraph.channels.roles import HANDLERS, Role
    assert set(HANDLERS) == set(ROLES)
    for role, handler in HANDLERS.items():
        assert isinstance(handler, Role) and handler.name == role
