"""Rules as data: :class:`Rule` (a frozen pydantic model), :class:`Rewrite` (what applying one gives),
:class:`Edit` (what an edit of a network's state gives) and the registry :data:`RULES` that the CLI and the history
read rule names from; :func:`parse` reads what a user types,
:func:`encode`/:func:`decode` are the one codec of rules as JSON data (history, checkpoints, distributed runs).

>>> from archgraph import rules
>>> r = rules.parse("add_filters", {"node": "c1", "count": "4"})
>>> r.name, r.args()["count"]
('add_filters', 4)
"""
from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Container, Generic, Iterator, Mapping, Optional, TypeVar, Union

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import GraphError, PluginError, RuleError
from ..graph import Graph
from ..limits import check_width
from ..ops.registry import OPS
from ..plan import TransferPlan
from ..topology import topological_order

#: rule name -> rule class, filled as the rule modules (and the ``archgraph.rules`` plugins) are imported
RULES: dict[str, type["Rule"]] = {}


@dataclass(frozen=True)
class Rewrite:
    """The result of applying a rule: the new graph, the old one, the rule and the transfer plan."""

    graph: Graph
    old: Graph
    rule: "Rule"
    plan: TransferPlan

    @property
    def exact(self) -> bool:
        """Whether the new graph computes the same function as the old one (eval mode, any weights)."""
        return self.plan.exact

    @property
    def rules(self) -> tuple["Rule", ...]:
        """``(rule,)``: the rules applied, as every result of an edit names them (:class:`Edit`)."""
        return (self.rule,)

    def log(self) -> dict:
        """``{"rule": name, "args": {...}}``, the form the history records (:func:`encode`)."""
        return encode(self.rule)


State = TypeVar("State")


@dataclass(frozen=True, eq=False)   # compared by identity: the state holds tensors
class Edit(Generic[State]):
    """What an edit of a network gives (``archgraph.rewrite``, ``archgraph.prune``, ``archgraph.from_module``):
    the new ``graph``, the edited ``state`` in the form it was given (a module for a module, a state dict for a
    state dict; :func:`~archgraph.from_module` turns a module into a graph and its state dict), the ``rules``
    applied in order (replaying them on the old graph gives ``graph``; none for an import) and ``exact``: whether
    those rules keep the function (eval mode; ``True`` when there are none). It unpacks as the pair
    ``graph, state``, the shape these calls returned before they named what was done.

    >>> import archgraph
    >>> from archgraph import rules
    >>> g = archgraph.load("examples/seeds/mlp.yaml")
    >>> rw = archgraph.apply(g, rules.AddFilters(node="fc1", count=2))
    >>> e = Edit(rw.graph, {}, rw.rules, rw.exact)   # what a call editing a state dict {} would give
    >>> graph, state = e
    >>> graph is rw.graph, e.exact, e.log()[0]["rule"]
    (True, True, 'add_filters')
    >>> e
    Edit(graph='mlp', state=<0 tensors>, rules=[add_filters], exact=True)
    """

    graph: Graph
    state: State
    rules: tuple["Rule", ...] = ()
    exact: bool = True

    def __iter__(self) -> Iterator[Any]:
        return iter((self.graph, self.state))

    def __repr__(self) -> str:   # the state by its kind and size, not its tensors
        state = self.state
        size = f"{len(state)} tensors" if isinstance(state, Mapping) else type(state).__name__
        names = ", ".join(rule.name for rule in self.rules)
        return f"Edit(graph={self.graph.name!r}, state=<{size}>, rules=[{names}], exact={self.exact})"

    def log(self) -> list[dict[str, Any]]:
        """The rules as the history records them (:func:`encode`), in the order they applied."""
        return [encode(rule) for rule in self.rules]


class Rule(BaseModel):
    """A graph rewrite. Subclasses set ``name`` and implement :meth:`apply`; the fields are the arguments."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: snake_case name used by the CLI and the history
    name: ClassVar[str] = ""
    #: "growth" or "prune": what a history event calls it
    kind: ClassVar[str] = "growth"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise _rule_error(type(self), data, err) from None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            register(cls)

    def args(self) -> dict[str, Any]:
        """Every argument, defaults included, as JSON-able data."""
        return self.model_dump(mode="json")

    def apply(self, graph: Graph) -> Rewrite:
        raise NotImplementedError

    def error(self, message: str, node: Optional[str] = None, field: Optional[str] = None) -> RuleError:
        return RuleError(message, rule=self.name, node=node, field=field)

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.args().items())
        return f"{self.name}({args})"

    # ---- helpers shared by the rules ------------------------------------------------------------------------
    def need_node(self, graph: Graph, node: str, field: str = "node", inputs_ok: bool = False) -> None:
        if node in graph.nodes or (inputs_ok and node in graph.inputs):
            return
        if node in graph.inputs:
            raise self.error(f"'{node}' is a graph input, not a node", node=node, field=field)
        known = list(graph.nodes) + (list(graph.inputs) if inputs_ok else [])
        match = difflib.get_close_matches(node, known, n=1)
        hint = f" (did you mean '{match[0]}'?)" if match else ""
        raise self.error(f"no node '{node}' in graph '{graph.name}'{hint}", node=node, field=field)


def register(cls: type["Rule"]) -> type["Rule"]:
    """Add a rule class to :data:`RULES` under its ``name`` (done when a :class:`Rule` subclass with a name is
    defined). A name another class already holds is refused; the same class defined again (a module reloaded)
    replaces itself.

    >>> class Widen(Rule):  # doctest: +ELLIPSIS
    ...     name = "add_filters"
    Traceback (most recent call last):
    ...
    archgraph.errors.PluginError: rule add_filters: the name is taken by archgraph.rules.widen.AddFilters; ...
    """
    held = RULES.get(cls.name)
    if held is not None and (held.__module__, held.__qualname__) != (cls.__module__, cls.__qualname__):
        raise PluginError(f"the name is taken by {held.__module__}.{held.__qualname__}; "
                          f"{cls.__module__}.{cls.__qualname__} must choose another", rule=cls.name)
    RULES[cls.name] = cls
    return cls


def parse(name: str, values: Mapping[str, Any]) -> Rule:
    """Make a rule from its name and CLI-style ``KEY=VALUE`` strings (or already typed values).

    Lists may be written ``1,2,3`` or ``[1, 2, 3]``; ``none`` means None. Raises :class:`RuleError` naming the rule
    and the field on an unknown rule, an unknown field or a bad value.

    >>> parse("prune_channels", {"node": "c1", "indices": "0,2"}).indices
    (0, 2)
    """
    cls = rule_class(name)
    data = {}
    for key, value in values.items():
        field = cls.model_fields.get(key)
        if field is None:
            match = difflib.get_close_matches(key, list(cls.model_fields), n=1)
            hint = f" (did you mean '{match[0]}'?)" if match else ""
            raise RuleError(f"unknown argument '{key}'{hint}; {name} takes: {', '.join(cls.model_fields)}",
                            rule=name, field=key)
        if value == "auto" and key in getattr(cls, "CONTEXT_DEFAULTS", {}):
            continue   # the default chosen from where the rule applies (insert_block's norm, activation)
        data[key] = _from_text(value, field.annotation) if isinstance(value, str) else value
    return validate(cls, data)


def rule_class(name: str, registry: Optional[Mapping[str, type[Rule]]] = None) -> type[Rule]:
    """The rule class called ``name`` (in :data:`RULES` or ``registry``); a :class:`RuleError` with the closest name
    otherwise."""
    registry = RULES if registry is None else registry
    cls = registry.get(name) if isinstance(name, str) else None
    if cls is None:
        match = difflib.get_close_matches(str(name), list(registry), n=1)
        hint = f" (did you mean '{match[0]}'?)" if match else ""
        raise RuleError(f"unknown rule '{name}'{hint}; rules: {', '.join(registry)}")
    return cls


# ---- the codec: a rule as JSON data -----------------------------------------------------------------------------

def encode(rule: Rule) -> dict[str, Any]:
    """``{"rule": name, "args": {...}}``, every argument as a JSON value: what the history logs, checkpoints hold
    and the processes of a distributed run agree on. :func:`decode` reads it back.

    >>> from archgraph import rules
    >>> encode(rules.PruneChannels(node="c1", indices=[0, 2]))
    {'rule': 'prune_channels', 'args': {'node': 'c1', 'indices': [0, 2]}}
    """
    return {"rule": rule.name, "args": rule.args()}


def decode(data: Mapping[str, Any], registry: Optional[Mapping[str, type[Rule]]] = None) -> Rule:
    """The rule :func:`encode` wrote. The arguments are JSON values validated as they are, never read as CLI text
    (a node called ``"none"`` stays a string; :func:`parse` is for what a user types).

    >>> from archgraph import rules
    >>> decode({"rule": "delete_node", "args": {"node": "none"}}).node
    'none'
    >>> decode(encode(rules.AddFilters(node="c1", count=2))) == rules.AddFilters(node="c1", count=2)
    True
    """
    if not isinstance(data, Mapping) or "rule" not in data:
        raise RuleError(f"a rule is {{\"rule\": name, \"args\": {{...}}}}, not {data!r}")
    args = data.get("args") or {}
    if not isinstance(args, Mapping):
        raise RuleError(f"the arguments of a rule are an object, not {args!r}", rule=str(data["rule"]))
    return validate(rule_class(data["rule"], registry), args)


def validate(cls: type[Rule], data: Mapping[str, Any]) -> Rule:
    """``cls(**data)`` with a :class:`RuleError` naming the rule and the field instead of pydantic's error."""
    try:
        return cls.model_validate(dict(data))
    except ValidationError as err:
        raise _rule_error(cls, data, err) from None


def _rule_error(cls: type[Rule], data: Mapping[str, Any], err: ValidationError) -> RuleError:
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first["loc"])
    node = data.get("node") or data.get("after")
    if first["type"] == "missing":
        message = "required argument is missing"
    elif first["type"] == "extra_forbidden":
        match = difflib.get_close_matches(loc, list(cls.model_fields), n=1)
        hint = f" (did you mean '{match[0]}'?)" if match else ""
        message = f"unknown argument '{loc}'{hint}; {cls.name} takes: {', '.join(cls.model_fields)}"
    else:
        message = first["msg"]
        if "input" in first and not isinstance(first["input"], dict):
            message += f" (got {first['input']!r})"
    return RuleError(message, rule=cls.name, node=node if isinstance(node, str) else None, field=loc or None)


def _from_text(text: str, annotation: Any) -> Any:
    """A CLI value: lists from ``a,b`` or ``[a, b]``, None from ``none``/``null``; the rest is left to pydantic."""
    stripped = text.strip()
    if stripped.lower() in ("none", "null", "~") and _allows_none(annotation):
        return None
    if _is_sequence(annotation):
        inner = stripped[1:-1] if stripped.startswith("[") and stripped.endswith("]") else stripped
        return [part.strip() for part in inner.split(",") if part.strip()]
    return stripped


def _allows_none(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        return True
    return any(typing.get_origin(a) in (list, tuple) for a in typing.get_args(annotation))


# ---- graph facts the rules share ------------------------------------------------------------------------------

def nonnegative(graph: Graph) -> dict[str, bool]:
    """Whether each input and node output is >= 0 for every input (ReLU outputs, pools of them, ...)."""
    flags = {name: False for name in graph.inputs}
    for nid in topological_order(graph):
        node = graph.nodes[nid]
        flags[nid] = bool(OPS[node.op].rewrite.nonneg(node, [flags[i] for i in node.inputs]))
    return flags


def fresh_id(graph_ids: Container[str], base: str) -> str:
    """``base`` or ``base_2``, ``base_3``, ... whichever is not taken (ids never start with ``_``)."""
    base = base.lstrip("_") or "n"
    if base not in graph_ids:
        return base
    for k in range(2, 1_000_000):
        candidate = f"{base}_{k}"
        if candidate not in graph_ids:
            return candidate
    raise RuleError(f"no free id near '{base}'")  # pragma: no cover


def rewire(nodes: dict, old: str, new: str, skip: frozenset = frozenset()) -> dict:
    """Nodes with every read of ``old`` replaced by ``new`` (nodes in ``skip`` are left alone)."""
    out = {}
    for nid, node in nodes.items():
        if nid not in skip and old in node.inputs:
            node = node.replace(inputs=[new if i == old else i for i in node.inputs])
        out[nid] = node
    return out


RuleLike = Union[Rule, Mapping[str, Any]]


def as_rule(rule: RuleLike) -> Rule:
    """A :class:`Rule`, or one made from a logged ``{"rule": name, "args": {...}}``."""
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, Mapping) and "rule" in rule:
        return decode(rule)
    raise TypeError(f"expected a rule (e.g. rules.AddFilters(...)) or {{'rule': name, 'args': {{...}}}}, "
                    f"got {type(rule).__name__}")


def apply(graph: Graph, rule: RuleLike) -> Rewrite:
    """Apply ``rule`` to ``graph``: the new graph and the transfer plan, no tensors touched.

    Raises :class:`~archgraph.errors.RuleError` (naming the rule, node and reason) when the rule cannot apply;
    ``graph`` is never changed.

    >>> import archgraph
    >>> from archgraph import rules
    >>> rw = archgraph.apply(archgraph.load("examples/seeds/mlp.yaml"), rules.AddFilters(node="fc1", count=8))
    >>> rw.graph.nodes["fc1"].out_features, rw.old.nodes["fc1"].out_features, rw.exact
    (40, 32, True)
    """
    rule = as_rule(rule)
    check_rule_sizes(rule)
    return rule.apply(graph)


def check_rule_sizes(rule: Rule) -> None:
    """Refuse a rule whose sizes (a width, a count of new channels, an index) are over the width limit before it
    builds anything (``insert_block width=1000000000`` would otherwise allocate its plan first); the new graph is
    then checked against every limit as a whole."""
    for key, value in rule.args().items():
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(v, int) and not isinstance(v, bool):
                try:
                    check_width(abs(v))
                except GraphError as err:
                    raise RuleError(err.message, rule=rule.name, field=key) from None
