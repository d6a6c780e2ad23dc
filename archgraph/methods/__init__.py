"""Growth and pruning methods in your own training loop: :func:`attach`.

The methods of run files (``gnap``, ``cgap``, ``scs``, ``gbp``, ``gumbel``, ``budget``, ``staged``, ``distill``,
and ``dense``, which does nothing) work on an :class:`archgraph.Network` and your optimizer (with ``distill``,
``method.loss(task_loss)`` is the whole objective: it weighs the task loss by ``alpha``). ``archgraph grow`` drives
the same strategies through the same :class:`~archgraph.methods.driver.Driver`.

>>> import archgraph, torch
>>> from archgraph import methods
>>> net = archgraph.Network(archgraph.load("examples/seeds/tiny_cnn.yaml"))
>>> opt = torch.optim.AdamW(net.module.parameters(), lr=0.01)
>>> scs = methods.attach("scs", net, opt, epochs=4, penalty=0.5)
>>> x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
>>> loss = torch.nn.functional.cross_entropy(net.module(x), y) + scs.loss()
>>> opt.zero_grad(); loss.backward(); opt.step(); rules = scs.step()
>>> float(scs.loss()) == 0.0, net.version      # the term belongs to a forward pass; no rewrite at a step
(True, 0)
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

from pydantic import TypeAdapter, ValidationError

from ..errors import ConfigError
from ..train.config import METHODS, config_error, method_union
from ..train.strategies import make_strategy
from .driver import Driver, Method, NetworkView


def method_names() -> list[str]:
    """The names :func:`attach` takes (those of run files' ``method.name``)."""
    return sorted(METHODS)


def settings_of(name: str, settings: dict):
    """The validated settings model of method ``name`` (errors name the field, as for a run file)."""
    if name not in method_names():
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(method_names())}", field="name")
    try:
        return TypeAdapter(method_union()).validate_python({"name": name, **settings})
    except ValidationError as err:
        error = config_error(err, f"methods.attach({name!r})")
        if error.field and error.field.startswith(f"{name}."):   # the union's tag: not a field of the settings
            error.field = error.field[len(name) + 1:]
            error.args = (error.render(),)
        raise error from None


def attach(name: str, net, optimizer, *, epochs: int, steps_per_epoch: Optional[int] = None,
           train_inputs: Optional[Callable[[], Iterable]] = None, **settings) -> Method:
    """Attach method ``name`` with ``settings`` (the run file's ``method:`` fields) to ``net`` (an
    :class:`archgraph.Network`), training with ``optimizer``. ``epochs`` is the loop's epoch budget (methods plan
    their phases in it); ``steps_per_epoch`` (else learnt from the first epoch) places a step within its epoch;
    ``train_inputs`` (a function returning an iterable of training input batches) is read by a method that
    recomputes batch-norm statistics (``gumbel``'s ``recalibrate_bn``).

    Returns a :class:`~archgraph.methods.driver.Method`: ``loss()``, ``step()`` (after ``optimizer.step()``),
    ``epoch_end(val_metrics)``, ``finish()``; its masks and gates act through ``net.module``."""
    cfg = settings_of(name, settings)
    return Method(make_strategy(cfg), net, optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch,
                  train_inputs=train_inputs)


__all__ = ["Driver", "Method", "NetworkView", "attach", "method_names", "settings_of"]
