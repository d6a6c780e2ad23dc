"""docs/format.md documents every op and every field of the format (so the tour cannot silently fall behind)."""
import re

from conftest import ROOT

from archgraph.ops.spec import NODE_KINDS

DOC = (ROOT / "docs" / "format.md").read_text()


def test_every_op_and_field_is_documented():
    missing = []
    for kind in NODE_KINDS:
        op = kind.model_fields["op"].default
        rows = [line for line in DOC.splitlines() if line.startswith(f"| `{op}` |")]
        if not rows:
            missing.append(op)
            continue
        for name in kind.model_fields:
            if name in ("op", "inputs"):
                continue
            if not any(f"`{name}`" in row for row in rows) and not re.search(rf"`{op}` \| as `", rows[0]):
                missing.append(f"{op}.{name}")
    assert not missing, missing


def test_schema_modeline_is_documented():
    assert "# yaml-language-server: $schema=" in DOC and "yaml.schemas" in DOC
