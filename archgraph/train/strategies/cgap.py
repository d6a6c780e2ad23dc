"""CGaP: continuous growth and pruning (our reading of Du, Li and Cao, 2019).

The paper starts from a small seed, grows filters and neurons where the network is most *salient* while it trains,
and then prunes the least salient ones, reporting parameter and FLOP reductions against the full-size network
(VGG-19 on CIFAR-100: -78.9% parameters, -53.2% FLOPs). What we do, with
:class:`CgapSettings`:

1. **Saliency.** Every layer whose channels can be removed on their own (:mod:`archgraph.train.gates`) gets a probe
   gate fixed at 1 on what makes each channel (the batchnorm after it, or its own weights). The gradient of the
   loss with respect to the probe of channel ``c`` is ``sum over the batch and positions of a_c * dL/da_c`` (the
   first-order Taylor estimate of the loss change if the channel were removed, Molchanov et al. 2017, computed for
   the whole batch at once); the saliency is a moving average of its absolute value over steps
   (``saliency_momentum``). The paper's exact saliency formula was not available to us; this one needs no extra
   forward pass and no module hooks. The probes are the strategy's :meth:`~CgapStrategy.learned_parameters`, so
   under ``torchrun`` their gradients are averaged over the processes before the saliency reads them: every
   process then holds the saliency of the global batch (the same as one process) and takes the same decisions.
2. **Continuous growth.** Every ``grow_every`` epochs during the first ``grow_epochs``, each gated layer grows by
   ``growth_rate`` of its width (capped at ``max_width``) *next to its most salient units*: by default
   ``split_filters`` duplicates the most salient channels (the two halves share the outgoing weights, with
   ``+-split_eps`` noise on the incoming ones: the function barely changes); ``grow_rule: add_filters`` adds fresh
   filters instead. The growth rate is multiplied by ``growth_decay`` after every event, so growth slows down
   continuously and stops at ``grow_epochs``.
3. **Pruning.** From ``prune_start``, every ``prune_every`` epochs the ``prune_rate`` share of gated channels with
   the lowest saliency *relative to their layer's mean* (so one threshold fits every layer) is removed with
   ``prune_channels`` (at most half of a layer at once, ``min_width`` kept), until the network has at most
   ``target_ratio`` of its peak parameters (or ``target_params``). The training that follows heals the network.

The summary reports the reductions against the peak (the full-size network the growth reached) and against the
seed: ``peak_params``, ``peak_macs``, ``params_reduction``, ``macs_reduction``, and ``train_macs`` (MACs spent on
training forward passes, see :mod:`archgraph.train.strategies.costs`).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal, Optional

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt

from ... import rules as R
from ..deferred import deferred
from .base import MethodConfig, Strategy
from .costs import SizeLedger, TrainCost

if TYPE_CHECKING:
    import torch

    from .. import gates, groups, tensors
else:   # imported when a run trains: validating a run file reads the settings without torch
    torch = deferred("torch")
    groups = deferred("archgraph.train.groups")
    gates = deferred("archgraph.train.gates")
    tensors = deferred("archgraph.train.tensors")


class CgapSettings(MethodConfig):
    """CGaP: continuous growth next to the most salient units, then pruning of the least salient
    (see archgraph/train/strategies/cgap.py)."""
    name: Literal["cgap"] = "cgap"
    strategy = "archgraph.train.strategies.cgap:CgapStrategy"
    saliency_momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.9, description="moving average of the per-channel saliency |sum(activation x gradient)| over steps")
    # growth
    grow_epochs: NonNegativeInt = Field(20, description="growth events happen during the first grow_epochs")
    grow_every: PositiveInt = Field(2, description="epochs between growth events")
    growth_rate: Annotated[float, Field(gt=0.0, le=2.0)] = Field(
        0.5, description="share of a layer's width added at a growth event (next to its most salient units)")
    growth_decay: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.8, description="the growth rate is multiplied by this after every growth event")
    grow_rule: Literal["split_filters", "add_filters"] = Field(
        "split_filters", description="split_filters duplicates the most salient units (with +-split_eps noise); "
                                     "add_filters adds fresh ones (grow_init)")
    split_eps: NonNegativeFloat = Field(0.01, description="noise that tells the two halves of a split unit apart")
    grow_init: Literal["preserve", "net2net", "random", "zero"] = Field(
        "preserve", description="initialisation of new filters with grow_rule add_filters")
    max_width: PositiveInt = Field(512, description="no layer grows past this many channels/features")
    # pruning
    prune_start: NonNegativeInt = Field(25, description="first epoch at whose end channels may be pruned")
    prune_every: PositiveInt = Field(2, description="epochs between pruning events")
    prune_rate: Annotated[float, Field(gt=0.0, le=0.9)] = Field(
        0.1, description="share of the gated channels removed at a pruning event (least salient first)")
    target_ratio: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.5, description="pruning stops once the network has at most this share of its peak parameters")
    target_params: Optional[PositiveInt] = Field(
        None, description="or once it has at most this many parameters (whichever is reached first)")
    min_width: PositiveInt = Field(2, description="a layer keeps at least this many channels")



class CgapStrategy(Strategy):
    name = "cgap"
    STATE = ("saliency", "rate", "growths", "prunes", "sizes", "done_pruning", "cost")

    def __init__(self, settings, config=None):
        super().__init__(settings, config)
        self.saliency: dict[str, torch.Tensor] = {}
        self.rate = settings.growth_rate
        self.growths = 0
        self.prunes = 0
        self.sizes = SizeLedger()
        self.done_pruning = False
        self.cost = TrainCost()
        self.layout = None
        self._probe: dict[str, torch.Tensor] = {}

    # ---- lifecycle ----------------------------------------------------------------------------------------------
    def setup(self, trainer) -> None:
        self.sizes.start(trainer.graph)

    def attach(self, trainer) -> None:
        self.layout = gates.gate_layout(trainer.graph, branches=False, heads=False)
        sizes = {k: v.width for k, v in self.layout.channel.items()}
        self.saliency = {k: v.to(trainer.device) for k, v in self.saliency.items()}
        for node, width in sizes.items():
            if node not in self.saliency or self.saliency[node].shape[0] != width:
                self.saliency[node] = torch.zeros(width, device=trainer.device)

    def _measuring(self, trainer) -> bool:
        s = self.settings
        growing = trainer.epoch < s.grow_epochs
        pruning = trainer.epoch + s.prune_every > s.prune_start and not self.done_pruning
        return growing or pruning

    def parametrize(self, trainer, training: bool):
        if not training or not self._measuring(trainer) or not self.layout.channel:
            self._probe = {}
            return {}, None
        params = dict(trainer.module.named_parameters())
        self._probe = {node: torch.ones(g.width, device=trainer.device, requires_grad=True)
                       for node, g in self.layout.channel.items()}
        return gates.gate_overrides(params, self.layout, self._probe), None

    def on_step_end(self, trainer) -> list:
        self.cost.add_step(trainer)
        mom = self.settings.saliency_momentum
        with torch.no_grad():
            for node, probe in self._probe.items():
                if probe.grad is not None:
                    self.saliency[node].mul_(mom).add_(probe.grad.abs(), alpha=1 - mom)
        self._probe = {}
        return []

    def learned_parameters(self, trainer) -> dict:
        """This step's probes: nothing trains them, but their gradients (the saliency) must be the global batch's,
        averaged over the processes under torchrun (and unscaled under float16 AMP)."""
        return {f"probe.{k}": v for k, v in self._probe.items()}

    # ---- decisions ----------------------------------------------------------------------------------------------
    def on_epoch_end(self, trainer, metrics: dict) -> list:
        s = self.settings
        e = trainer.epoch
        if e <= s.grow_epochs and e % s.grow_every == 0 and e < trainer.epochs:
            rules = self._grow_rules(trainer)
            if rules:
                self.growths += 1
                self.rate *= s.growth_decay
            return rules
        if e >= s.prune_start and (e - s.prune_start) % s.prune_every == 0 and not self.done_pruning:
            return self._prune_rules(trainer)
        return []

    def _grow_rules(self, trainer) -> list:
        s = self.settings
        out: list[R.Rule] = []
        for i, (node, gate) in enumerate(sorted(self.layout.channel.items())):
            count = min(int(math.ceil(self.rate * gate.width)), s.max_width - gate.width, gate.width)
            if count <= 0:
                continue
            if s.grow_rule == "split_filters":
                top = torch.argsort(self.saliency[node], descending=True, stable=True)[:count]
                out.append(R.SplitFilters(node=node, indices=sorted(int(j) for j in top), eps=s.split_eps,
                                          seed=trainer.epoch * 1000 + i))
            else:
                out.append(R.exact_form(trainer.graph, R.AddFilters(node=node, count=count, init=s.grow_init,
                                                                    seed=trainer.epoch * 1000 + i), trainer.apply))
        return out

    def target(self) -> float:
        s = self.settings
        t = s.target_ratio * self.sizes.peak_params
        return min(t, s.target_params) if s.target_params is not None else t

    def _prune_rules(self, trainer) -> list:
        s = self.settings
        graph = trainer.graph
        if graph.params <= self.target():
            self.done_pruning = True
            return []
        costs = channel_params(graph, trainer.module)
        candidates = []
        for node, gate in self.layout.channel.items():
            sal = self.saliency[node]
            rel = (sal / sal.mean().clamp_min(1e-12)).tolist()
            candidates += [(rel[c], node, c) for c in range(gate.width)]
        candidates.sort()
        total = sum(g.width for g in self.layout.channel.values())
        budget = max(1, int(math.ceil(s.prune_rate * total)))
        room = graph.params - self.target()
        chosen: dict[str, list[int]] = {}
        for _, node, c in candidates:
            width = self.layout.channel[node].width
            taken = chosen.setdefault(node, [])
            if width - len(taken) <= s.min_width or len(taken) >= width // 2:
                continue
            taken.append(c)
            budget -= 1
            room -= costs.get((node, c), 0.0)
            if budget <= 0 or room <= 0:
                break
        rules = [R.PruneChannels(node=n, indices=sorted(idx)) for n, idx in sorted(chosen.items()) if idx]
        if not rules:
            self.done_pruning = True
        else:
            self.prunes += 1
        return rules

    def on_rewrite(self, trainer, rewrite) -> None:
        plan, new_graph = rewrite.plan, rewrite.graph
        self.layout = gates.gate_layout(new_graph, branches=False, heads=False)
        sizes = {k: v.width for k, v in self.layout.channel.items()}

        def fill(node, n):
            known = self.saliency.get(node)
            value = float(known.mean()) if known is not None and known.numel() else 0.0
            return torch.full((n,), value, device=trainer.device)

        self.saliency = tensors.follow_channels(plan, self.saliency, fill, sizes,
                                        {k: v.anchor for k, v in self.layout.channel.items()})
        self.sizes.update(new_graph)

    # ---- numbers and state --------------------------------------------------------------------------------------
    def metrics(self, trainer) -> dict:
        return {"growths": self.growths, "prunes": self.prunes, "growth_rate": round(self.rate, 6),
                "train_macs": self.cost.macs, "peak_params": self.sizes.peak_params}

    def summary(self, trainer) -> dict:
        return {"train_macs": self.cost.macs, **self.sizes.summary(trainer.graph)}

def channel_params(graph, module) -> dict[tuple[str, int], float]:
    """``(layer, channel) -> parameters`` removed with that channel: its row of the layer, its per-channel
    parameters (norms) and the columns of the layers reading it (:class:`~archgraph.train.groups.GroupIndex`)."""
    index = groups.GroupIndex(graph)
    sizes = index.sizes(dict(module.named_parameters())).tolist()
    return {index.producer[g]: sizes[g] for g in range(len(index))}
