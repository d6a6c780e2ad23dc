"""Depth by copying: ``stack_block`` (G_stack, Du et al. 2024) inserts a copy of an existing block, its weights
included, after a value of the same width.

A block is the part of the graph between a value ``start`` it reads and its output ``end``: every node that reads
``start`` (directly or not) and that ``end`` depends on. The copy reads ``after`` (default ``end``, so the copy
follows its original) and every old reader of ``after`` reads the copy's output instead.

A copied block adds its residual contributions a second time, so with ``init=copy`` (G_stack's) the function
changes (``exact: false``). With ``init=zero`` the layers that write the copy's residual branches (the last conv,
linear or attention output projection of each branch joining the stream at a residual add) start at zero and
every other weight is copied: the copy adds nothing, so the function is kept exactly while the rest of the block
starts trained (the stream from ``start`` to ``end`` must be residual adds only, as in a pre-norm transformer).

>>> import archgraph
>>> g = archgraph.load("examples/seeds/gpt_tiny.yaml")
>>> rw = archgraph.apply(g, StackBlock(start="b0_res2", end="b1_res2", prefix="b2_", init="zero"))
>>> [n for n in rw.graph.nodes if n.startswith("b2_")][:3], rw.exact
(['b2_ln1', 'b2_attn', 'b2_res1'], True)
>>> archgraph.apply(g, StackBlock(start="b0_res2", end="b1_res2")).plan.note[:40]
'the copy adds its residual contributions'
"""
from __future__ import annotations

import dataclasses
import os
from typing import ClassVar, Literal, Optional

from ..channels import analyse, producing_role
from ..graph import Graph
from ..ops.registry import OPS
from ..plan import TensorPlan
from .base import Rewrite, Rule, fresh_id, rewire
from .draft import Draft, realise


class StackBlock(Rule):
    """Insert a copy of the block from ``start`` (exclusive) to ``end`` (inclusive) after ``after``."""

    name: ClassVar[str] = "stack_block"
    start: str
    end: str
    after: Optional[str] = None     # default: ``end``
    init: Literal["copy", "zero"] = "copy"
    prefix: Optional[str] = None     # the copies' ids: the block's common id prefix replaced by it

    def apply(self, graph: Graph) -> Rewrite:
        self.need_node(graph, self.start, field="start", inputs_ok=True)
        self.need_node(graph, self.end, field="end")
        after = self.after or self.end
        self.need_node(graph, after, field="after", inputs_ok=True)
        block = self.block(graph)
        shapes = graph.shapes()
        if shapes[self.start] != shapes[self.end] or shapes[after] != shapes[self.start]:
            raise self.error(f"the block maps {list(shapes[self.start])} to {list(shapes[self.end])} and would read "
                             f"'{after}' {list(shapes[after])}: a stacked block needs all three alike",
                             node=self.end, field="after")
        ids = set(graph.nodes) | set(graph.inputs)
        names = self.copy_ids(block, ids)
        source = {**names, self.start: after}
        made = {}
        for nid in block:
            node = graph.nodes[nid]
            made[names[nid]] = node.replace(inputs=[source[i] for i in node.inputs])
        last = names[self.end]
        nodes: dict = {}
        if after in graph.inputs:
            nodes.update(made)
        for nid, node in rewire(graph.nodes, after, last).items():
            nodes[nid] = node
            if nid == after:
                nodes.update(made)
        outputs = [last if o == after else o for o in graph.outputs]
        writers, note = self.residual_writers(graph, block)
        fills = {}
        if self.init == "zero":
            for nid in writers:
                node = graph.nodes[nid]
                for param, (out_axis, _) in OPS[node.op].layout(node, graph.input_shapes(nid)).items():
                    if out_axis is not None:
                        fills[f"{names[nid]}.{param}"] = ("zero", 0.0)
        draft = Draft(graph, analyse(graph), nodes, outputs, fills=fills)
        if self.init == "copy":
            draft.exact, draft.note = False, ("the copy adds its residual contributions to the stream a second time "
                                              "(G_stack): not function-preserving; init=zero starts them at zero")
        else:
            draft.exact, draft.note = not note, note
        graph2, plan = realise(draft, self)
        tensors = dict(plan.tensors)
        for nid in block:   # the copies start from the original's weights and buffers (the zeroed ones aside)
            node = graph.nodes[nid]
            for param in OPS[node.op].layout(node, graph.input_shapes(nid)):
                key = f"{names[nid]}.{param}"
                if key not in fills:
                    tensors[key] = TensorPlan(f"{nid}.{param}")
        plan = dataclasses.replace(plan, tensors=tensors,
                                   nodes={**plan.nodes, **{names[n]: None for n in block}})
        return Rewrite(graph2, graph, self, plan)

    def block(self, graph: Graph) -> list[str]:
        """The block's node ids in graph order; a :class:`RuleError` when it reads from outside."""
        below = {self.start}
        for nid, node in graph.nodes.items():   # the nodes are in a valid order
            if any(i in below for i in node.inputs):
                below.add(nid)
        if self.end not in below:
            raise self.error(f"'{self.end}' does not depend on '{self.start}': no block lies between them",
                             node=self.end, field="end")
        above = {self.end}
        for nid in reversed(list(graph.nodes)):
            if nid in above:
                above.update(graph.nodes[nid].inputs)
        block = [nid for nid in graph.nodes if nid in below and nid in above and nid != self.start]
        inside = set(block) | {self.start}
        for nid in block:
            outside = [i for i in graph.nodes[nid].inputs if i not in inside]
            if outside:
                raise self.error(f"'{nid}' in the block reads '{outside[0]}' from outside it, so the block cannot "
                                 "be copied on its own", node=nid, field="start")
        return block

    def copy_ids(self, block: list[str], ids: set) -> dict[str, str]:
        common = os.path.commonprefix(block) if len(block) > 1 else ""
        common = common[:common.rfind("_") + 1] if "_" in common else ""
        names = {}
        for nid in block:
            base = f"{self.prefix}{nid[len(common):]}" if self.prefix is not None else f"{nid}_copy"
            names[nid] = fresh_id(ids, base)
            ids.add(names[nid])
        return names

    def residual_writers(self, graph: Graph, block: list[str]) -> tuple[list[str], str]:
        """The layers whose output the block's residual adds take from its branches, and why zeroing them would
        not keep the function ('' when it would)."""
        ch = analyse(graph)
        stream = {self.start}
        writers: list[str] = []
        for nid in block:
            node = graph.nodes[nid]
            if not OPS[node.op].residual or not any(i in stream for i in node.inputs):
                continue   # a branch's node (the stream's other readers start branches)
            stream.add(nid)
            for branch in (i for i in node.inputs if i not in stream):
                x = branch   # back through what keeps zeros (activations, dropout) to the layer writing it
                while x in graph.nodes and not producing_role(ch.roles[x]):
                    op = OPS[graph.nodes[x].op]
                    if op.shifts_zero or op.residual or len(graph.nodes[x].inputs) != 1:
                        return writers, (f"'{x}' ({graph.nodes[x].op}) on the branch joining the stream at '{nid}' "
                                         "does not keep a zero input at zero")
                    x = graph.nodes[x].inputs[0]
                if x not in graph.nodes:
                    return writers, f"the branch '{branch}' joining the stream at '{nid}' is not written by a layer"
                writers.append(x)
        if self.end not in stream:
            return writers, (f"'{self.end}' is not reached from '{self.start}' through residual adds only (a "
                             "post-norm block?): zeroed branches would not make the copy the identity")
        return writers, ""
