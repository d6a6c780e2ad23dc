"""Resumable state, declared instead of hand-written: a class names the attributes that make up its state in
``STATE``, and :class:`Stateful` saves and restores exactly those.

:meth:`Stateful.state_dict` gives ``{name: value}`` for every declared attribute: tensors detached and on the CPU,
dicts, lists and tuples element by element, a nested :class:`Stateful` (a plateau detector, an optimiser of the
strategy's own tensors, a cost ledger) by its own declaration, anything else (numbers, strings, None) as it is. So a
checkpoint holds tensors and plain data only. :meth:`Stateful.load_state_dict` puts the values back (into a nested
:class:`Stateful` in place) and leaves tensors on the CPU: the owner moves them to its device when it attaches (see
:meth:`archgraph.train.strategies.base.Strategy.attach`).

>>> import torch
>>> class Counter(Stateful):
...     STATE = ("count", "seen")
...     def __init__(self):
...         self.count, self.seen, self.cache = 0, {}, "derived, not saved"
>>> a = Counter(); a.count = 3; a.seen = {"c1": torch.ones(2)}
>>> b = Counter(); b.load_state_dict(a.state_dict())
>>> b.count, b.seen["c1"].tolist(), sorted(a.state_dict())
(3, [1.0, 1.0], ['count', 'seen'])
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from .deferred import deferred

if TYPE_CHECKING:
    import torch
else:   # a method's strategy subclasses Stateful, and its file imports without torch (archgraph/train/deferred.py)
    torch = deferred("torch")


class Stateful:
    """Mixin: ``STATE`` names the attributes saved in :meth:`state_dict` and restored by :meth:`load_state_dict`."""

    #: the attributes that make up the state (everything else is derived from them, the graph or the weights)
    STATE: ClassVar[tuple[str, ...]] = ()

    def state_dict(self) -> dict:
        return {name: _save(getattr(self, name)) for name in self.STATE}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in self.STATE:
            current = getattr(self, name, None)
            if isinstance(current, Stateful):
                current.load_state_dict(state[name])
            else:
                setattr(self, name, _load(state[name]))
        self.after_load()

    def after_load(self) -> None:
        """Called at the end of :meth:`load_state_dict`: rebuild what derives from the declared state."""


def _save(value: Any) -> Any:
    if isinstance(value, Stateful):
        return value.state_dict()
    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _save(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_save(v) for v in value)
    return value


def _load(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _load(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_load(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_load(v) for v in value)
    return value
