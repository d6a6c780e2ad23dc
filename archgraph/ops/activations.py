"""Element-wise activations, built as function calls."""
from __future__ import annotations

from typing import Callable, Literal

from .common import A_, ACT, F_, always, call, every, same_shape
from .node import Float, NodeSpec, PositiveFloat
from .opdef import Build, Coupling, Imports, OpDef, RewriteFacts, Sizes, Traits, never

# ---- node kinds ------------------------------------------------------------------------------------------------


class ReLU(NodeSpec):
    op: Literal["relu"] = "relu"


class ReLU6(NodeSpec):
    op: Literal["relu6"] = "relu6"


class GELU(NodeSpec):
    op: Literal["gelu"] = "gelu"
    approximate: Literal["none", "tanh"] = "none"


class SiLU(NodeSpec):
    op: Literal["silu"] = "silu"


class Sigmoid(NodeSpec):
    op: Literal["sigmoid"] = "sigmoid"


class Tanh(NodeSpec):
    op: Literal["tanh"] = "tanh"


class Hardswish(NodeSpec):
    op: Literal["hardswish"] = "hardswish"


class Hardsigmoid(NodeSpec):
    """``relu6(x + 3) / 6`` (the gate of MobileNetV3's squeeze-excitation)."""
    op: Literal["hardsigmoid"] = "hardsigmoid"


class LeakyReLU(NodeSpec):
    """``x`` where ``x >= 0``, else ``negative_slope * x`` (CSPDarknet's activation)."""
    op: Literal["leaky_relu"] = "leaky_relu"
    negative_slope: Float = 0.01


class Softcap(NodeSpec):
    """``cap * tanh(x / cap)``: every value squashed into ``(-cap, cap)`` (Gemma 2's and 3's final logit
    soft-capping, ``final_logit_softcapping``)."""
    op: Literal["softcap"] = "softcap"
    cap: PositiveFloat


# ---- facts ----------------------------------------------------------------------------------------------------


def _activation(kind, target: Callable, *, block: bool = False, nonneg=never, identity=never, modules=(),
                functions=(), methods=(), shifts_zero: bool = False, via: str = "", **kwargs_of) -> OpDef:
    """An element-wise activation built as a function call (``target(T)``, keyword arguments ``kwargs_of``)."""
    return OpDef(kind=kind, sizes=Sizes(shape=same_shape), coupling=Coupling(role=ACT),
                 traits=Traits(is_activation=True, block_activation=block),
                 build=Build(function=call(target, **kwargs_of)),
                 rewrite=RewriteFacts(nonneg=nonneg, identity=identity, shifts_zero=shifts_zero),
                 imports=Imports(modules=modules, functions=functions, methods=methods, via=via))


DEFS: tuple[OpDef, ...] = (
    _activation(ReLU, lambda T: T.torch.relu, block=True, nonneg=always, identity=every,  # relu(x) = x, x >= 0
                modules=("torch.nn.ReLU",), methods=("relu", "relu_"),
                functions=("torch.relu", F_ + "relu", A_ + "relu.default", A_ + "relu_.default")),
    _activation(ReLU6, lambda T: T.F.relu6, block=True, nonneg=always, modules=("torch.nn.ReLU6",),
                functions=(F_ + "relu6", A_ + "relu6.default")),
    _activation(GELU, lambda T: T.F.gelu, block=True, modules=("torch.nn.GELU",),
                functions=(F_ + "gelu", A_ + "gelu.default"), approximate=lambda n: n.approximate),
    _activation(SiLU, lambda T: T.F.silu, block=True, modules=("torch.nn.SiLU",),
                functions=(F_ + "silu", A_ + "silu.default", A_ + "silu_.default")),
    _activation(Sigmoid, lambda T: T.torch.sigmoid, nonneg=always, shifts_zero=True, modules=("torch.nn.Sigmoid",),
                functions=("torch.sigmoid", F_ + "sigmoid", A_ + "sigmoid.default"), methods=("sigmoid",)),
    _activation(Tanh, lambda T: T.torch.tanh, modules=("torch.nn.Tanh",),
                functions=("torch.tanh", F_ + "tanh", A_ + "tanh.default"), methods=("tanh",)),
    _activation(Hardswish, lambda T: T.F.hardswish, modules=("torch.nn.Hardswish",),
                functions=(F_ + "hardswish", A_ + "hardswish.default", A_ + "hardswish_.default")),
    _activation(Hardsigmoid, lambda T: T.F.hardsigmoid, nonneg=always, shifts_zero=True,
                modules=("torch.nn.Hardsigmoid",), functions=(F_ + "hardsigmoid", A_ + "hardsigmoid.default")),
    _activation(LeakyReLU, lambda T: T.F.leaky_relu, block=True, modules=("torch.nn.LeakyReLU",),
                functions=(F_ + "leaky_relu", A_ + "leaky_relu.default", A_ + "leaky_relu_.default"),
                negative_slope=lambda n: n.negative_slope),
    # softcap(0) = 0; odd and increasing, like tanh
    _activation(Softcap, lambda T: T.extra.softcap, cap=lambda n: n.cap,
                via="Gemma 2's and 3's final_logit_softcapping, read by the Hugging Face import "
                    "(archgraph.interop.hf); a tanh between two multiplications stays three nodes"),
)
