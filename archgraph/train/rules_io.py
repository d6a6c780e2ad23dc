"""Rules as plain data, for checkpoints: ``{"rule": name, "args": {...}}`` and back."""
from __future__ import annotations


def rule_to_data(rule) -> dict:
    return {"rule": rule.name, "args": rule.args()}


def rule_from_data(data: dict):
    from ..engine import as_rule
    return as_rule(data)
