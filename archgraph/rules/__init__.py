"""Rewrite rules: each a frozen pydantic model whose fields are its arguments; ``rule.apply(graph)`` returns a
:class:`Rewrite` (new graph + transfer plan) and never touches the old graph. A rule that cannot apply raises
:class:`archgraph.errors.RuleError` naming the rule, the node and the reason. Other packages add rules through the
``archgraph.rules`` entry point group (:mod:`archgraph.format.plugins`).

>>> from archgraph import rules
>>> sorted(rules.RULES)[:3]
['add_experts', 'add_filters', 'add_heads']
"""
from __future__ import annotations

from ..format import plugins as _plugins
from .base import RULES, Edit, Rewrite, Rule, decode, encode, parse, register
from .collapse import CollapseLayer, DeleteNode
from .deepen import InsertBlock, InsertLayer
from .experts import AddExperts, PruneExperts
from .heads import AddHeads, PruneHeads
from .prune import PruneChannels
from .stack import StackBlock
from .widen import AddFilters, SplitFilters, exact_form

# the order RULES (and `apply --help`) list the built-in rules in, whatever order their modules were imported in
_LISTED = ("add_filters", "split_filters", "prune_channels", "insert_layer", "insert_block", "delete_node",
           "collapse_layer", "add_heads", "prune_heads", "stack_block", "add_experts", "prune_experts")
for _name in sorted(RULES, key=lambda n: _LISTED.index(n) if n in _LISTED else len(_LISTED)):
    RULES[_name] = RULES.pop(_name)

# rules of other packages (entry point group ``archgraph.rules``), so apply, run files and replay all know them
_plugins.load("archgraph.rules")

__all__ = ["RULES", "Edit", "Rewrite", "Rule", "decode", "encode", "parse", "register", "AddFilters", "SplitFilters",
           "PruneChannels", "InsertLayer", "InsertBlock", "DeleteNode", "CollapseLayer", "AddHeads", "PruneHeads",
           "StackBlock", "AddExperts", "PruneExperts", "exact_form"]
