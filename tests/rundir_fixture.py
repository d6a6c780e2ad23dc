"""Write run directories in the exact format training writes (docs/history.md), for the history tests.

A run is a seed plus a list of :class:`Step` (rule name, rule arguments, the graph the rule made, growth or prune).
The steps either come from the real rules (:func:`steps_from_rules`, which applies each rule with
``archgraph.apply``) or from hand edits of the graph (:func:`edit_steps`, used where a test needs a log whose rule
records do NOT match the graphs, e.g. to check that replay notices). Metrics are made-up smooth curves: the history
tools only read them.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from archgraph.format.yaml_io import atomic_write_text, dumps
from archgraph.graph import content_hash

PRUNE_RULES = {"prune_channels", "delete_node", "collapse_layer"}


@dataclass(frozen=True)
class Step:
    rule: str
    args: dict
    graph: Any  # the Graph after the rule
    kind: str = "growth"


def steps_from_rules(seed, rules: Sequence) -> list[Step]:
    """Apply each rule object in turn with ``archgraph.apply`` and record it as the run would."""
    import archgraph
    steps, g = [], seed
    for rule in rules:
        g = archgraph.apply(g, rule).graph
        steps.append(Step(rule.name, rule.args(), g, getattr(rule, "kind", None) or
                          ("prune" if rule.name in PRUNE_RULES else "growth")))
    return steps


def widen(graph, node: str, count: int):
    """The graph with ``node``'s out width changed by ``count`` (negative: narrower); a hand edit, not a rule."""
    n = graph.nodes[node]
    key = "out_channels" if "out_channels" in n.fields() else "out_features"
    nodes = dict(graph.nodes)
    nodes[node] = n.replace(**{key: n.fields()[key] + count})
    return graph.replace(nodes=nodes)


def insert_after(graph, after: str, new_id: str, spec: dict):
    """The graph with a node ``spec`` reading ``after`` inserted, and every reader of ``after`` reading it."""
    nodes = {}
    for nid, n in graph.nodes.items():
        if after in n.inputs:
            n = n.replace(inputs=[new_id if i == after else i for i in n.inputs])
        nodes[nid] = n
        if nid == after:
            nodes[new_id] = {**spec, "in": after}
    if after in graph.inputs:
        nodes = {new_id: {**spec, "in": after}, **nodes}
    outputs = [new_id if o == after else o for o in graph.outputs]
    return graph.replace(nodes=nodes, outputs=outputs)


def edit_steps(seed, edits: Sequence[tuple[str, dict, Any]]) -> list[Step]:
    """Steps from (rule name, args, function graph -> graph) triples."""
    steps, g = [], seed
    for name, args, fn in edits:
        g = fn(g)
        steps.append(Step(name, dict(args), g, "prune" if name in PRUNE_RULES else "growth"))
    return steps


def write_run(path, seed, steps: Sequence[Step], *, epochs_per_version: int = 2, steps_per_epoch: int = 10,
              config: Optional[dict] = None, end: bool = True, write_versions: bool = True,
              extra_metrics: Optional[dict] = None) -> Path:
    """Write ``path`` as a run directory: versions/, history.jsonl, summary.json (when ``end``).
    ``extra_metrics`` are added to every epoch's metrics (strategies log their own, not always numbers)."""
    path = Path(path)
    (path / "versions").mkdir(parents=True, exist_ok=True)
    graphs = [seed] + [s.graph for s in steps]
    if write_versions:
        for k, g in enumerate(graphs):
            atomic_write_text(path / "versions" / f"{k:04d}.yaml", dumps(g))
    events: list[dict] = [{"event": "start", "version": 0, "hash": content_hash(seed),
                           "config": config or {"seed": 0, "strategy": "fixture"}, "time": 1_700_000_000.0}]
    epoch = step = 0
    nonzero = seed.params
    growth = prune = 0

    def metrics(v: int, g) -> dict:
        t = epoch + 1
        return {"train_loss": round(2.3 * math.exp(-0.25 * t) + 0.05, 6),
                "val_loss": round(2.3 * math.exp(-0.22 * t) + 0.08, 6),
                "train_acc": round(1 - 0.9 * math.exp(-0.3 * t), 6),
                "val_acc": round(1 - 0.9 * math.exp(-0.27 * t) - 0.02, 6),
                "params": g.params, "nonzero_params": nonzero, "macs": g.macs, "lr": 0.1, **(extra_metrics or {})}

    for v, g in enumerate(graphs):
        if v > 0:
            s = steps[v - 1]
            if s.kind == "prune":
                prune += 1
                nonzero = min(nonzero, g.params)
            else:
                growth += 1
                nonzero = nonzero + max(0, g.params - graphs[v - 1].params)
            nonzero = min(nonzero, g.params)
            events.append({"event": "rewrite", "rule": s.rule, "args": s.args, "version": v, "parent": v - 1,
                           "hash": content_hash(g), "parent_hash": content_hash(graphs[v - 1]), "epoch": epoch,
                           "step": step, "kind": s.kind,
                           "metrics": {"params": g.params, "nonzero_params": nonzero, "macs": g.macs}})
        for _ in range(epochs_per_version):
            step += steps_per_epoch
            events.append({"event": "epoch", "epoch": epoch, "step": step, "version": v,
                           "metrics": metrics(v, g)})
            epoch += 1
    final = graphs[-1]
    summary = {"test_acc": events[-1]["metrics"]["val_acc"] if epochs_per_version else None,
               "params": final.params, "nonzero_params": nonzero, "macs": final.macs, "versions": len(graphs),
               "growth_events": growth, "prune_events": prune, "wall_s": 1.0, "world_size": 1}
    if end:
        events.append({"event": "end", "summary": summary})
        atomic_write_text(path / "summary.json", json.dumps(summary, indent=2))
    with open(path / "history.jsonl", "w", encoding="utf-8") as fh:
        for e in events:
            fh.write(json.dumps(e) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return path
