"""Rules and methods from other packages, through Python entry points.

A package contributes by declaring entry points in its ``pyproject.toml``::

    [project.entry-points."archgraph.rules"]
    double_width = "my_rules"                  # a module whose Rule subclasses register themselves on import

    [project.entry-points."archgraph.methods"]
    my_method = "my_methods:MySettings"        # the method's settings model (see :func:`methods`)

A method's settings model is a pydantic model with ``name: Literal["my_method"] = "my_method"`` and a class
attribute ``strategy: ClassVar[str] = "my_methods_impl:MyStrategy"`` naming its
:class:`~archgraph.train.strategies.base.Strategy` subclass, which is imported only when a run uses the method. The
settings join the run file's union when :mod:`archgraph.train.config` is imported, so their module imports no more
of archgraph than :mod:`archgraph.train.strategies.base` (where ``MethodConfig`` and ``Strategy`` live) and
:mod:`archgraph.train.deferred`: a one-file method as docs/methods.md "Writing a method" shows works as an entry
point.

:func:`load` imports a group's entry points once per process. A rule registers under its ``name`` when its class is
defined (:class:`archgraph.rules.Rule`); a name already taken is refused (:class:`~archgraph.errors.PluginError`).
A plugin that cannot be loaded does not stop archgraph: it is left out with a warning, and ``archgraph rules`` /
``archgraph methods`` list it with its error.

Ops cannot come from plugins: the node union is the graph format itself (its JSON Schema is committed in
``schemas/`` and checked current by the tests), so a graph file must not validate differently depending on the
packages installed beside archgraph. Nothing here imports torch.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Optional

GROUPS = ("archgraph.rules", "archgraph.methods")


@dataclass(frozen=True)
class Plugin:
    """One loaded (or failed) entry point."""

    group: str
    name: str
    value: str                  # ``module`` or ``module:attribute``
    dist: str                   # the distribution that declares it
    loaded: Any = None          # what the entry point loads (a module or a class)
    error: Optional[str] = None


_LOADED: dict[str, list[Plugin]] = {}


def entry_points(group: str) -> list[metadata.EntryPoint]:
    """The installed entry points of ``group``, sorted by name."""
    return sorted(metadata.entry_points(group=group), key=lambda ep: ep.name)


def load(group: str) -> list[Plugin]:
    """Import every entry point of ``group`` (once per process); a failure is warned about and recorded."""
    if group in _LOADED:
        return _LOADED[group]
    _LOADED[group] = plugins = []
    for ep in entry_points(group):
        dist = ep.dist.name if ep.dist is not None else "?"
        try:
            plugins.append(Plugin(group, ep.name, ep.value, dist, ep.load()))
        except Exception as err:   # any error of a third-party import: left out, said aloud
            message = f"{type(err).__name__}: {err}"
            warnings.warn(f"archgraph: plugin {ep.name!r} ({group} entry point {ep.value!r} of {dist}) was not "
                          f"loaded: {message}", stacklevel=2)
            plugins.append(Plugin(group, ep.name, ep.value, dist, error=message))
    return plugins


#: method name -> "module:Class" of its strategy, for the methods plugins brought
_METHODS: dict[str, str] = {}


def methods(taken: set[str]) -> list[Any]:
    """The settings models of the ``archgraph.methods`` plugins: pydantic models with a ``name`` literal not in
    ``taken`` and a ``strategy`` class attribute naming their Strategy subclass (``"module:Class"``, imported
    when a run uses it). Any other is left out with a warning and recorded as not loaded."""
    out = []
    plugins = load("archgraph.methods")
    for i, plugin in enumerate(plugins):
        if plugin.error:
            continue
        fields = getattr(plugin.loaded, "model_fields", {})
        name = fields["name"].default if "name" in fields else None
        target = getattr(plugin.loaded, "strategy", None)
        problem = None
        if not isinstance(name, str) or not isinstance(target, str) or ":" not in target:
            problem = ("it is no settings model with a 'name' literal and a 'strategy' = 'module:Class' class "
                       "attribute (see archgraph.format.plugins)")
        elif name in taken and _METHODS.get(name) != target:
            problem = f"the method name {name!r} is taken"
        if problem:
            warnings.warn(f"archgraph: plugin {plugin.name!r} ({plugin.value!r} of {plugin.dist}) was not loaded: "
                          f"{problem}", stacklevel=2)
            plugins[i] = Plugin(plugin.group, plugin.name, plugin.value, plugin.dist, error=problem)
            continue
        assert isinstance(name, str) and isinstance(target, str)
        taken.add(name)
        _METHODS[name] = target
        out.append(plugin.loaded)
    return out


def method_target(name: str) -> Optional[str]:
    """``"module:Class"`` of the strategy of a method a plugin brought, or ``None``."""
    return _METHODS.get(name)


def source_of(obj: Any, group: str) -> str:
    """``archgraph`` for a built-in class, else the distribution whose ``group`` entry point brought it."""
    module = getattr(obj, "__module__", "") or ""
    if module == "archgraph" or module.startswith("archgraph."):
        return "archgraph"
    for plugin in _LOADED.get(group, []):
        target = plugin.value.partition(":")[0]
        if module == target or module.startswith(target + "."):
            return plugin.dist
    return module.partition(".")[0] or "?"
