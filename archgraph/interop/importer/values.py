"""What an fx node converts to: a graph value seen through a layout, or a step on the way to one.

Each traced tensor maps to a :class:`Val` (a graph node or input seen through a layout), or to a value that needs no
node of its own yet: the :class:`Pieces` of a ``chunk``/``split``, a :class:`Param` read by ``get_attr``, a
:class:`Tail` of a sequence, the :class:`Projected` and :class:`Attended` steps of hand-written attention, or an
:class:`Unconverted` value that is an error if used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

CF, CL, GROUPED, GROUPED_T = "cf", "cl", "grouped", "grouped_t"
#: a sequence ``[T, D]`` seen time-first, ``[T, N, D]`` (what ``batch_first=False`` modules read); the token ids
TND, TOKENS = "tnd", "tokens"
#: an image's positions flattened, ``[N, C, H*W]`` (before the transpose that makes them tokens)
FLAT = "flat"


@dataclass(frozen=True)
class Val:
    """A traced tensor as a graph value: graph id ``node`` seen through ``layout``.

    ``cf``: ``[N, *shape]`` as the graph holds it; ``cl``: ``[N, H, W, C]`` (channels-last view of ``[C, H, W]``);
    ``grouped``: ``[N, g, C/g, H, W]``; ``grouped_t``: ``[N, C/g, g, H, W]`` (``g`` = ``groups``); ``tnd``:
    ``[T, N, D]`` (time-first view of a sequence ``[T, D]``); ``tokens``: the integer token ids ``[N, T]``;
    ``flat``: ``[N, C, H*W]`` (an image's positions flattened, which a transpose makes tokens).
    """
    node: str
    layout: str = CF
    groups: int = 0


@dataclass(frozen=True)
class Pieces:
    """The result of ``chunk``/``split`` along the channels of ``source``: ``(start, stop)`` of each piece."""
    source: Val
    bounds: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Unconverted:
    """A traced value the graph does not hold (an LSTM's final state, attention weights): an error if it is used."""
    what: str


#: axis labels of hand-written attention's tensors (batch included): ``N`` batch, ``T`` tokens (the queries), ``S``
#: tokens (the keys), ``P`` the q/k/v parts of a fused projection, ``H`` heads, ``E`` head_dim, ``F`` features
SEQ_AXES = ("N", "T", "F")


@dataclass(frozen=True)
class Projected:
    """Rows ``rows`` of the linear node ``proj`` (a projection of a sequence) on their way into hand-written
    attention (timm's ``Attention``, nanoGPT's ``CausalSelfAttention``): the traced tensor's axes are ``axes``
    (:data:`SEQ_AXES`' labels); ``heads`` and ``head_dim`` once it is reshaped into heads; ``scale`` a number it
    was multiplied by (timm's ``q * self.scale``)."""
    proj: str
    rows: tuple[int, int]
    axes: tuple[str, ...] = SEQ_AXES
    heads: int = 0
    head_dim: int = 0
    scale: float = 1.0


@dataclass(frozen=True)
class Attended:
    """Hand-written attention of the projections ``q``, ``k`` (and ``v``), by ``stage``: ``scores`` (``q @ k^T``),
    ``probs`` (their softmax over the keys), ``out`` (``probs @ v``, or ``scaled_dot_product_attention``'s result),
    ``merged`` (its heads reshaped back to features, which the output projection reads), seen through ``axes``."""
    stage: str
    q: Projected
    k: Projected
    v: Optional[Projected] = None
    axes: tuple[str, ...] = ("N", "H", "T", "S")
    scale: float = 1.0
    causal: bool = False
    dropout: float = 0.0


#: the values of hand-written attention before its output projection
HAND = (Projected, Attended)


@dataclass(frozen=True)
class Tail:
    """``x[:, skip:]`` of a batch-first sequence (the tokens after its prefix tokens), which a mean over the tokens
    reads (a ``token_pool`` with ``skip``)."""
    source: Val
    skip: int


@dataclass(frozen=True)
class Param:
    """A parameter or buffer of the module read by a ``get_attr`` node (or a constant computed from them)."""
    name: str
    tensor: torch.Tensor


def layout_words(val: Val) -> str:
    """How an error names ``val``'s layout."""
    return {CL: "channels-last", GROUPED: "grouped [N, g, C/g, H, W]",
            GROUPED_T: "transposed grouped [N, C/g, g, H, W]", TND: "time-first [T, N, D]",
            FLAT: "flattened [N, C, H*W] (a reshape or flatten(2) of an image, which a transpose makes tokens)",
            TOKENS: "token id"}.get(val.layout, "channels-first")


def hand_words(value) -> str:
    """How an error names a step of hand-written attention."""
    if isinstance(value, Projected):
        what = "heads" if value.heads else "rows"
        return f"the {what} [{', '.join(value.axes)}] of the projection '{value.proj}'"
    return f"the attention {value.stage} [{', '.join(value.axes)}] of '{value.q.proj}'"
