"""The op set: node kinds (:mod:`.spec`) and per-op behaviour (:mod:`.registry`)."""
from .registry import OPS, OpDef, opdef
from .spec import KIND_BY_OP, NODE_KINDS, Node, NodeSpec

__all__ = ["OPS", "OpDef", "opdef", "KIND_BY_OP", "NODE_KINDS", "Node", "NodeSpec"]
