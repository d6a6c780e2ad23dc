"""The registry entry: one :class:`OpDef` per op, its facts grouped by the layer that reads them.

==================  ====================================================================  ==========================
record              facts                                                                 read by
==================  ====================================================================  ==========================
:class:`Sizes`      shape inference, the input rank, parameter, MAC and non-zero MAC      ``graph``, ``shapes``,
                    counts                                                                ``limits``, ``fx.speed``
:class:`Coupling`   the channel role, tensor layouts and buffers, the width field, gate   ``channels``, ``plan``,
                    blocks, recurrent tensors, heads, norm groups, shuffles, mixing       ``rules``, ``train.masks``
:class:`Traits`     what kind of op it is (weighted, conv, norm, activation, pool, ...)   every layer
:class:`Build`      the torch module or function call, input packing, passthrough          ``fx.builder``
:class:`RewriteFacts` resizing, sign, identity, pinned fields, exactness facts           ``rules``, ``channels``
:class:`Imports`    the torch modules, functions and methods the importer maps to it      ``interop.importer``
:class:`Export`     picture colour, standalone-Python constructors                        ``history.render``,
                                                                                          ``interop.export``
==================  ====================================================================  ==========================

The records are plain frozen dataclasses of callables and flags and never import torch. Every fact also reads
under its flat name (``OPS["conv2d"].weighted`` is ``OPS["conv2d"].traits.weighted``; the channel role
``.channels`` is ``.coupling.role``), so code written against the flat record keeps working.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional

from .node import NodeSpec

Shape = tuple[int, ...]

#: channel roles
SOURCE = "source"        # makes a new channel space from its input's (conv, linear)
THROUGH = "through"      # output channel c depends on input channel c only (norms, activations, pools, depthwise)
MERGE = "merge"          # all inputs and the output share one channel space (add, mul)
CONCAT = "concat"        # output channels are the inputs' channels one after another
FLATTEN = "flatten"      # channel c of [C, H, W] becomes features c*H*W .. (c+1)*H*W - 1
GROUPED = "grouped"      # grouped conv, not depthwise: channel c reads only its own group; each group is pruned by
                         # its own choice, the same number from every group (channels.Grouping)
SHUFFLE = "shuffle"      # a fixed permutation of the channels: output c is input perm(c), the input's channels at
                         # one place of every block tied (channel_shuffle, radix_softmax; Coupling.shuffle)
SLICE = "slice"          # output channel c is input channel start + c; the other input channels are dropped
MIXER = "mixer"          # makes new channels from all of its input's, as many as it reads (attention): a producer
                         # whose output channels are tied to its input's, position by position
ROLES = (SOURCE, THROUGH, MERGE, CONCAT, FLATTEN, GROUPED, SHUFFLE, SLICE, MIXER)

#: input packing of a function op in the built module
ARGS = "args"     # f(x1, x2, ...)
LIST = "list"     # f([x1, x2, ...], **kwargs)            (concat)
CHAIN = "chain"   # f(f(x1, x2), x3) ..., a single input passes through   (add, mul)
PACKINGS = (ARGS, LIST, CHAIN)


# ---- the defaults: what an op without the fact has --------------------------------------------------------------

def no_count(node: Any, ins: list[Shape], out: Shape) -> int:
    return 0


def no_nonzero_macs(node: Any, out: Shape, nonzero: int) -> int:
    return 0


def no_layout(node: Any, ins: list[Shape]) -> dict:
    return {}


def one_gate(node: Any) -> int:
    return 1


def no_recurrent(node: Any) -> frozenset:
    return frozenset()


def no_heads(node: Any, ins: list[Shape]) -> None:
    return None


def no_head_tables(node: Any, ins: list[Shape]) -> dict[str, int]:
    return {}


def no_norm_groups(node: Any) -> int:
    return 1


def no_shuffle(node: Any, width: int) -> tuple[int, list[int]]:
    return 1, list(range(width))


def no_mixing(node: Any, ins: list[Shape]) -> bool:
    return False


def no_resize(node: Any, width: int) -> dict:
    return {}


def no_pin(node: Any, ins: list[Shape]) -> dict:
    return {}


def never(node: Any, flags: list[bool]) -> bool:
    return False


# ---- the records -------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Sizes:
    """Shapes and counts (read by :mod:`archgraph.graph`, :mod:`archgraph.shapes`, :mod:`archgraph.limits`)."""

    #: ``shape(node, input_shapes)`` -> the output shape; raises :class:`GraphError` naming the field at fault
    shape: Callable[[Any, list[Shape]], Shape]
    #: the rank of input it needs (``None``: any)
    in_rank: Optional[int] = None
    params: Callable[[Any, list[Shape], Shape], int] = no_count
    macs: Callable[[Any, list[Shape], Shape], int] = no_count
    #: ``nonzero_macs(node, out_shape, nonzero_weights)``: the MACs that involve a non-zero weight, for weighted ops
    nonzero_macs: Callable[[Any, Shape, int], int] = no_nonzero_macs


@dataclass(frozen=True, kw_only=True)
class Coupling:
    """How its channels are tied to its inputs' and where they sit in its tensors (read by
    :mod:`archgraph.channels`, :mod:`archgraph.plan` and the rules)."""

    #: ``role(node, input_shapes)`` -> one of ROLES: how the output channels relate to the inputs'
    role: Callable[[Any, list[Shape]], str]
    #: ``{tensor: (out_axis, in_axis)}`` of its parameters and buffers
    layout: Callable[[Any, list[Shape]], dict[str, tuple[Optional[int], Optional[int]]]] = no_layout
    #: the tensors of ``layout`` that are buffers, not parameters (not learned, not masked, not counted)
    buffers: tuple[str, ...] = ()
    #: the field that sets its output width (``out_channels``, ``out_features``)
    width_field: Optional[str] = None
    #: a grouped op (role GROUPED): which side's position within a group weight axis 1 indexes, ``"in"`` for a
    #: conv (``[out, in / groups, ...]``), ``"out"`` for a transposed conv (``[in, out / groups, ...]``)
    group_side: str = "in"
    #: ``gates(node)``: how many gate blocks of its output channels the out axis of each of its tensors holds, one
    #: after another (4 for an LSTM: input, forget, cell, output; 3 for a GRU); a new unit appears in every block
    gates: Callable[[Any], int] = one_gate
    #: the gate block whose rows, zero for a new unit, keep that unit's state and output at exactly zero from a zero
    #: initial state (an LSTM's cell candidate, a GRU's new gate); ``None`` for ops without gates
    quiet_gate: Optional[int] = None
    #: ``recurrent(node)``: the tensors whose in axis reads the op's own output channels, not its input's
    #: (``weight_hh_l0``, the upper layers' ``weight_ih``)
    recurrent: Callable[[Any], frozenset] = no_recurrent
    #: ``heads(node, ins)`` -> ``(num_heads, head_dim, {tensor: axis})``, the tensors whose ``axis`` holds one block
    #: of ``head_dim`` entries per head, the first being the one that reads the heads' outputs (attention's
    #: ``o_proj.weight`` columns: a head gate scales it, ``prune_heads`` removes a head); ``None`` without heads
    heads: Callable[[Any, list[Shape]], Optional[tuple[int, int, dict[str, int]]]] = no_heads
    #: ``head_tables(node, ins)`` -> ``{tensor: axis}``: the tensors holding one entry (not ``head_dim``) per head on
    #: ``axis``, which the head rules slice with the heads (window attention's position bias table)
    head_tables: Callable[[Any, list[Shape]], dict[str, int]] = no_head_tables
    #: ``experts(node)`` -> ``(num_experts, {tensor: axis})``: the tensors holding one entry per expert on ``axis``
    #: (a mixture of experts' router rows and expert weights), which ``add_experts``/``prune_experts`` map; ``None``
    #: for an op without experts
    experts: Callable[[Any], Optional[tuple[int, dict[str, int]]]] = lambda node: None
    #: ``expert_units(node)`` -> ``(units, {tensor: axis} making them, {tensor: axis} reading them, field)``: the
    #: hidden units every expert has (its SwiGLU width ``field``), which ``add_filters``/``prune_channels`` on
    #: ``ID.experts`` change in every expert alike; ``None`` for an op without experts
    expert_units: Callable[[Any], Optional[tuple[int, dict[str, int], dict[str, int], str]]] = lambda node: None
    #: ``norm_groups(node)``: a THROUGH op that normalises its channels in this many equal groups (group_norm): the
    #: channels at one position of every group are tied, so every group keeps the same size when channels go
    norm_groups: Callable[[Any], int] = no_norm_groups
    #: ``shuffle(node, width)`` -> ``(blocks, perm)`` of a SHUFFLE op: its input's ``width`` channels split into
    #: ``blocks`` equal blocks whose channels at one place are tied (they go together), and output channel ``c`` is
    #: input channel ``perm[c]``
    shuffle: Callable[[Any, int], tuple[int, list[int]]] = no_shuffle
    #: ``mixes(node, ins)`` -> whether an output channel depends on the *other* channels of its input beyond what
    #: the channel role says (layernorm's statistics over the channels): adding or removing a channel then changes
    #: the others, so widening through it is not function-preserving
    mixes: Callable[[Any, list[Shape]], bool] = no_mixing
    #: for an op that mixes: the statistics it takes over the channels (named when pruning under it is not exact)
    mix_stats: str = "mean and variance"


@dataclass(frozen=True, kw_only=True)
class Traits:
    """What kind of op it is (read by every layer: masks, training methods, rules, pictures)."""

    #: holds a weight ``[out, in, ...]`` applied to its input (conv/linear-like): masked, pruned, decayed, grown
    weighted: bool = False
    #: a weighted op with a spatial kernel (channels-last formats may speed it up; an inserted one needs an odd kernel)
    conv: bool = False
    is_norm: bool = False
    #: the batchnorms: running statistics a recalibration recomputes
    running_stats: bool = False
    is_activation: bool = False
    #: an activation a residual block ends with after its add (relu, relu6, gelu, silu): SCS puts a new block after
    #: it. Not the gating ones (sigmoid, tanh, hardsigmoid); hardswish only appears inside MobileNet blocks.
    block_activation: bool = False
    is_pool: bool = False
    #: element-wise dropout in training (the identity in eval); stochastic depth drops whole samples instead
    is_dropout: bool = False


@dataclass(frozen=True, kw_only=True)
class Build:
    """How :mod:`archgraph.fx.builder` builds it: exactly one of ``module``, ``function`` and ``passthrough``."""

    #: builds the node's submodule, for nodes that hold parameters or buffers or depend on train/eval mode
    module: Optional[Callable[[Any, Any, list[Shape]], Any]] = None
    #: (target, kwargs) of a ``call_function`` node, for the stateless ops
    function: Optional[Callable[[Any, Any], tuple[Callable, dict]]] = None
    #: how a function op receives its inputs: ARGS, LIST or CHAIN
    packing: str = ARGS
    #: the output is one of the inputs unchanged (no fx node is made)
    passthrough: bool = False
    #: the built module returns a tuple whose first element is the output (``nn.LSTM``, ``nn.GRU``)
    tuple_output: bool = False


@dataclass(frozen=True, kw_only=True)
class RewriteFacts:
    """What the rules rely on (read by :mod:`archgraph.rules` and :mod:`archgraph.channels`)."""

    #: ``resize(node, width)`` -> the field changes that make the node's output ``width`` channels wide (``{}`` when
    #: the width is inferred from the input); only called for nodes whose output channels a rule changes
    resize: Callable[[Any, int], dict] = no_resize
    #: ``nonneg(node, inputs_nonneg)`` -> whether the output is >= 0 everywhere when the inputs flagged True are
    nonneg: Callable[[Any, list[bool]], bool] = never
    #: ``identity(node, inputs_nonneg)`` -> whether the node computes exactly its (single) input in eval mode
    identity: Callable[[Any, list[bool]], bool] = never
    #: ``pin(node, ins)`` -> the field values a node must write out before its input's width changes (attention's
    #: default ``head_dim``, which follows the width), so a rewrite keeps what it computes
    pin: Callable[[Any, list[Shape]], dict] = no_pin
    #: the weight fill that makes a new layer of this op the identity (``dirac``, ``eye``; see :mod:`archgraph.plan`)
    identity_fill: Optional[str] = None
    #: the output is the sum of its inputs, so an input branch that outputs zeros can be removed exactly
    residual: bool = False
    #: ``collapse_layer`` may remove an input branch ending here (the sum or concatenation of the others remains)
    branch_end: bool = False
    #: a zero input channel can come out as a non-zero constant (a norm's shift, sigmoid(0) = 0.5): removing such a
    #: channel downstream is not exact
    shifts_zero: bool = False
    #: its channel parameters are added to (or stand beside) its input's values: position_embedding, class_token;
    #: when the channels grow their new entries start like a producer's new channels (``zero`` for exact growth)
    offset: bool = False
    #: a mixing norm whose statistic is the mean of squares over the channels (rmsnorm): zero channels added to its
    #: input are compensated exactly by scaling its weight by ``sqrt(old / new)`` and its ``eps`` by ``old / new``
    rescalable: bool = False
    #: a mixing norm that takes new channels through a mask ramping from 0 (its ``mask_ramp`` field): layernorm
    maskable: bool = False
    #: a mixing norm whose statistics are the same over ``[x, x, ...]`` as over ``x`` (mean and variance, mean
    #: square), so copying every channel alike keeps its output (add_filters init=clone)
    keeps_stats_of_copies: bool = False


@dataclass(frozen=True)
class Imports:
    """The torch things the importer turns into this op, as dotted names resolved on the torch side
    (``"torch.nn.Conv2d"``, ``"torch.nn.functional.relu"``, ``"operator.add"``) and ``Tensor`` method names.
    ``via`` says, for an op no torch target maps to directly, which pattern the importer recognises instead."""

    modules: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    via: str = ""
    #: why the importer cannot produce this op yet (it then has no torch names and no pattern)
    unsupported: str = ""


@dataclass(frozen=True, kw_only=True)
class Export:
    """Outside the graph: pictures (:mod:`archgraph.history.render`) and standalone Python
    (:mod:`archgraph.interop.export`)."""

    #: fill colour of its box in graph pictures
    colour: str = "#ffffff"
    #: standalone Python export: ``{module class: constructor source of a built module}``, one entry for every
    #: class ``Build.module`` can build (function ops are written from their fx target, and ONNX export needs no
    #: table: ``torch.onnx`` exports the built module)
    python: dict[str, Callable[[Any], str]] = field(default_factory=dict)


#: the sub-records of an OpDef, by attribute name
RECORDS: dict[str, type] = {"sizes": Sizes, "coupling": Coupling, "traits": Traits, "build": Build,
                            "rewrite": RewriteFacts, "imports": Imports, "export": Export}

#: flat fact name -> (record attribute, field): ``channels`` is the channel role, every other fact its own name
FLAT: dict[str, tuple[str, str]] = {
    **{f.name: (attr, f.name) for attr, rec in RECORDS.items() if attr != "imports" for f in fields(rec)},
    "channels": ("coupling", "role"),
}


@dataclass(frozen=True, kw_only=True)
class OpDef:
    """Everything archgraph knows about one op, grouped by the layer that reads it. Every record is given by
    keyword; the op name is its kind's ``op`` literal.

    >>> from archgraph.ops.registry import OPS
    >>> d = OPS["conv2d"]
    >>> d.op, d.traits.weighted, d.coupling.width_field, d.weighted
    ('conv2d', True, 'out_channels', True)
    """

    #: the spec model (``op: Literal["name"]``), defined beside this entry in its family module
    kind: type[NodeSpec]
    op: str = field(init=False)
    sizes: Sizes
    coupling: Coupling
    traits: Traits = Traits()
    build: Build
    rewrite: RewriteFacts = RewriteFacts()
    imports: Imports = Imports()
    export: Export = Export()

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", self.kind.model_fields["op"].default)

    def __getattr__(self, name: str) -> Any:
        # only reached for names that are not attributes: the flat fact names
        where = FLAT.get(name)
        if where is None:
            raise AttributeError(f"{type(self).__name__!s} has no fact {name!r}")
        return getattr(object.__getattribute__(self, where[0]), where[1])
