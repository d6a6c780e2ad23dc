"""Modules imported when first used, so that a method's one file (its settings model, its strategy and its
registration, :mod:`archgraph.train.strategies`) imports without torch: ``archgraph validate`` and the schema tools
read the settings, and only a run that trains touches torch.

A method's file binds torch and the torch-side helpers it uses as :class:`Deferred` modules, under
``TYPE_CHECKING`` as real imports so that type checkers see the modules themselves::

    from typing import TYPE_CHECKING
    from ..deferred import deferred
    if TYPE_CHECKING:
        import torch
    else:
        torch = deferred("torch")

A deferred module's attributes are looked up in the real module, imported on the first lookup, so only code that
runs (a hook, not a class definition or a decorator) may use them.

>>> json_module = deferred("json")
>>> json_module.dumps([1])
'[1]'
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Optional


class Deferred:
    """Stands for the module ``name`` and imports it when one of its attributes is first read."""

    def __init__(self, name: str):
        self._name = name
        self._module: Optional[ModuleType] = None

    def __getattr__(self, attr: str) -> Any:   # called only for names the proxy itself does not have
        if self._module is None:
            if attr.startswith("__"):   # copy, pickle and doctest probe dunders: never import for those
                raise AttributeError(attr)
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<deferred module {self._name!r}{'' if self._module is None else ' (imported)'}>"


def deferred(name: str) -> Any:
    """The module ``name``, imported when first used (typed ``Any``: declare the real import under
    ``TYPE_CHECKING`` for type checkers)."""
    return Deferred(name)
