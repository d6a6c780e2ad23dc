"""The op families, in the order the node union lists them. Adding a family: one module holding its spec models
beside their :class:`~.opdef.OpDef` entries (a ``DEFS`` tuple), named here."""
from __future__ import annotations

from . import activations, attention, convolution, experts, linear, norms, pooling, recurrent, structural

FAMILIES = (convolution, linear, norms, activations, pooling, attention, recurrent, structural, experts)
