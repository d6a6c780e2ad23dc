"""Rules and methods from other packages, through Python entry points.

A package contributes by declaring entry points in its ``pyproject.toml``::

    [project.entry-points."archgraph.rules"]
    double_width = "my_rules"                  # a module whose Rule subclasses register themselves on import

    [project.entry-points."archgraph.methods"]
    my_method = "my_methods:MyStrategy"        # a Strategy subclass with a ``Settings`` model (name literal)

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
