"""Transfer plans as plain data: how every tensor of a new graph version is made from the old version's tensors.

A rule returns a :class:`TransferPlan` next to the new graph; :mod:`archgraph.fx.apply_plan` applies it to a module,
a state dict or an optimizer. For each tensor (``"<node_id>.<param>"``) of the new version the plan names the old
tensor it comes from and, for each axis that changed, an :class:`AxisMap`: the old index of every new position
(``-1`` for a new entry), how new entries start and an optional factor per position. Tensors without a source are
new and start as :attr:`TensorPlan.fill` says. Nothing here imports torch.

>>> import archgraph
>>> from archgraph import rules
>>> rw = archgraph.apply(archgraph.load("examples/seeds/tiny_cnn.yaml"), rules.AddFilters(node="c1", count=2))
>>> rw.plan.tensors["c1.weight"].axes[0][1].index[-3:]       # c1 gets two new output channels
(3, -1, -1)
>>> rw.plan.tensors["c2.weight"].axes[0][1].fill             # ... which c2 reads with zero weights
'zero'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class AxisMap:
    """One changed axis of a tensor: ``index[i]`` is the old position new position ``i`` copies, ``-1`` if new."""

    index: tuple[int, ...]
    old_size: int
    #: new entries (``-1``): ``"init"`` keeps what the freshly built module holds, ``"zero"`` zeroes them
    fill: str = "init"
    #: a factor per new position applied to the copied values (Net2Net's division of outgoing weights), or None
    scale: Optional[tuple[float, ...]] = None
    #: new positions that copy an old entry another position keeps too (net2net, split): their optimizer state
    #: starts at zero
    copied: frozenset = frozenset()
    #: new positions that start at zero whatever ``fill`` says (a new recurrent unit's cell-candidate rows)
    zero: frozenset = frozenset()
    #: a grouped conv's in-group axis (axis 1 of its weight) when its groups keep different channels: ``groups[k]``
    #: is the index for the entries of group ``k`` along axis 0 (``index`` is ``groups[0]``; new entries, ``-1``,
    #: are at the same positions in every group); None when every group keeps the same positions
    groups: Optional[tuple[tuple[int, ...], ...]] = None
    #: a value per new position added after ``scale`` (a norm whose gain is ``offset + weight`` scaled as a whole:
    #: HyperCloning's tied head), or None
    shift: Optional[tuple[float, ...]] = None

    @property
    def size(self) -> int:
        return len(self.index)

    def tiled(self, blocks: int, quiet: Optional[int] = None) -> "AxisMap":
        """The map of an axis holding ``blocks`` gate blocks of these channels one after another (an LSTM's
        ``[4 * hidden, ...]``); the new positions of block ``quiet`` start at zero.

        >>> AxisMap((0, -1), 1).tiled(2, quiet=1).index, AxisMap((0, -1), 1).tiled(2, quiet=1).zero
        ((0, -1, 1, -1), frozenset({3}))
        """
        n, old = self.size, self.old_size
        index = tuple(i + b * old if i >= 0 else -1 for b in range(blocks) for i in self.index)
        scale = None if self.scale is None else tuple(self.scale) * blocks
        copied = frozenset(i + b * n for b in range(blocks) for i in self.copied)
        zero = set(i + b * n for b in range(blocks) for i in self.zero)
        if quiet is not None:
            zero |= {quiet * n + i for i, src in enumerate(self.index) if src < 0}
        shift = None if self.shift is None else tuple(self.shift) * blocks
        return AxisMap(index, old * blocks, self.fill, scale, copied, frozenset(zero), shift=shift)

    def describe(self) -> str:
        kept = sum(1 for i in self.index if i >= 0) - len(self.copied)
        new = sum(1 for i in self.index if i < 0)
        bits = [f"{self.old_size}->{self.size}"]
        if kept < self.old_size:
            bits.append(f"{self.old_size - kept} removed")
        if new:
            bits.append(f"{new} new ({self.fill})")
        if self.copied:
            bits.append(f"{len(self.copied)} copied")
        if self.scale is not None or self.shift is not None:
            bits.append("scaled")
        return ", ".join(bits)


@dataclass(frozen=True)
class Noise:
    """Symmetric noise on pairs of positions along ``axis``: ``+eps*z`` on the first, ``-eps*z`` on the second
    (``z`` standard normal, drawn from ``seed``); used when a unit is split in two."""

    axis: int
    pairs: tuple[tuple[int, int], ...]
    eps: float
    seed: int


@dataclass(frozen=True)
class TensorPlan:
    """How one tensor of the new version is made."""

    #: the old tensor it comes from (``"<node_id>.<param>"``), or None for a new tensor
    source: Optional[str]
    #: ``((axis, AxisMap), ...)`` for the axes that changed; empty means an unchanged copy. A new tensor (no
    #: ``source``) may have them too: its entries start as ``fill`` says, except those at the map's new positions
    #: (``-1``), which start as the map's fill (a norm's mask gaining channels that enter at 0)
    axes: tuple[tuple[int, AxisMap], ...] = ()
    #: how a new tensor starts: ``"init"`` (as built), ``"zero"``, ``"ones"``, ``"value"`` (``value`` everywhere),
    #: ``"dirac"`` (identity conv) or ``"eye"`` (identity matrix)
    fill: str = "init"
    value: float = 0.0
    noise: Optional[Noise] = None

    @property
    def unchanged(self) -> bool:
        return self.source is not None and not self.axes and self.noise is None

    def fresh(self, axis: int) -> tuple[int, ...]:
        """Positions along ``axis`` that are new entries (e.g. the columns a reader gets for new channels: where a
        training loop writes GradMax's outgoing weights)."""
        for a, m in self.axes:
            if a == axis:
                return tuple(i for i, old in enumerate(m.index) if old < 0)
        return ()

    def describe(self) -> str:
        if self.source is None:
            return f"new ({self.fill}{'=' + repr(self.value) if self.fill == 'value' else ''})"
        if self.unchanged:
            return "copied"
        bits = [f"axis {a}: {m.describe()}" for a, m in self.axes]
        if self.noise is not None:
            bits.append(f"noise eps={self.noise.eps} on {len(self.noise.pairs)} pair(s)")
        return "; ".join(bits)


@dataclass(frozen=True)
class TransferPlan:
    """Every tensor (parameter or buffer) of the new version, keyed ``"<node_id>.<param>"``."""

    tensors: dict[str, TensorPlan]
    #: old tensors nothing is made from (removed nodes)
    dropped: tuple[str, ...] = ()
    #: whether the new graph computes the same function as the old one for any weights (in eval mode)
    exact: bool = False
    #: why it is not exact (or the condition under which it is), for people
    note: str = ""
    #: new node id -> old node id (None for a new node)
    nodes: dict[str, Optional[str]] = field(default_factory=dict)

    def changed(self) -> dict[str, TensorPlan]:
        """The tensors that are not plain copies."""
        return {k: t for k, t in self.tensors.items() if not t.unchanged}

    def describe(self) -> str:
        """A few lines for people: the tensors that change and how."""
        lines = [f"{k}: {t.describe()}" for k, t in self.changed().items()]
        lines += [f"{k}: dropped" for k in self.dropped]
        return "\n".join(lines) if lines else "(no tensor changes)"
