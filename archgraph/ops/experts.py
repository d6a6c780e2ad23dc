"""Mixture of experts: ``moe``, a routed layer of SwiGLU experts on a sequence (Mixtral, Qwen3-MoE, OLMoE)."""
from __future__ import annotations

from typing import Literal, Optional

from .common import ATTENTION_COLOUR, EXTRA, bad, channel_width, fixed, need_rank
from .node import Bool, NodeSpec, PositiveInt
from .opdef import MIXER, Build, Coupling, Export, Imports, OpDef, Sizes

# ---- node kinds ------------------------------------------------------------------------------------------------


class MoE(NodeSpec):
    """A routed mixture of ``num_experts`` SwiGLU experts on a sequence ``[T, D] -> [T, D]``, as Mixtral,
    Qwen3-MoE and OLMoE write it: at every token a router (``router.weight`` ``[E, D]``, no bias) scores the experts,
    a softmax over all of them gives their probabilities, the ``top_k`` most probable are picked and (with
    ``normalize``, Mixtral's and Qwen3-MoE's ``norm_topk_prob``) divided by their sum (OLMoE: ``normalize: false``);
    the output is the weighted sum of the picked experts'
    ``down_proj[e] @ (act(gate_proj[e] @ x) * (up_proj[e] @ x))``, with ``gate_proj``/``up_proj``
    ``[E, hidden, D]`` and ``down_proj`` ``[E, D, hidden]``.

    ``expert_ramp`` (set by ``add_experts``): a per-expert ``expert_mask`` buffer whose log is added to the router's
    scores: an expert at 0 is never picked and takes no share of the softmax, so new experts keep the function
    exactly; each training forward pass moves every entry ``1/expert_ramp`` closer to 1."""
    op: Literal["moe"] = "moe"
    num_experts: PositiveInt
    top_k: PositiveInt = 2
    hidden: PositiveInt
    normalize: Bool = True
    activation: Literal["silu", "gelu"] = "silu"
    expert_ramp: Optional[PositiveInt] = None


# ---- facts ----------------------------------------------------------------------------------------------------


def moe_shape(node: MoE, ins):
    shape = need_rank(ins, 2, node.op)
    if node.top_k > node.num_experts:
        bad("top_k", f"top_k={node.top_k} picks more experts than the {node.num_experts} there are")
    return tuple(shape)


def moe_params(node: MoE, ins, out):
    d = channel_width(ins[0])
    return node.num_experts * d + node.num_experts * 3 * d * node.hidden


def moe_macs(node: MoE, ins, out):
    """At every token: the router, and the ``top_k`` picked experts' three projections (the work a routed
    implementation does; the built module computes every expert, see :class:`archgraph.fx.layers.MoE`)."""
    t, d = ins[0]
    return t * (node.num_experts * d + node.top_k * 3 * d * node.hidden)


def moe_layout(node: MoE, ins):
    """Input channels are the columns of the router and of every expert's gate and up projections, output channels
    the rows of every expert's down projection; the expert axis (0) and the hidden axis are no channel axis: the
    expert rules map them."""
    layout = {"router.weight": (None, 1), "gate_proj": (None, 2), "up_proj": (None, 2), "down_proj": (1, None)}
    if node.expert_ramp is not None:
        layout["expert_mask"] = (None, None)
    return layout


def moe_experts(node: MoE) -> tuple[int, dict[str, int]]:
    tensors = {"router.weight": 0, "gate_proj": 0, "up_proj": 0, "down_proj": 0}
    if node.expert_ramp is not None:
        tensors["expert_mask"] = 0
    return node.num_experts, tensors


def moe_units(node: MoE) -> tuple[int, dict[str, int], dict[str, int], str]:
    return node.hidden, {"gate_proj": 1, "up_proj": 1}, {"down_proj": 2}, "hidden"


def moe_module(T, node: MoE, ins):
    return T.extra.MoE(channel_width(ins[0]), node.num_experts, node.hidden, node.top_k, normalize=node.normalize,
                       activation=node.activation, ramp=node.expert_ramp)


def moe_source(m) -> str:
    return (f"MoE({m.dim}, {m.num_experts}, {m.hidden}, {m.top_k}, normalize={m.normalize}, "
            f"activation={m.activation!r}, ramp={m.ramp!r})")


DEFS: tuple[OpDef, ...] = (
    OpDef(
        kind=MoE,
        sizes=Sizes(shape=moe_shape, params=moe_params, macs=moe_macs, in_rank=2),
        coupling=Coupling(role=fixed(MIXER), layout=moe_layout, buffers=("expert_mask",), experts=moe_experts,
                          expert_units=moe_units),
        build=Build(module=moe_module),
        export=Export(colour=ATTENTION_COLOUR, python={EXTRA + ".MoE": moe_source}),
        imports=Imports(modules=(EXTRA + ".MoE",)),
    ),
)
