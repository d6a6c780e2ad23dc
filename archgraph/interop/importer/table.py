"""The importer's one handler table, and the decorators that fill it.

A handler turns one traced call into graph values: ``handler(converter, fx_node, module, *args, **kwargs)`` for a
module, ``handler(converter, fx_node, *args, **kwargs)`` for a function or tensor method. Each handler module
registers its handlers when it is imported:

* ``@module(cls, ...)``: modules of exactly these classes (a class, or ``"package.module.Class"`` matched by name
  without importing it: timm's and torchvision's layers);
* ``@function(fn, ...)``: calls of these functions (a callable, or a dotted name resolved when the table is made);
* ``@method(name, ...)``: calls of these tensor methods;
* ``@modules_of(op)`` / ``@functions_of(op)``: every module class, or every function and method, that the op
  registry's ``imports`` names for ``op`` (an op without one gets the elementwise default of
  :mod:`.elementwise`).

Each key is registered once (a second registration is an error, whatever the import order); a handler that reads
another family's special cases calls them itself. The table is merged once, on first use, after
:mod:`archgraph.interop.importer` has imported every handler module. :func:`register_module` teaches it a user's
layer at any time (the user's handler replaces any other for that class).
"""
from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar, Union

from torch import nn

from ...fx.torchnames import resolve, try_resolve
from ...ops.registry import OPS
from .elementwise import f_unary, unary

H = TypeVar("H", bound=Callable)
ModuleKey = Union[type, str]

_modules: dict[ModuleKey, Callable] = {}
_functions: dict[Any, Callable] = {}
_methods: dict[str, Callable] = {}
_op_modules: dict[str, Callable] = {}
_op_functions: dict[str, Callable] = {}
#: the classes users taught with :func:`register_module` (merged last: the user's word wins)
_custom: dict[type, Callable] = {}


def _put(table: dict, keys, handler: Callable, kind: str) -> None:
    for key in keys:
        if key in table and table[key] is not handler:
            raise ValueError(f"the importer's {kind} {key!r} has two handlers: {table[key].__module__}."
                             f"{table[key].__qualname__} and {handler.__module__}.{handler.__qualname__}")
        table[key] = handler
    handlers.cache_clear()


def module(*classes: ModuleKey) -> Callable[[H], H]:
    """Register the decorated function as the handler of modules of these classes."""
    def register(handler: H) -> H:
        _put(_modules, classes, handler, "module class")
        return handler
    return register


def function(*targets: Any) -> Callable[[H], H]:
    """Register the decorated function as the handler of calls of these functions (callables or dotted names)."""
    def register(handler: H) -> H:
        _put(_functions, targets, handler, "function")
        return handler
    return register


def method(*names: str) -> Callable[[H], H]:
    """Register the decorated function as the handler of calls of these tensor methods."""
    def register(handler: H) -> H:
        _put(_methods, names, handler, "tensor method")
        return handler
    return register


def modules_of(op: str) -> Callable[[H], H]:
    """Register the decorated function as the handler of the module classes the registry imports as ``op``."""
    def register(handler: H) -> H:
        _put(_op_modules, [op], handler, "op (modules)")
        return handler
    return register


def functions_of(op: str) -> Callable[[H], H]:
    """Register the decorated function as the handler of the functions and methods the registry imports as ``op``."""
    def register(handler: H) -> H:
        _put(_op_functions, [op], handler, "op (functions)")
        return handler
    return register


@dataclass
class HandlerTable:
    """The merged handlers: ``modules`` by class, ``module_names`` by ``"package.module.Class"``, ``functions`` by
    the function object, ``methods`` by name."""
    modules: dict[type, Callable]
    module_names: dict[str, Callable]
    functions: dict[Any, Callable]
    methods: dict[str, Callable]

    def module_handler(self, m: nn.Module) -> Optional[Callable]:
        cls = type(m)
        return self.modules.get(cls) or self.module_names.get(f"{cls.__module__}.{cls.__qualname__}")

    def function_handler(self, target) -> Optional[Callable]:
        try:
            return self.functions.get(target)
        except TypeError:  # unhashable target
            return None

    def wrapped_functions(self) -> tuple[Callable, ...]:
        """The plain Python functions of archgraph the table reads (``to_tokens``, ``token_pool``): fx calls them
        as one node instead of tracing into them."""
        return tuple(f for f in self.functions
                     if isinstance(f, types.FunctionType) and f.__module__.startswith("archgraph"))


@functools.lru_cache(maxsize=None)
def handlers() -> HandlerTable:
    """The importer's handler table, merged on first use (and again after a later registration)."""
    modules: dict[type, Callable] = {}
    functions: dict[Any, Callable] = {}
    methods: dict[str, Callable] = {}
    for op, d in OPS.items():
        for cls in d.imports.modules:
            modules[resolve(cls)] = _op_modules.get(op) or unary(op)
        handler = _op_functions.get(op) or f_unary(op)
        for name in d.imports.functions:
            target = try_resolve(name)   # None: an optional package (torchvision) is missing or broken
            if target is not None:
                functions[target] = handler
        methods.update({name: handler for name in d.imports.methods})
    # a handler registered for the very class, function or method is more specific than its op's
    modules.update({k: h for k, h in _modules.items() if not isinstance(k, str)})
    for key, handler in _functions.items():
        target = try_resolve(key) if isinstance(key, str) else key
        if target is not None:
            functions[target] = handler
    methods.update(_methods)
    modules.update(_custom)
    names = {k: h for k, h in _modules.items() if isinstance(k, str)}
    return HandlerTable(modules, names, functions, methods)


def register_module(cls: type, handler: Callable) -> None:
    """Teach the importer a custom layer (Torch-Pruning's ``register_customized_layer`` is the peer): torch.fx keeps
    every ``cls`` module whole (one call, not traced into) and ``handler(converter, fx_node, module, x, ...)`` turns
    the call into graph nodes. ``x`` is the input as the converter sees it (a :class:`~.values.Val`);
    ``converter.emit(hint, op, [x.node], weights, **fields)`` adds a validated node of any graph op (``weights``:
    its tensors by the op's parameter names) and returns its id; the handler returns ``Val(id)`` (a sequence's or
    image's layout follows the op). A second registration of ``cls`` replaces the first, as it replaces a built-in
    handler; it applies to later imports.

    >>> register_module(MyLinear, lambda c, n, m, x: Val(c.emit(None, "linear", [x.node],   # doctest: +SKIP
    ...     {"weight": m.w}, out_features=m.w.shape[0], bias=False)))
    """
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise TypeError(f"register_module needs an nn.Module subclass, got {cls!r}")
    if not callable(handler):
        raise TypeError(f"the handler of {cls.__name__} must be callable")
    _custom[cls] = handler
    handlers.cache_clear()
