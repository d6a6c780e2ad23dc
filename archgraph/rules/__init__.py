"""Rewrite rules: each a frozen pydantic model whose fields are its arguments; ``rule.apply(graph)`` returns a
:class:`Rewrite` (new graph + transfer plan) and never touches the old graph. A rule that cannot apply raises
:class:`archgraph.errors.RuleError` naming the rule, the node and the reason.

>>> from archgraph import rules
>>> sorted(rules.RULES)[:3]
['add_experts', 'add_filters', 'add_heads']
"""
from __future__ import annotations

from .base import RULES, Rewrite, Rule, decode, encode, parse
from .widen import AddFilters, SplitFilters
from .prune import PruneChannels
from .deepen import InsertBlock, InsertLayer
from .collapse import CollapseLayer, DeleteNode
from .heads import AddHeads, PruneHeads
from .widen import exact_form
from .stack import StackBlock
from .experts import AddExperts, PruneExperts

__all__ = ["RULES", "Rewrite", "Rule", "decode", "encode", "parse", "AddFilters", "SplitFilters", "PruneChannels",
           "InsertLayer", "InsertBlock", "DeleteNode", "CollapseLayer", "AddHeads", "PruneHeads", "StackBlock", "AddExperts", "PruneExperts",
           "exact_form"]
