"""The default handlers of an elementwise op (an activation, ``dropout``-like ops): any layout, the output keeps
it. The handler table gives them to every module, function and method the registry imports for an op that has no
handler of its own."""
from __future__ import annotations

from typing import Any, Callable

from ...ops.spec import KIND_BY_OP
from .values import Val


def unary(op: str) -> Callable:
    """The module handler of an elementwise ``op``: its fields are the module's attributes of the same name
    (``nn.GELU.approximate``)."""
    names = [k for k in KIND_BY_OP[op].model_fields if k not in ("op", "inputs")]

    def handler(c, n, m, x, *rest, **kw):
        x = c.tensor(x)
        fields = {k: getattr(m, k) for k in names}
        return Val(c.emit(None, op, [x.node], **fields), x.layout, x.groups)
    return handler


def f_unary(op: str, **fields_of: Callable[[tuple, dict], Any]) -> Callable:
    """The function (and method) handler of an elementwise ``op``; ``fields_of``: a field's value from the call's
    ``(args, kwargs)`` after the tensor (``F.leaky_relu``'s ``negative_slope``)."""
    def handler(c, n, x, *args, **kwargs):
        x = c.tensor(x)
        fields = {k: f(args, kwargs) for k, f in fields_of.items()}
        return Val(c.emit(None, op, [x.node], **fields), x.layout, x.groups)
    return handler
