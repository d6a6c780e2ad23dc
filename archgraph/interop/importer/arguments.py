"""Reading a traced call's arguments: sizes, parameters and a module's state, as the graph's fields want them."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .values import Param


def ints(value) -> tuple[int, ...]:
    """An int or a sequence of them as a tuple."""
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def pair(value):
    """An int, or ``[h, w]`` when the two differ (the format's short form)."""
    v = ints(value)
    return v[0] if len(v) == 1 or v[0] == v[1] else list(v)


def number(value) -> bool:
    """Whether ``value`` is a plain number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def module_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's parameters and buffers by name: a node's weights."""
    return dict(module.state_dict())


def param(c, value, what: str) -> Optional[torch.Tensor]:
    """The tensor of a parameter argument (``None`` stays ``None``); a computed one is an error."""
    if value is None or isinstance(value, Param):
        return None if value is None else value.tensor
    raise c.fail(f"its {what} is computed from the input, which has no graph op (only parameters are supported)")


def owner(value) -> Optional[str]:
    """The module path of a parameter ('layer1.0.conv.weight' -> 'layer1.0.conv'), a node id hint."""
    return (value.name.rpartition(".")[0] or None) if isinstance(value, Param) else None
