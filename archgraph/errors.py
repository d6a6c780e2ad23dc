"""Domain errors, every one of them in this module. Every error names where it happened: the file, the node id, the
field or the rule.

The CLI turns any :class:`ArchgraphError` into a one-paragraph message and exit status 2.

==========================  =====================================================================================
:class:`ArchgraphError`     the base of every error on bad input
:class:`GraphError`         a graph is not valid (a reference, a shape, a size, the format)
:class:`YamlError`          a file is not acceptable YAML
:class:`RuleError`          a rewrite rule cannot apply (the graph is left untouched)
:class:`ConversionError`    a model cannot be imported (or a graph exported)
:class:`ConfigError`        a run file or a command-line value is wrong
:class:`HistoryError`       a run directory is incomplete or does not replay
:class:`DistributedError`   the processes of a distributed run disagree
:class:`PluginError`        an installed plugin cannot be loaded or takes a name already used
:class:`TrialFailed`        a sweep trial failed (not bad input: it carries the exit status)
==========================  =====================================================================================
"""
from __future__ import annotations

import re

#: characters a terminal acts on instead of showing: C0/C1 controls (escape sequences), DEL, and the Unicode
#: direction overrides; shown escaped wherever a message repeats user text
_UNSHOWN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown(text: str) -> str:
    """``text`` safe to print to a terminal: every control character (an escape sequence's ``\\x1b``, a carriage
    return, a bidi override) written as a Python escape; newlines and tabs are kept.

    >>> shown("node '\\x1b[31mred'")
    "node '\\\\x1b[31mred'"
    """
    return _UNSHOWN.sub(lambda m: ascii(m.group())[1:-1], str(text))


class ArchgraphError(Exception):
    """Base class of every error archgraph raises on bad input."""

    def __init__(self, message: str, *, file: str | None = None, node: str | None = None,
                 field: str | None = None, rule: str | None = None):
        self.message = message
        self.file = file
        self.node = node
        self.field = field
        self.rule = rule
        super().__init__(self.render())

    def render(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.rule:
            where.append(f"rule {self.rule}")
        if self.node:
            where.append(f"node '{self.node}'")
        if self.field:
            where.append(f"field '{self.field}'")
        prefix = ": ".join(where)
        return shown(f"{prefix}: {self.message}" if prefix else self.message)

    def with_file(self, file: str) -> "ArchgraphError":
        """Return the same error with the file name filled in (used by loaders)."""
        if self.file is None:
            self.file = str(file)
            self.args = (self.render(),)
        return self

    def __str__(self) -> str:
        return self.render()


class GraphError(ArchgraphError):
    """The graph is not valid: a reference, a shape, a size or the format is wrong."""


class YamlError(ArchgraphError):
    """The file is not acceptable YAML (syntax, duplicate key, unsafe tag, alias bomb)."""


class RuleError(ArchgraphError):
    """A rewrite rule cannot apply to this graph; the graph is left untouched."""


class ConversionError(ArchgraphError):
    """A model cannot be imported into the graph format (or a graph cannot be exported): the error names the op and
    the torch.fx node (``fx_node``) or graph node it cannot express."""

    def __init__(self, message: str, *, fx_node: str | None = None, **where: str | None) -> None:
        self.fx_node = fx_node
        super().__init__(message, **where)

    def render(self) -> str:
        text = super().render()
        return f"fx node '{self.fx_node}': {text}" if self.fx_node else text


class ConfigError(ArchgraphError):
    """A run configuration or command-line value is wrong."""


class PluginError(ArchgraphError):
    """An installed plugin (a Python entry point of the ``archgraph.rules`` or ``archgraph.methods`` group) cannot
    be loaded, or registers a name another rule or method already has."""


class HistoryError(ArchgraphError):
    """A run directory is missing a file, its log is malformed, or a version does not replay to its stored hash."""


class DistributedError(ArchgraphError):
    """The processes of a distributed run disagree (a decision, a rewrite, the weights)."""


class TrialFailed(Exception):
    """A sweep trial raised: the sweep stops (rerunning the command continues it). ``code`` is the exit status."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


__all__ = ["ArchgraphError", "GraphError", "YamlError", "RuleError", "ConversionError", "ConfigError", "HistoryError",
           "DistributedError", "PluginError", "TrialFailed"]
