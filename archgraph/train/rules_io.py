"""Rules as plain data, for checkpoints: ``{"rule": name, "args": {...}}`` and back."""
from __future__ import annotations

from ..rules.base import as_rule


def rule_to_data(rule) -> dict:
    return {"rule": rule.name, "args": rule.args()}


def rule_from_data(data: dict):
    return as_rule(data)
