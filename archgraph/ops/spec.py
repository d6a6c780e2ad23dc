"""The node kinds of the graph format: one frozen pydantic model per op, gathered from the op families.

Each model holds only what defines the node (its op, its inputs and PyTorch's own parameter names); input widths
(`in_channels`, `in_features`, `num_features`) are never written, they are inferred from the graph. The union of
all kinds is discriminated on ``op``, so a validation error points at exactly one kind and field.

The models live beside their registry entries, one module per family (:mod:`.convolution`, :mod:`.linear`,
:mod:`.norms`, :mod:`.activations`, :mod:`.pooling`, :mod:`.attention`, :mod:`.recurrent`, :mod:`.structural`);
this module gathers them, with the base :class:`~.node.NodeSpec` and the strict field vocabulary of :mod:`.node`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field

from .families import FAMILIES
from .node import (
    Bool,
    Float,
    Int,
    NodeSpec,
    NonNegativeFloat,
    NonNegativeInt,
    Padding,
    Pair,
    PositiveFloat,
    PositiveInt,
    Probability,
    Str,
)

#: every node kind, family by family
NODE_KINDS: tuple[type[NodeSpec], ...] = tuple(d.kind for family in FAMILIES for d in family.DEFS)

if TYPE_CHECKING:   # to a type checker a node is a NodeSpec (every kind is one); the union is built at run time
    Node = NodeSpec
else:
    Node = Annotated[Union[NODE_KINDS], Field(discriminator="op")]

#: op name -> node model
KIND_BY_OP: dict[str, type[NodeSpec]] = {k.model_fields["op"].default: k for k in NODE_KINDS}

_BY_NAME = {k.__name__: k for k in NODE_KINDS}


def __getattr__(name: str) -> type[NodeSpec]:
    # a kind added to a family module is importable from here without naming it above
    try:
        return _BY_NAME[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


__all__ = [
    "NODE_KINDS", "Node", "KIND_BY_OP", "NodeSpec",
    "Bool", "Float", "Int", "NonNegativeFloat", "NonNegativeInt", "Padding", "Pair", "PositiveFloat", "PositiveInt",
    "Probability", "Str",
    *(k.__name__ for k in NODE_KINDS),
]
