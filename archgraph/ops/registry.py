"""Per-op behaviour, in one registry: one :class:`OpDef` per op, gathered from the op families.

An op's :class:`OpDef` holds every fact the rest of archgraph needs about it, grouped by the layer that reads it
(:mod:`archgraph.ops.opdef`): shape inference and counts (``sizes``), its channel role and tensor layout
(``coupling``), what kind of op it is (``traits``), how to build it in torch (``build``), the rewrite facts the
rules rely on (``rewrite``), the torch names the importer maps to it (``imports``), and its picture colour and
standalone-Python constructors (``export``). Code outside :mod:`archgraph.ops` asks these facts
(``OPS[node.op].traits.weighted``, :func:`is_weighted`) and never compares an op with a literal name;
``tests/test_registry.py`` checks both.

The registry never imports torch: builders receive the torch namespaces from :mod:`archgraph.fx.builder`, and the
export and import tables name torch things by dotted strings (``"torch.nn.Conv2d"``) resolved on the torch side
(:mod:`archgraph.fx.torchnames`), so validating a YAML file stays fast.

Adding an op
------------
Everything goes in the module of its family (:mod:`.convolution`, :mod:`.linear`, :mod:`.norms`,
:mod:`.activations`, :mod:`.pooling`, :mod:`.attention`, :mod:`.recurrent`, :mod:`.structural`):

1. One frozen pydantic model (``class Name(NodeSpec)``, ``op: Literal["name"] = "name"``), its fields written in
   the strict vocabulary of :mod:`archgraph.ops.node`; the op name is written there only.
2. One ``OpDef(kind=Name, sizes=Sizes(...), coupling=Coupling(...), build=Build(...), ...)`` entry in the family's
   ``DEFS``: its shape function and channel role, and the facts that differ from the defaults (a layer: the
   ``layout``, ``params``, ``macs``, ``Traits(weighted=True)``, ``width_field``, ``resize``, ...; a function op:
   ``Build(function=..., packing=...)``).
3. Its torch builder: ``Build(module=...)`` (a function of the torch namespaces ``T``, the node and its input
   shapes; a class of its own goes in :mod:`archgraph.fx.layers`) or ``Build(function=call(lambda T: T.F.name,
   kwarg=...))``; ``Export(python=...)`` gives the standalone-Python constructor of each module class it builds,
   and ``imports=Imports(...)`` the torch names the importer maps to it (a handler in
   :mod:`archgraph.interop.importer` when the default, an element-wise op whose fields are read by name, does not
   fit).

A new family is one more module, named in :mod:`.families`. ``tests/test_registry.py`` then checks the new op has
every entry and builds, exports and imports.
"""
from __future__ import annotations

from typing import Optional

from .activations import *  # noqa: F403  (the families' helpers stay importable from here, as before the split)
from .attention import *  # noqa: F403
from .common import *  # noqa: F403
from .convolution import *  # noqa: F403
from .families import FAMILIES
from .linear import *  # noqa: F403
from .norms import *  # noqa: F403
from .opdef import *  # noqa: F403
from .opdef import OpDef
from .pooling import *  # noqa: F403
from .recurrent import *  # noqa: F403
from .structural import *  # noqa: F403

# (each family's star import brought its own DEFS; this one gathers them all)
DEFS: tuple[OpDef, ...] = tuple(d for family in FAMILIES for d in family.DEFS)  # type: ignore[no-redef]

OPS: dict[str, OpDef] = {d.op: d for d in DEFS}

#: every buffer name any op has (the tensors of a layout that are not parameters)
BUFFERS: frozenset[str] = frozenset(b for d in DEFS for b in d.coupling.buffers)


def opdef(op: str) -> OpDef:
    return OPS[op]


def is_weighted(node) -> bool:
    """Whether ``node`` holds a conv/linear-like weight (see :attr:`Traits.weighted`)."""
    return OPS[node.op].traits.weighted


def is_norm(node) -> bool:
    return OPS[node.op].traits.is_norm


def width_of(node) -> Optional[int]:
    """The node's output width field (``out_channels``, ``out_features``), or ``None`` when it has none."""
    name = OPS[node.op].coupling.width_field
    return None if name is None else int(getattr(node, name))


WIDTH_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(d.coupling.width_field for d in DEFS if d.coupling.width_field))
