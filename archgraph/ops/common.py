"""What the op families share: shape helpers, the channel axis, function-call builders, name prefixes and
picture colours. Torch-free, as the whole registry."""
from __future__ import annotations

from typing import NoReturn, Optional

from ..errors import GraphError
from .opdef import THROUGH, Shape


def bad(field: Optional[str], message: str) -> NoReturn:
    raise GraphError(message, field=field)


def pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


RANK_NAMES = {1: "[F]", 2: "[T, D]", 3: "[C, H, W]"}


def need_rank(ins: list[Shape], rank: int, what: str) -> Shape:
    shape = ins[0]
    if len(shape) != rank:
        bad("in", f"needs a {RANK_NAMES[rank]} input ({what}), got shape {list(shape)}")
    return shape


def need_ranks(ins: list[Shape], ranks: tuple[int, ...], what: str) -> Shape:
    shape = ins[0]
    if len(shape) not in ranks:
        names = " or ".join(RANK_NAMES[r] for r in ranks)
        bad("in", f"needs a {names} input ({what}), got shape {list(shape)}")
    return shape


def channel_axis(shape) -> int:
    """The channel axis of a per-sample shape: the last of a sequence ``[T, D]``, the first of ``[C, H, W]`` and
    ``[F]``.

    >>> channel_axis((8, 16)), channel_axis((3, 28, 28)), channel_axis((10,))
    (1, 0, 0)
    """
    return 1 if len(shape) == 2 else 0


def channel_width(shape) -> int:
    """The number of channels of a per-sample shape (``D`` of a sequence ``[T, D]``, ``C`` of ``[C, H, W]``)."""
    return int(shape[channel_axis(shape)])


def tokens_of(shape) -> int:
    """The positions a weight is applied at: ``T`` of a sequence ``[T, D]``, else 1 (linear MACs)."""
    return int(shape[0]) if len(shape) == 2 else 1


def out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """Output length along one axis, exactly as PyTorch's ``pooling_output_shape`` (floor division rounds toward
    minus infinity; with ``ceil_mode`` a window that would start in the right padding is dropped)."""
    n = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (n - 1) * s >= size + p:
        n -= 1
    return n


def spatial(node, ins, *, dilation=True, pool=False) -> Shape:
    c, h, w = need_rank(ins, 3, node.op)
    k = pair(node.kernel_size)
    stride = node.stride if getattr(node, "stride", 1) is not None else node.kernel_size
    s = pair(stride)
    d = pair(node.dilation) if dilation else (1, 1)
    ceil_mode = getattr(node, "ceil_mode", False)
    if node.padding == "same":
        if s != (1, 1):
            bad("padding", "padding 'same' needs stride 1")
        return (c, h, w)
    p = (0, 0) if node.padding == "valid" else pair(node.padding)
    if pool and (p[0] > k[0] // 2 or p[1] > k[1] // 2):
        bad("padding", f"padding {list(p)} must be at most half the kernel size {list(k)}")
    ho = out_size(h, k[0], s[0], p[0], d[0], ceil_mode)
    wo = out_size(w, k[1], s[1], p[1], d[1], ceil_mode)
    if ho <= 0 or wo <= 0:
        bad("kernel_size", f"kernel {list(k)} does not fit the input's {h}x{w} positions (output would be {ho}x{wo})")
    return (c, ho, wo)


def same_shape(node, ins):
    return tuple(ins[0])


def rank_shape(rank):
    def shape(node, ins):
        return tuple(need_rank(ins, rank, node.op))
    return shape


def fixed(role):
    return lambda node, ins: role


def always(node, flags) -> bool:
    return True


def every(node, flags) -> bool:
    return all(flags)


def single(node, flags) -> bool:
    return len(flags) == 1


def call(target_of, **kwargs_of):
    """A function op: ``target_of(T)`` is the callable, ``kwargs_of`` map kwarg names to ``f(node)``."""
    def make(T, node):
        return target_of(T), {name: f(node) for name, f in kwargs_of.items()}
    return make


WEIGHT_COLOUR, LINEAR_COLOUR, NORM_COLOUR, MERGE_COLOUR, CONCAT_COLOUR = (
    "#cfe2ff", "#d1e7dd", "#fff3cd", "#f8d7da", "#e2d9f3")
EMBED_COLOUR, ATTENTION_COLOUR, TOKEN_COLOUR = "#ffe5d0", "#f7d6e6", "#e0f2f1"
RNN_COLOUR = "#fde2c8"
#: the role of the ops whose output channel c depends on input channel c only
ACT = fixed(THROUGH)
F_ = "torch.nn.functional."
A_ = "torch.ops.aten."   # the ATen overloads of a torch.export graph (models torch.fx cannot trace)
#: where :mod:`archgraph.fx.layers` lives, for the export and import tables
EXTRA = "archgraph.fx.layers"
