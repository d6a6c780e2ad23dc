"""Coupled channels: which channels of a graph must be removed, added or split together.

One worklist over the graph (topological order) gives every channel position of every value (a graph input or a
node's output; the channel axis is the first of ``[C, H, W]`` and ``[F]``, the last of a sequence ``[T, D]``) a
*token*, driven by the op's channel role in :mod:`archgraph.ops.registry`:

- SOURCE (conv, linear) and GROUPED convs make fresh tokens, and so do graph inputs;
- THROUGH ops (norms, activations, pools, depthwise convs) pass their input's tokens on;
- CONCAT lays its inputs' tokens one after another;
- FLATTEN keeps its input's tokens, each now standing for a block of ``H*W`` features;
- MERGE (add, mul) passes its first tied input's tokens on and ties the other inputs' tokens to them, position by
  position (a mul factor that broadcasts, like squeeze-excitation's ``[C, 1, 1]``, is tied as well; one of size 1
  on a wider axis is not);
- SHUFFLE (channel_shuffle, radix_softmax) permutes its input's tokens and ties the input channels ``k * C/b + i``
  of every block ``k`` (the op's ``shuffle`` fact gives ``b`` and the permutation): a channel shuffle's blocks are
  its groups (one column of the ``[g, C/g]`` grid goes at a time and the shuffle stays a shuffle), a radix softmax's
  the ``[cardinality, radix]`` blocks it normalises across;
- SLICE passes the tokens of its range on (a slice of a flattened value makes frozen fresh tokens);
- GROUPED convs make fresh tokens and tie nothing: each group keeps its own channels. Their input and output are
  split into ``groups`` equal groups (a :class:`Grouping`); pruning must take the same *number* of channels from
  every group (which ones, each group chooses), so that the groups stay equal. Where the classes of a grouping do
  not allow that choice per group (a class spread unevenly over the groups, or split into groups differently by
  another grouped conv), the channels at the same position of every group are tied instead, as a channel shuffle
  ties its columns;
- MIXER (attention) makes fresh tokens tied to its input's, position by position: its output has as many channels
  as its input, so a residual stream ``x + attention(norm(x))`` is one space. Its heads are groups of ``head_dim``
  rows of one projection, inside the node: :func:`heads` lists them.

Tied tokens form a *class* (union-find): the channels that change together. A class is *frozen* when it touches
something whose width cannot change: a graph input or output, a broadcast mul
factor, a merge of values laid out differently. Each role's step is one handler in
:mod:`archgraph.channels.roles`, beside the same role's step in a rule's result. Nothing here imports torch.

>>> import archgraph
>>> ch = analyse(archgraph.load("examples/seeds/resnet_cifar.yaml"))
>>> sorted(ch.space("b1_c2").producers)     # the residual add ties these producers' channels
['b1_c2', 'stem']
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional

# the channel roles, re-exported: rules and tests name them from here
from ..ops.registry import CONCAT as CONCAT
from ..ops.registry import FLATTEN as FLATTEN
from ..ops.registry import GROUPED as GROUPED
from ..ops.registry import MERGE as MERGE
from ..ops.registry import MIXER as MIXER
from ..ops.registry import OPS, channel_width
from ..ops.registry import SHUFFLE as SHUFFLE
from ..ops.registry import SLICE as SLICE
from ..ops.registry import SOURCE as SOURCE
from ..ops.registry import THROUGH as THROUGH
from ..topology import topological_order


@dataclass(frozen=True)
class Slots:
    """The channel tokens of one value, axis 0; ``blocks[i]`` features stand for token ``i`` (after a flatten)."""

    tokens: tuple[int, ...]
    blocks: Optional[tuple[int, ...]] = None  # None: one feature per token

    @property
    def width(self) -> int:
        return len(self.tokens) if self.blocks is None else sum(self.blocks)

    def block_sizes(self) -> tuple[int, ...]:
        return (1,) * len(self.tokens) if self.blocks is None else self.blocks

    def filtered(self, keep) -> "Slots":
        """The slots whose token passes ``keep``."""
        if self.blocks is None:
            return Slots(tuple(t for t in self.tokens if keep(t)))
        pairs = [(t, b) for t, b in zip(self.tokens, self.blocks) if keep(t)]
        return Slots(tuple(t for t, _ in pairs), tuple(b for _, b in pairs))

    def appended(self, tokens: Iterable[int]) -> "Slots":
        tokens = tuple(tokens)
        if self.blocks is None:
            return Slots(self.tokens + tokens)
        raise ValueError("cannot append to a flattened layout")


def concat_slots(parts: list[Slots]) -> Slots:
    tokens = tuple(itertools.chain.from_iterable(p.tokens for p in parts))
    if all(p.blocks is None for p in parts):
        return Slots(tokens)
    return Slots(tokens, tuple(itertools.chain.from_iterable(p.block_sizes() for p in parts)))


def flatten_slots(slots: Slots, shape: tuple[int, ...]) -> Slots:
    """A ``[C, ...]`` value flattened: each channel becomes a block of ``prod(shape[1:])`` features."""
    inner = 1
    for s in shape[1:]:
        inner *= s
    return Slots(slots.tokens, tuple(b * inner for b in slots.block_sizes()))


def tied_inputs(in_shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]) -> list[bool]:
    """For a MERGE: which inputs share the output's channel axis (the others broadcast along it)."""
    return [len(s) == len(out_shape) and channel_width(s) == channel_width(out_shape) for s in in_shapes]


class UnionFind:
    """Union-find over ints; the smaller root wins, so older tokens name the classes."""

    def __init__(self, parent: Optional[dict[int, int]] = None):
        self.parent: dict[int, int] = dict(parent or {})

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:  # path compression
            up = parent[x]
            parent[x] = root
            x = up
        return root

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        return ra

    def copy(self) -> "UnionFind":
        return UnionFind(self.parent)


@dataclass(frozen=True)
class Grouping:
    """The channels of the input (``side="in"``) or output (``"out"``) of grouped conv ``node``, split into
    ``groups`` equal groups: ``tokens[k * len(tokens) // groups:][:len(tokens) // groups]`` is group ``k``."""

    node: str
    side: str
    groups: int
    tokens: tuple[int, ...]

    def group(self, k: int) -> tuple[int, ...]:
        per = len(self.tokens) // self.groups
        return self.tokens[k * per:(k + 1) * per]

    def why(self) -> str:
        return (f"{'read' if self.side == 'in' else 'made'} by grouped conv '{self.node}' (groups={self.groups}): "
                "the same number of channels must go from every group")


@dataclass(frozen=True)
class Space:
    """The channels of one producer and everything tied to them (see :meth:`Channels.space`)."""

    node: str
    classes: tuple[int, ...]            # class of each of the node's output channels, in order
    producers: tuple[str, ...]          # every node (or input) that makes channels of these classes
    tokens: dict[str, tuple[int, ...]]  # producer -> its token for each class, in ``classes`` order
    frozen: Optional[str] = None        # why the space cannot change width, if it cannot
    irregular: Optional[str] = None     # why producers cannot all be widened the same way, if they cannot


@dataclass
class Channels:
    """The token layout and coupling classes of one graph (see the module docstring)."""

    graph: Any
    roles: dict[str, str]
    slots: dict[str, Slots]
    uf: UnionFind
    producer: dict[int, str]            # token -> the input or node that makes it
    frozen_tokens: dict[int, str]       # token -> why it cannot change
    next_token: int
    mixing: list[str] = field(default_factory=list)   # nodes whose channels depend on each other (layernorm)
    ties: dict[int, str] = field(default_factory=dict)  # token -> why it is tied to others of its own value
    groupings: list[Grouping] = field(default_factory=list)  # the groups of every grouped conv's input and output
    _frozen: Optional[dict[int, str]] = None
    _members: Optional[dict[int, list[int]]] = None
    _roots: Optional[dict[int, int]] = None
    _grouped: Optional[dict[int, Grouping]] = None

    # ---- classes --------------------------------------------------------------------------------------------
    def roots(self) -> dict[int, int]:
        """Token -> class, for every token (computed once: the analysis is never changed afterwards; rules tie new
        tokens in a copy of ``uf``)."""
        if self._roots is None:
            find = self.uf.find
            self._roots = {t: find(t) for t in self.producer}
        return self._roots

    def cls(self, token: int) -> int:
        root = self.roots().get(token)
        return self.uf.find(token) if root is None else root

    def classes(self, value: str) -> list[int]:
        """Class of each channel (slot) of a value, in order."""
        roots = self.roots()
        return [roots[t] if t in roots else self.uf.find(t) for t in self.slots[value].tokens]

    def members(self, root: int) -> list[int]:
        if self._members is None:
            members: dict[int, list[int]] = {}
            for t, r in self.roots().items():
                members.setdefault(r, []).append(t)
            self._members = members
        return self._members.get(root, [root])

    def frozen(self, root: int) -> Optional[str]:
        """Why the class cannot change (None when it can)."""
        if self._frozen is None:
            frozen: dict[int, str] = {}
            for t, why in self.frozen_tokens.items():
                frozen.setdefault(self.uf.find(t), why)
            self._frozen = frozen
        return self._frozen.get(root)

    def grouped_by(self) -> dict[int, Grouping]:
        """Class -> the first grouped conv side that splits it into groups (computed once)."""
        if self._grouped is None:
            self._grouped = {}
            for gr in self.groupings:
                if gr.groups > 1:
                    for t in gr.tokens:
                        self._grouped.setdefault(self.cls(t), gr)
        return self._grouped

    def local_blocks(self) -> dict[int, frozenset]:
        """Class -> the classes of its group of a grouped conv's input or output, for the classes each group chooses
        alone (see :func:`settle_groupings`): the same number must go from every such block of a grouping."""
        out: dict[int, frozenset] = {}
        for gr in self.groupings:
            if gr.groups > 1:
                for block in grouping_blocks(self.uf, gr, self.cls)[1]:
                    for c in block:
                        out[c] = block
        return out

    def unbalanced(self, removed: set[int]) -> Optional[str]:
        """Why removing these classes would leave the groups of a grouped conv unequal (None when it would not)."""
        find = self.uf.find
        for gr in self.groupings:
            gone = [sum(1 for t in gr.group(k) if find(t) in removed) for k in range(gr.groups)]
            if len(set(gone)) > 1:
                side = "input" if gr.side == "in" else "output"
                listed = ", ".join(f"{n} from group {k}" for k, n in enumerate(gone[:4])) + \
                    (", ..." if gr.groups > 4 else "")
                return (f"grouped conv '{gr.node}' (groups={gr.groups}) would lose {listed} of its {side} channels; "
                        "the same number must go from every group (each group chooses which)")
        return None

    def producers(self, root: int) -> set[str]:
        return {self.producer[t] for t in self.members(root)}

    # ---- spaces ---------------------------------------------------------------------------------------------
    def space(self, node: str) -> Space:
        """The channel space of ``node``'s output: its classes and every producer tied to them.

        ``frozen`` says why it cannot change width; ``irregular`` says why adding a channel after its last one is
        impossible (see :meth:`placement`): a producer whose own channels are tied to each other, the groups of a
        grouped conv, or producers that make overlapping parts of it. ``tokens`` holds the producers that make all
        of its channels.
        """
        classes = tuple(self.classes(node))
        producers: set[str] = set()
        for root in set(classes):
            producers |= self.producers(root)
        frozen = next((why for why in map(self.frozen, classes) if why), None)
        irregular = None
        wanted = set(classes)
        tokens: dict[str, tuple[int, ...]] = {}
        if len(wanted) != len(classes):
            irregular = f"the channels of '{node}' are tied to each other{self._tie_reason(node)}"
        grouped = next((self.grouped_by()[c] for c in classes if c in self.grouped_by()), None)
        if grouped is not None and irregular is None:
            irregular = f"{grouped.why()}, so a new channel would have to go into every group"
        for p in sorted(producers):
            own = self.slots[p].tokens
            by_class = {self.cls(t): t for t in own}
            if len(by_class) != len(own):
                irregular = irregular or f"the channels of '{p}' are tied to each other{self._tie_reason(p)}"
            elif set(by_class) == wanted:
                tokens[p] = tuple(by_class[c] for c in classes)
        if irregular is None and classes:
            placed = self.placement(node, classes[-1], producers)
            irregular = placed if isinstance(placed, str) else None
        return Space(node, classes, tuple(sorted(producers)), tokens, frozen, irregular)

    def placement(self, node: str, anchor: int, producers: Optional[Iterable[str]] = None):
        """Where a new channel next to class ``anchor`` (one of ``node``'s) goes: ``(receivers, block)``, the
        producers that get it and the classes after whose last one it goes in each (a concat's part: the new
        channel is appended to the producers of that part and inserted at the matching place in the producers of
        the whole); or why it cannot (a string).

        The block is every class that the producers of ``anchor`` all make; every producer of a class of the block
        must make the whole block, else the parts overlap and no place fits them all.

        >>> import archgraph
        >>> g = archgraph.loads('''
        ... archgraph: 1
        ... inputs: {x: [2, 4, 4]}
        ... nodes:
        ...   a:   {op: conv2d, in: x, out_channels: 2, kernel_size: 1}
        ...   b:   {op: conv2d, in: x, out_channels: 3, kernel_size: 1}
        ...   cat: {op: concat, in: [a, b]}
        ...   c:   {op: conv2d, in: x, out_channels: 5, kernel_size: 1}
        ...   sum: {op: add, in: [cat, c]}
        ...   out: {op: conv2d, in: sum, out_channels: 1, kernel_size: 1}
        ... outputs: [out]
        ... ''')
        >>> ch = analyse(g)
        >>> receivers, block = ch.placement("c", ch.classes("c")[-1])
        >>> receivers, sorted(block) == sorted(ch.classes("b"))
        (('b', 'c'), True)
        """
        makes = {}

        def made(p: str) -> frozenset:
            if p not in makes:
                makes[p] = frozenset(self.cls(t) for t in self.slots[p].tokens)
            return makes[p]

        holders = sorted(self.producers(anchor))
        block = frozenset.intersection(*(made(p) for p in holders))
        if producers is None:   # of every class of node (the block is part of them: node makes the anchor)
            producers = set()
            for c in set(self.classes(node)):
                producers |= self.producers(c)
        receivers = {q for q in producers if made(q) & block}
        for q in sorted(receivers):
            if not block <= made(q):
                return (f"'{q}' makes only part of the channels of a concat tied to '{node}', and the parts "
                        "overlap: a new channel has no place that fits them all")
            if len(made(q)) != len(self.slots[q].tokens):
                return f"the channels of '{q}' are tied to each other{self._tie_reason(q)}"
            if q not in self.roles:
                return f"it would widen graph input '{q}'"
        return tuple(sorted(receivers)), block

    def _tie_reason(self, value: str) -> str:
        why = next((self.ties[t] for t in self.slots[value].tokens if t in self.ties), None)
        return f" ({why})" if why else ""

    def spaces(self) -> list[Space]:
        """One :class:`Space` per group of producers whose channels are tied together (each producer once)."""
        seen: set[str] = set()
        out = []
        for nid, role in self.roles.items():
            if not producing_role(role) or nid in seen:
                continue
            space = self.space(nid)
            seen.update(space.producers)
            out.append(space)
        return out

    def readers(self, root_set: set[int]) -> list[str]:
        """Nodes whose output or input carries a channel of one of these classes (in graph order)."""
        find = self.uf.find
        out = []
        for nid, node in self.graph.nodes.items():
            values = [nid, *node.inputs]
            if any(find(t) in root_set for v in values for t in self.slots[v].tokens):
                out.append(nid)
        return out

    def mixes(self, root_set: set[int]) -> Optional[str]:
        """A node (layernorm) whose channels depend on each other and that carries one of these classes."""
        find = self.uf.find
        for nid in self.mixing:
            src = self.graph.nodes[nid].inputs[0]
            if any(find(t) in root_set for t in self.slots[src].tokens):
                return nid
        return None


@dataclass
class Analysis:
    """The state of :func:`analyse`'s pass, handed to each role's :meth:`~archgraph.channels.roles.Role.analyse`."""

    graph: Any
    shapes: dict
    uf: UnionFind = field(default_factory=UnionFind)
    slots: dict[str, Slots] = field(default_factory=dict)
    producer: dict[int, str] = field(default_factory=dict)   # token -> the input or node that makes it
    frozen: dict[int, str] = field(default_factory=dict)     # token -> why it cannot change
    ties: dict[int, str] = field(default_factory=dict)
    groupings: list[Grouping] = field(default_factory=list)
    counter: Iterator[int] = field(default_factory=itertools.count)

    def fresh(self, nid: str, width: int) -> Slots:
        """``width`` new tokens made by ``nid``."""
        tokens = tuple(itertools.islice(self.counter, width))
        for t in tokens:
            self.producer[t] = nid
        return Slots(tokens)

    def freeze(self, s: Slots, why: str) -> None:
        for t in s.tokens:
            self.frozen.setdefault(t, why)


def analyse(graph) -> Channels:
    """Tokens, classes and frozen reasons of every channel of ``graph`` (one pass in topological order; each op's
    channel role says what its output's tokens are, through the role's handler in :mod:`archgraph.channels.roles`)."""
    from .roles import HANDLERS  # roles builds on this module's data structures

    a = Analysis(graph, graph.shapes())
    roles: dict[str, str] = {}
    mixing: list[str] = []
    for name, shape in graph.inputs.items():
        a.slots[name] = a.fresh(name, channel_width(shape))
        a.freeze(a.slots[name], f"it comes from graph input '{name}'")
    for nid in topological_order(graph):
        node = graph.nodes[nid]
        coupling = OPS[node.op].coupling
        ins = [a.shapes[i] for i in node.inputs]
        roles[nid] = role = coupling.role(node, ins)
        if coupling.mixes(node, ins):
            mixing.append(nid)
        a.slots[nid] = HANDLERS[role].analyse(a, nid, node, ins)
    for out in graph.outputs:
        a.freeze(a.slots[out], f"it reaches graph output '{out}'")
    settle_groupings(a.uf, a.groupings, a.ties)
    return Channels(graph, roles, a.slots, a.uf, a.producer, a.frozen, next(a.counter), mixing, a.ties, a.groupings)


def settle_groupings(uf: UnionFind, groupings: list[Grouping], ties: Optional[dict[int, str]] = None) -> None:
    """Tie the same position of every group of each grouping whose groups cannot choose their channels alone.

    A grouping lets each group choose when every class in it is *local* (one channel, in one group) or *even* (as
    many channels in every group), and every local class lies in the same group of classes in every grouping that
    has it. Otherwise its positions are tied (then every class in it is even), and the others are checked again."""
    changed = True
    while changed:
        changed = False
        block_of: dict[int, frozenset] = {}
        for gr in groupings:
            if gr.groups < 2:
                continue
            ok, blocks = grouping_blocks(uf, gr)
            if ok:
                for block in blocks:
                    for c in block:
                        if block_of.setdefault(c, block) != block:
                            ok = False
            if not ok:
                tie_groups(uf, Slots(gr.tokens), gr.groups, ties, f"{gr.why()}; its classes do not let each group "
                                                                  "choose, so channels go at the same position of "
                                                                  "every group")
                changed = True
                break


def grouping_blocks(uf: UnionFind, gr: Grouping, find=None) -> tuple[bool, list[frozenset]]:
    """Whether each group of ``gr`` can choose its channels (see :func:`settle_groupings`), and the local classes
    of every group (one block per group)."""
    counts: dict[int, list[int]] = {}
    find = find or uf.find
    for k in range(gr.groups):
        for t in gr.group(k):
            counts.setdefault(find(t), [0] * gr.groups)[k] += 1
    blocks: list[set[int]] = [set() for _ in range(gr.groups)]
    for c, per in counts.items():
        if len(set(per)) == 1:
            continue   # even: as many in every group
        if sum(per) != 1:
            return False, []   # uneven: some groups hold more of it than others
        blocks[per.index(1)].add(c)
    return True, [frozenset(b) for b in blocks]


def tie_groups(uf: UnionFind, slots: Slots, groups: int, ties: Optional[dict[int, str]] = None,
               why: str = "") -> None:
    """Tie the channels at the same position of every one of ``groups`` equal groups (noting ``why`` in ``ties``)."""
    per = len(slots.tokens) // groups
    for i in range(per):
        for k in range(1, groups):
            uf.union(slots.tokens[i], slots.tokens[k * per + i])
    if ties is not None and groups > 1:
        for t in slots.tokens:
            ties.setdefault(t, why)


def permuted(slots: Slots, perm: list[int]) -> Slots:
    """The tokens after a fixed permutation (a SHUFFLE op's): output ``c`` is input ``perm[c]``."""
    return Slots(tuple(slots.tokens[p] for p in perm))


def producing_role(role: str) -> bool:
    """Roles whose output tokens are made by the node itself (SOURCE, GROUPED, MIXER: see
    :attr:`archgraph.channels.roles.Role.producing`)."""
    from .roles import HANDLERS  # as above: roles builds on this module
    return HANDLERS[role].producing


@dataclass(frozen=True)
class Head:
    """One query head of an attention node: rows ``q_rows`` of ``q_proj`` (the same columns of ``o_proj``), reading
    kv head ``kv`` (rows ``kv_rows`` of ``k_proj`` and ``v_proj``)."""

    node: str
    index: int
    kv: int
    q_rows: range
    kv_rows: range


def heads(graph, node: str) -> list[Head]:
    """The query heads of attention node ``node`` as channel groups of its projections (Hugging Face's
    ``repeat_kv`` order: head ``h`` reads kv head ``h // (num_heads // kv_heads)``).

    >>> import archgraph
    >>> g = archgraph.load("examples/seeds/gpt_tiny.yaml")
    >>> [(h.index, h.kv, h.q_rows) for h in heads(g, "b0_attn")][:2]
    [(0, 0, range(0, 16)), (1, 1, range(16, 32))]
    """
    n = graph.nodes[node]
    found = OPS[n.op].coupling.heads(n, graph.input_shapes(node))
    if found is None:
        raise ValueError(f"'{node}' ({n.op}) has no heads")
    h, hd, _ = found
    kv = getattr(n, "kv_heads", None) or h   # window attention: every head its own k and v
    per = h // kv
    return [Head(node, i, i // per, range(i * hd, (i + 1) * hd), range((i // per) * hd, (i // per + 1) * hd))
            for i in range(h)]
