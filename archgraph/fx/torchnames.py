"""The torch things the op registry names by dotted strings (``"torch.nn.Conv2d"``, ``"operator.add"``), resolved.

:mod:`archgraph.ops.registry` stays torch-free by naming the module classes and functions of its export and import
tables as strings; this is where they become objects.

>>> from archgraph.fx.torchnames import resolve
>>> resolve("torch.nn.Conv2d").__name__
'Conv2d'
"""
from __future__ import annotations

import functools
import importlib
from typing import Any, Optional

from ..compat import import_torchvision
from ..ops.registry import OPS


@functools.lru_cache(maxsize=None)
def resolve(name: str) -> Any:
    """The object a dotted name names: the longest importable module prefix, then attributes.
    Raises ``ImportError`` or ``AttributeError`` when it does not exist."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"cannot import any module of {name!r}")


def try_resolve(name: str) -> Optional[Any]:
    """:func:`resolve`, or ``None`` when it is missing (an optional package such as torchvision)."""
    try:
        if name.startswith("torchvision."):  # a plain import fails on some CPU-only installs (see compat)
            import_torchvision()
        return resolve(name)
    except Exception:  # missing or broken optional package
        return None


def module_classes(*, running_stats: bool = False) -> tuple[type, ...]:
    """The module classes the registry builds (those of ops with running statistics, with ``running_stats``)."""
    return tuple(resolve(cls) for d in OPS.values() if d.running_stats or not running_stats for cls in d.python)
