"""One object for a network that changes while it trains: its graph, its built module and the history of what was
done to it (:class:`Network`).

``net.rewrite(rule, optimizer)`` and ``net.prune(ratio, optimizer)`` change the network in place: ``net.graph`` and
``net.module`` become the new version, the weights and buffers are carried by the rule's transfer plan, and the
optimizer given (the same object, its parameter groups and any LR scheduler bound to it kept) holds the new
parameters with their state (Adam's moments of surviving channels kept, new channels' state fresh). Every change is
one version in ``net.history``, as a training run logs it; ``net.save(DIR)`` writes a run directory that
``archgraph replay``, ``render`` and ``report`` read.

Wrappers kept around the module (``DistributedDataParallel``, ``torch.compile``, an EMA copy) hold the old module's
parameters: rebuild them after a change, e.g. ``model = torch.compile(net.module)`` or
``ema = torch.optim.swa_utils.AveragedModel(net.module)``.

>>> import archgraph, torch
>>> from archgraph import rules
>>> net = archgraph.Network(archgraph.load("examples/seeds/tiny_cnn.yaml"))
>>> opt = torch.optim.Adam(net.module.parameters())
>>> rw = net.rewrite(rules.AddFilters(node="c1", count=4, init="preserve"), optimizer=opt)
>>> net.version, net.graph.nodes["c1"].out_channels, opt.param_groups[0]["params"][0] is net.module.c1.weight
(1, 8, True)
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import torch

from ..errors import ConfigError
from ..format.yaml_io import load
from ..graph import Graph, content_hash
from ..history.rundir import RunDir
from ..rules.base import Rewrite, RuleLike, apply, decode, encode
from ..shapes import count_nonzero_macs, count_nonzero_params
from .builder import build
from .magnitude import prune
from .materialise import materialise
from .weights import load_into, load_weights

Weights = Union[str, os.PathLike, Mapping[str, torch.Tensor], None]


class Network:
    """A graph, its built ``torch.fx`` module and its history (see the module docstring).

    ``graph`` is a :class:`~archgraph.graph.Graph` or a graph file; ``weights`` a safetensors file or a state dict
    with keys ``<node_id>.<param>`` (a missing, extra or misshapen tensor is an error naming it), else the module
    starts from the graph's seeded initialisation (``seed``). ``device`` and ``dtype`` place the module.
    """

    def __init__(self, graph: Union[Graph, str, os.PathLike], weights: Weights = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None, seed: int = 0):
        self.graph: Graph = graph if isinstance(graph, Graph) else load(graph)
        self.seed = seed
        module = build(self.graph, device=device, dtype=dtype, seed=seed)
        if weights is not None:
            source = str(weights) if isinstance(weights, (str, os.PathLike)) else "<weights>"
            state = load_weights(weights) if isinstance(weights, (str, os.PathLike)) else dict(weights)
            load_into(module, {k: v.to(device) if device is not None else v for k, v in state.items()}, source)
            if dtype is not None:
                module.to(dtype)
        self.module: torch.fx.GraphModule = module
        #: every graph version, ``versions[0]`` the one the network started from
        self.versions: list[Graph] = [self.graph]
        #: the events of what was done: one ``start``, then one ``rewrite`` per version (the run-file history's)
        self.history: list[dict] = [{"event": "start", "version": 0, "hash": content_hash(self.graph),
                                     "config": {"name": self.graph.name}, "time": time.time()}]
        self.step = 0                 #: the position a rewrite is logged at (a method sets it; 0 otherwise)
        self.epoch = 0
        self._followers: list[Callable[[Rewrite], None]] = []

    @property
    def version(self) -> int:
        """The number of the current version (0: as the network started)."""
        return len(self.versions) - 1

    # ---- changes ------------------------------------------------------------------------------------------------
    def rewrite(self, rule: Union[RuleLike, Rewrite], optimizer: Optional[torch.optim.Optimizer] = None,
                batch: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                loss: Optional[Callable] = None) -> Rewrite:
        """Apply ``rule`` (a rule, its ``{"rule": ..., "args": ...}`` data, or a :class:`Rewrite` of the current
        graph): ``.graph`` and ``.module`` become the new version, the optimizer (if given) holds the new parameters
        with their state; returns the :class:`Rewrite` (``.exact`` says whether the function was kept). ``batch``
        (``(inputs, targets)``) and ``loss``: what ``add_filters init=gradmax`` chooses the new units' outgoing
        weights from (:mod:`archgraph.fx.gradmax`)."""
        if isinstance(rule, Rewrite):
            if rule.old is not self.graph and content_hash(rule.old) != content_hash(self.graph):
                raise ConfigError(f"the rewrite ({rule.rule.name}) was made for another graph than the network's "
                                  f"version {self.version}")
            rw = rule
        else:
            rw = apply(self.graph, decode(rule) if isinstance(rule, Mapping) else rule)
        old = self.graph
        self.module = materialise(rw, self.module, optimizer, self.seed, batch=batch, loss=loss)
        self.graph = rw.graph
        self.versions.append(rw.graph)
        self.history.append({"event": "rewrite", **encode(rw.rule), "version": self.version,
                             "parent": self.version - 1, "hash": content_hash(rw.graph),
                             "parent_hash": content_hash(old), "epoch": self.epoch, "step": self.step,
                             "kind": rw.rule.kind, "exact": rw.exact, "metrics": self.size_metrics()})
        for follow in list(self._followers):
            follow(rw)
        return rw

    def prune(self, ratio: float, optimizer: Optional[torch.optim.Optimizer] = None, criterion: str = "l2",
              heads: bool = False, seed: int = 0, calib: Optional[Iterable] = None, round_to: int = 1) -> list:
        """Remove ``ratio`` of the channels of every coupled channel group, the least important by ``criterion``
        (``l2``, ``l1``, ``random``, or the calibrated ``taylor`` and ``activation``, which need ``calib``, an
        iterable of batches: see :mod:`archgraph.fx.criteria`), as :func:`archgraph.prune` does, and with ``heads``
        that share of every attention's heads; one version per ``prune_channels``/``prune_heads`` rule (they apply
        in turn). ``round_to`` keeps pruned widths multiples of it. The optimizer keeps the surviving channels'
        state. Returns the rules applied."""
        state = {k: v.detach() for k, v in self.module.state_dict().items()}
        found = prune(self.graph, state, ratio, criterion, seed, heads, calib=calib, round_to=round_to,
                      consume=True).rules
        for rule in found:   # one version per rule: they apply in turn to the same graph and weights
            self.rewrite(rule, optimizer)
        return list(found)

    def follow(self, callback: Callable[[Rewrite], None]) -> None:
        """Call ``callback(rewrite)`` after every change (a method rebuilding its per-layer state, a wrapper)."""
        self._followers.append(callback)

    def unfollow(self, callback: Callable[[Rewrite], None]) -> None:
        if callback in self._followers:
            self._followers.remove(callback)

    # ---- numbers and files --------------------------------------------------------------------------------------
    def size_metrics(self, weights: Optional[Mapping[str, torch.Tensor]] = None) -> dict:
        """``params``, ``nonzero_params``, ``macs``, ``nonzero_macs`` of the current version (non-zero counts over
        ``weights``, default the module's own)."""
        weights = weights if weights is not None else {k: v.detach() for k, v in self.module.named_parameters()}
        return {"params": self.graph.params, "nonzero_params": count_nonzero_params(self.graph, weights),
                "macs": self.graph.macs, "nonzero_macs": count_nonzero_macs(self.graph, weights)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The module's weights and buffers (keys ``<node_id>.<param>``) on the CPU."""
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def log(self, event: Mapping[str, Any]) -> None:
        """Add an epoch event to the history (e.g. ``{"event": "epoch", "epoch": 3, "metrics": {...}}``:
        ``archgraph report`` plots the metrics of epoch events)."""
        event = dict(event)
        if event.get("event") != "epoch":
            raise ConfigError("Network.log takes epoch events (start, rewrite and end events are its own)")
        event.setdefault("version", self.version)
        event.setdefault("step", self.step)
        self.history.append(event)

    def save(self, path: Union[str, os.PathLike], summary: Optional[Mapping[str, Any]] = None) -> Path:
        """Write a run directory: every version's graph, ``history.jsonl``, the current weights as
        ``weights/final.safetensors`` and ``summary.json`` (sizes, versions and ``summary``'s entries). A folder
        holding files of another run is refused. ``archgraph replay DIR`` rebuilds the last version from the seed
        and the rule log."""
        run = RunDir(path)
        if not run.is_empty() and not (run.has_run() and _same_start(run, self.history[0])):
            raise ConfigError(f"'{run.path}' already holds another run's files; choose an empty folder")
        if run.has_run():
            run.history_path.unlink()
        run.create()
        for k, graph in enumerate(self.versions):
            run.write_version(k, graph)
        for event in self.history:
            run.append(event)
        final = self.state_dict()
        run.write_final_weights(final, {"graph_sha256": content_hash(self.graph), "version": str(self.version)})
        kinds = [e.get("kind") for e in self.history if e["event"] == "rewrite"]
        full = {**self.size_metrics(final), "versions": self.version + 1, "final_version": self.version,
                "hash": content_hash(self.graph), "growth_events": kinds.count("growth"),
                "prune_events": kinds.count("prune"), **dict(summary or {})}
        run.write_summary(full)
        run.append({"event": "end", "summary": full})
        return run.path


def _same_start(run: RunDir, start: dict) -> bool:
    """Whether the run directory holds an earlier save of this network (so saving again replaces it)."""
    events = run.events()
    return bool(events) and events[0].get("hash") == start["hash"] and events[0].get("time") == start["time"]
