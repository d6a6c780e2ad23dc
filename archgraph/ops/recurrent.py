"""Recurrent layers over a sequence ``[T, D]``: ``lstm`` and ``gru``."""
from __future__ import annotations

from typing import Literal

from .common import RNN_COLOUR, channel_width, fixed, need_rank
from .node import Bool, NodeSpec, PositiveInt, Probability
from .opdef import SOURCE, Build, Coupling, Export, Imports, OpDef, RewriteFacts, Sizes

# ---- node kinds ------------------------------------------------------------------------------------------------


class _RNN(NodeSpec):
    """The fields an LSTM and a GRU share (``torch.nn.LSTM``/``nn.GRU``'s, ``batch_first=True``)."""
    hidden_size: PositiveInt
    num_layers: PositiveInt = 1
    bias: Bool = True
    dropout: Probability = 0.0


class LSTM(_RNN):
    """A multi-layer LSTM over a sequence ``[T, D]`` (``torch.nn.LSTM``, ``batch_first=True``), from a zero initial
    state; the output is the last layer's hidden state at every step, ``[T, hidden_size]``. Its parameters are
    ``nn.LSTM``'s: ``weight_ih_l{k}`` ``[4 * hidden_size, in]``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
    ``bias_hh_l{k}``, with the gate blocks in PyTorch's order (input, forget, cell, output)."""
    op: Literal["lstm"] = "lstm"


class GRU(_RNN):
    """A multi-layer GRU over a sequence ``[T, D]`` (``torch.nn.GRU``, ``batch_first=True``), from a zero initial
    state; output ``[T, hidden_size]``. Parameters as ``nn.GRU``'s, gate blocks (reset, update, new)."""
    op: Literal["gru"] = "gru"


#: gate blocks per hidden unit, in PyTorch's order: LSTM (input, forget, cell, output), GRU (reset, update, new)
RNN_GATES = {"lstm": 4, "gru": 3}


# ---- facts ----------------------------------------------------------------------------------------------------


def rnn_gates(node) -> int:
    return RNN_GATES[node.op]


def rnn_shape(node, ins):
    t, _ = need_rank(ins, 2, f"{node.op} over a sequence")
    return (t, node.hidden_size)


def rnn_inner(node, ins) -> int:
    """Weights per time step: every layer's ``weight_ih`` and ``weight_hh``."""
    h, d = node.hidden_size, channel_width(ins[0])
    return sum(rnn_gates(node) * h * ((d if k == 0 else h) + h) for k in range(node.num_layers))


def rnn_params(node, ins, out):
    biases = 2 * rnn_gates(node) * node.hidden_size * node.num_layers if node.bias else 0
    return rnn_inner(node, ins) + biases


def rnn_macs(node, ins, out):
    return rnn_inner(node, ins) * ins[0][0]


def rnn_layout(node, ins):
    """``nn.LSTM``/``nn.GRU``'s tensors: every one holds the gate blocks of the hidden units on axis 0 (see
    :attr:`Coupling.gates`); ``weight_ih_l0`` reads the input on axis 1, the other weights read the op's own hidden
    units there (see :attr:`Coupling.recurrent`)."""
    layout = {}
    for k in range(node.num_layers):
        layout[f"weight_ih_l{k}"] = (0, 1)
        layout[f"weight_hh_l{k}"] = (0, 1)
        if node.bias:
            layout[f"bias_ih_l{k}"] = (0, None)
            layout[f"bias_hh_l{k}"] = (0, None)
    return layout


def rnn_recurrent(node) -> frozenset:
    return frozenset([f"weight_hh_l{k}" for k in range(node.num_layers)]
                     + [f"weight_ih_l{k}" for k in range(1, node.num_layers)])


def rnn_resize(node, width: int) -> dict:
    return {"hidden_size": width}


def rnn_module(T, node, ins):
    cls = T.nn.LSTM if node.op == "lstm" else T.nn.GRU
    return cls(channel_width(ins[0]), node.hidden_size, num_layers=node.num_layers, bias=node.bias,
               batch_first=True, dropout=node.dropout)


def rnn_source(cls: str):
    def source(m) -> str:
        return (f"nn.{cls}({m.input_size}, {m.hidden_size}, num_layers={m.num_layers}, bias={m.bias}, "
                f"batch_first=True, dropout={m.dropout!r})")
    return source


def _rnn(kind, cls: str) -> OpDef:
    """An LSTM or a GRU: the same facts, ``nn.LSTM`` or ``nn.GRU`` built (:data:`RNN_GATES` tells them apart)."""
    return OpDef(
        kind=kind,
        sizes=Sizes(shape=rnn_shape, params=rnn_params, macs=rnn_macs, in_rank=2),
        coupling=Coupling(role=fixed(SOURCE), layout=rnn_layout, width_field="hidden_size", gates=rnn_gates,
                          quiet_gate=2, recurrent=rnn_recurrent),
        build=Build(tuple_output=True, module=rnn_module),
        rewrite=RewriteFacts(resize=rnn_resize),
        export=Export(colour=RNN_COLOUR, python={f"torch.nn.{cls}": rnn_source(cls)}),
        imports=Imports(modules=(f"torch.nn.{cls}",)),
    )


DEFS: tuple[OpDef, ...] = (_rnn(LSTM, "LSTM"), _rnn(GRU, "GRU"))
