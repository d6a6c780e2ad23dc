"""Rewrite rules: each a frozen pydantic model whose fields are its arguments; ``rule.apply(graph)`` returns a
:class:`Rewrite` (new graph + transfer plan) and never touches the old graph. A rule that cannot apply raises
:class:`archgraph.errors.RuleError` naming the rule, the node and the reason. Other packages add rules through the
``archgraph.rules`` entry point group (:mod:`archgraph.plugins`).

>>> from archgraph import rules
>>> sorted(rules.RULES)[:3]
['add_experts', 'add_filters', 'add_heads']
"""
from __future__ import annotations

from .. import plugins as _plugins
from .base import RULES, Rewrite, Rule, decode, encode, parse, register

# the import order is the order RULES (and `apply --help`) list the rules in
# isort: off
from .widen import AddFilters, SplitFilters, exact_form
from .prune import PruneChannels
from .deepen import InsertBlock, InsertLayer
from .collapse import CollapseLayer, DeleteNode
from .heads import AddHeads, PruneHeads
from .stack import StackBlock
from .experts import AddExperts, PruneExperts
# isort: on

# rules of other packages (entry point group ``archgraph.rules``), so apply, run files and replay all know them
_plugins.load("archgraph.rules")

__all__ = ["RULES", "Rewrite", "Rule", "decode", "encode", "parse", "register", "AddFilters", "SplitFilters",
           "PruneChannels", "InsertLayer", "InsertBlock", "DeleteNode", "CollapseLayer", "AddHeads", "PruneHeads",
           "StackBlock", "AddExperts", "PruneExperts", "exact_form"]
