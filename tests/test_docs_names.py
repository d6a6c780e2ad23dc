"""The docs name only what exists, and everything that exists is named in the docs: every CLI command, rule, op,
method and run-file field written in README.md and docs/*.md is checked against the live registries (the CLI
parser, ``RULES``, ``OPS``, the run file's models), and each of those appears in the docs. New names need no change
here: they are read from the registries."""
from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from archgraph import rules as rule_module
from archgraph.cli import parser
from archgraph.ops.registry import OPS
from archgraph.rules import RULES

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TEXT = {p.name: p.read_text() for p in FILES}
ALL = "\n".join(TEXT.values())


#: a paragraph saying what is not there (yet) names it on purpose
ABSENT = re.compile(r"not in this version|not yet|no longer")


def code_of(text: str) -> list[str]:
    """The code in a Markdown text: fenced blocks (line by line) and inline spans (but those of a paragraph that
    says what is absent)."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    outside = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
    paragraphs = [p for p in re.split(r"\n\s*\n", outside) if not ABSENT.search(" ".join(p.split()))]
    return [line for b in blocks for line in b.splitlines()] + re.findall(r"`([^`\n]+)`", "\n\n".join(paragraphs))


CODE = [c for text in TEXT.values() for c in code_of(text)]
WORDS = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", "\n".join(CODE)))


def commands() -> set[str]:
    sub = next(a for a in parser()._actions if a.dest == "command")
    return set(sub.choices)


def method_settings() -> dict[str, type[BaseModel]]:
    from archgraph.train.config import METHOD_SETTINGS
    return {m.model_fields["name"].default: m for m in METHOD_SETTINGS}


def run_sections() -> dict[str, dict[str, object]]:
    """``{section: {field: info}}`` of the run file: its top-level fields and those of data, schedule and every
    method (``method`` holds the union of the methods' fields)."""
    from archgraph.train.config import RunConfig
    out: dict[str, dict[str, object]] = {"": dict(RunConfig.model_fields)}
    for name, info in RunConfig.model_fields.items():
        models = _models(info.annotation)
        if models:
            out[name] = {f: i for m in models for f, i in m.model_fields.items()}
    return out


def _models(annotation) -> list[type[BaseModel]]:
    """The pydantic models a field's type holds (the members of a union, through Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


# ---- what the docs name exists ----------------------------------------------------------------------------------

def test_every_command_the_docs_run_exists():
    named = set()
    for code in CODE:
        match = re.match(r"^\s*(?:\$ )?(?:python -m )?archgraph ([a-z_]+)\b", code)
        if match:
            named.add(match.group(1))
    assert named, "no archgraph command found in the docs"
    assert named <= commands(), f"the docs run commands that do not exist: {sorted(named - commands())}"


def test_every_rule_the_docs_name_exists():
    named = set()
    for code in CODE:
        match = re.match(r"^\s*archgraph apply \S+ ([a-z_]+)\b", code)
        if match and match.group(1) != "RULE":
            named.add(match.group(1))
    missing = {n for n in named if n not in RULES}
    classes = set(re.findall(r"\brules\.([A-Z][A-Za-z]+)\(", "\n".join(CODE)))
    missing |= {c for c in classes if not hasattr(rule_module, c)}
    headings = set(re.findall(r"^### ([a-z_]+) — ", TEXT["rules.md"], flags=re.M))
    missing |= headings - set(RULES)
    assert named and classes and headings
    assert not missing, f"the docs name rules that do not exist: {sorted(missing)}"


def test_every_op_the_docs_use_exists():
    named = set(re.findall(r"[{,]\s*op: ([a-z_0-9]+)", "\n".join(CODE)))
    assert named and named <= set(OPS), f"the docs use ops that do not exist: {sorted(named - set(OPS))}"


def test_every_method_the_docs_run_exists():
    code = "\n".join(CODE)
    named = set(re.findall(r"method:\s*\{\s*name:\s*([a-z_]+)", code))
    named |= set(re.findall(r"method:\s*\n\s+name:\s*([a-z_]+)", "\n".join(TEXT.values())))
    named |= set(re.findall(r"method\.name=([a-z_]+)", code))
    named |= {m.group(1) for c in CODE for m in [re.fullmatch(r"method: ([a-z_]+)", c)] if m}
    assert named and named <= set(method_settings()), \
        f"the docs run methods that do not exist: {sorted(named - set(method_settings()))}"


def test_every_run_file_field_the_docs_name_exists():
    sections = run_sections()
    # (an error message the docs quote names a misspelt field on purpose)
    quoted = "\n".join(c for c in CODE if "error" not in c)
    named = set(re.findall(r"\b(data|schedule|method)\.([a-z_]+)\b(?!\()", quoted))
    missing = {f"{s}.{f}" for s, f in named if f not in sections[s]}
    assert named and not missing, f"the docs name run-file fields that do not exist: {sorted(missing)}"


# ---- what exists is named in the docs ---------------------------------------------------------------------------

def test_every_command_is_in_the_docs():
    documented = {m.group(1) for code in CODE for m in [re.match(r"^\s*archgraph ([a-z_]+)\b", code)] if m}
    assert commands() <= documented, f"commands the docs never show: {sorted(commands() - documented)}"


def test_every_rule_is_in_the_rules_doc():
    missing = [name for name in RULES if f"`{name}" not in TEXT["rules.md"] and f"### {name}" not in TEXT["rules.md"]]
    assert not missing, f"rules docs/rules.md never names: {missing}"


def test_every_op_is_in_the_docs():
    missing = sorted(op for op in OPS if f"`{op}`" not in ALL and f"op: {op}" not in ALL)
    assert not missing, f"ops the docs never name: {missing}"


def test_every_method_is_in_the_docs():
    missing = sorted(m for m in method_settings() if f"`{m}`" not in ALL and f"name: {m}" not in ALL)
    assert not missing, f"methods the docs never name: {missing}"


@pytest.mark.parametrize("section", ["", "data", "schedule", "method"])
def test_every_run_file_field_is_in_the_docs(section):
    fields = run_sections()[section]
    missing = sorted(f for f in fields if f not in WORDS and f != "name")
    assert not missing, f"run-file fields of {section or 'the top level'} the docs never name: {missing}"
