"""GNAP: Growing Networks with Autonomous Pruning (our reading of de Lambilly and Duffner, 2026).

The paper has no public code and its method details were not available to us, so this module is an interpretation
of its summary: *start small; when training saturates, grow (widen every layer in a function-preserving way, deepen
when widening stops paying off); between growth phases train and prune at the same time, with masks learned by
gradient descent and no hand-set sparsity target.* What we do, and with which settings
(:class:`GnapSettings`):

1. **Saturation.** A :class:`~archgraph.train.plateau.PlateauDetector` watches ``monitor`` (default the held-out
   validation loss) and calls a plateau after ``patience`` epochs without an improvement larger than ``min_delta``
   (and at least ``min_phase_epochs`` epochs into the phase).
2. **Growth.** At the first plateau every growable layer (one with a width field making a new channel space: conv
   with ``groups=1``, linear, embedding, lstm/gru; not the classifier) is widened by ``growth_factor`` with
   ``add_filters(init=grow_init)`` (``preserve`` keeps the network's function), capped at ``max_width``, a coupled
   space (a residual stream) once; every attention gets ``growth_factor`` times its heads (``add_heads``). After
   each later plateau the best monitored value of the phase is compared with the best before the last growth: a
   growth *pays off* when it improved by more than ``min_gain``. Widening continues while it pays off; when it stops
   paying off the network is deepened once with ``insert_layer`` (a 3x3 conv with batchnorm and ReLU,
   identity-initialised, after the last conv block; a linear+ReLU for MLPs; a transformer block, ``insert_block``,
   after a transformer's last residual add); a deepening that pays off is followed by widening again, one that does
   not ends growth. At most ``max_growths`` growth steps.
3. **Autonomous pruning, all along.** Every conv/linear weight has a learned per-weight mask and every layer whose
   channels can be removed a per-channel mask (:mod:`archgraph.train.masks`), hard 0/1 in the forward pass: a
   weight is kept while ``|w| / RMS(row) > tau`` with one learnable soft threshold ``tau`` per layer (trained
   through a sigmoid surrogate of width ``temperature`` with its own Adam, ``mask_lr``), a channel while the
   ``|gamma|`` of its norm stays above ``channel_threshold``. The weights get the masked network's gradient unchanged
   (straight-through), so pruned weights can come back. The loss adds ``param_cost`` per 1,000 *expected non-zero
   parameters* (each weight's surrogate mask times its channels' ``min(1, |gamma|)``): it raises the thresholds and
   pulls ``gamma`` down, so the network's size is a trade-off priced in loss units, not a target. Channels that are
   switched off, or that every reading weight ignores, output exact zeros or are ignored; once a phase has trained
   ``min_phase_epochs`` epochs they are removed at epoch ends with ``prune_channels`` (function unchanged).
4. **The end.** When growth is over (or only ``finetune_epochs`` of the budget remain) the hard masks are written
   into the weights as exact zeros, dead channels are removed, and the network is fine-tuned for ``finetune_epochs``
   with the masks frozen (zeros stay zero) and a cosine learning-rate decay to zero. The final weights therefore
   hold exact zeros and ``nonzero_params`` counts what is left.

Not taken from the paper (our choices): the relative (scale-free) weight thresholds, the norm-scale channel masks,
the straight-through gradient to the weights, the expected-count sparsity term, the smoothing of the monitored
metric, the deepening rule and the final fine-tuning.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal, Optional

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from ... import rules as R
from ...errors import RuleError
from ...graph import Graph
from ...ops.registry import MERGE, OPS, SOURCE, THROUGH, channel_width
from ..deferred import deferred
from ..plateau import PlateauDetector
from .base import MethodConfig, Strategy, applicable, sequence_norm

if TYPE_CHECKING:
    import torch

    from .. import masks
else:   # imported when a run trains: validating a run file reads the settings without torch
    torch = deferred("torch")
    masks = deferred("archgraph.train.masks")


class GnapSettings(MethodConfig):
    """GNAP: grow at saturation, prune with learned masks in between (see archgraph/train/strategies/gnap.py)."""
    name: Literal["gnap"] = "gnap"
    strategy = "archgraph.train.strategies.gnap:GnapStrategy"
    # saturation
    monitor: Literal["val_loss", "val_acc"] = Field("val_loss", description="what the plateau detector watches")
    patience: PositiveInt = Field(5, description="epochs without improvement that make a plateau")
    min_delta: NonNegativeFloat = Field(0.0, description="smallest change that counts as an improvement")
    min_phase_epochs: NonNegativeInt = Field(
        3, description="epochs a phase trains before a plateau may end it or channels may be removed")
    smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.0, description="exponential moving average of the monitored metric (0: none), against a noisy val split")
    # growth
    growth_factor: Annotated[float, Field(gt=1.0, le=4.0)] = Field(
        2.0, description="widening multiplies every growable layer's width by this factor")
    max_growths: NonNegativeInt = Field(3, description="most growth steps (each widening or deepening is one)")
    max_width: PositiveInt = Field(512, description="no layer is widened past this many channels/features")
    min_gain: float = Field(0.0, description="a growth pays off when the monitored best improves by more than this")
    deepen: bool = Field(True, description="insert a layer when widening stops paying off")
    deepen_after: Optional[str] = Field(None, description="node after which layers are inserted (default: the "
                                                          "activation after the last growable conv)")
    grow_init: Literal["preserve", "net2net", "random", "zero"] = Field(
        "preserve", description="initialisation of new filters (preserve keeps the function)")
    # autonomous pruning
    param_cost: NonNegativeFloat = Field(
        0.02, description="training-loss units charged per 1,000 expected non-zero parameters (the trade-off "
                          "between loss and size; not a sparsity target)")
    temperature: PositiveFloat = Field(0.1, description="width of the sigmoid surrogate of the hard masks")
    mask_lr: PositiveFloat = Field(0.005, description="Adam learning rate of the thresholds")
    threshold_init: float = Field(0.0, description="initial per-weight threshold (relative to the row's RMS)")
    channel_threshold: NonNegativeFloat = Field(
        0.05, description="a channel whose norm scale |gamma| falls under this is switched off")
    channel_masks: bool = Field(True, description="learn per-channel masks and remove channels that vanish")
    warmup_epochs: NonNegativeInt = Field(0, description="epochs of dense training before masks are learned")
    # the end
    finetune_epochs: NonNegativeInt = Field(
        10, description="final epochs with the masks frozen (pruned weights stay zero) and a cosine learning rate")

    def budget_warnings(self, epochs: int) -> list[str]:
        """GNAP grows only while more than ``finetune_epochs`` epochs remain, and a phase needs
        ``min_phase_epochs + 1``."""
        growing, needs = epochs - self.finetune_epochs, self.min_phase_epochs + 1
        if growing >= needs:
            return []
        return [f"method.finetune_epochs ({self.finetune_epochs}) leaves {max(growing, 0)} of the {epochs} epochs "
                f"(schedule.epochs) for growth, and a phase needs at least {needs} (method.min_phase_epochs + 1): "
                "this run will never grow; raise schedule.epochs or lower method.finetune_epochs"]


GROW, FINETUNE, DONE = "grow", "finetune", "done"


class GnapStrategy(Strategy):
    name = "gnap"
    STATE = ("phase", "growths", "last_action", "best_before", "finetune_start", "smoothed", "plateau", "masks")

    def __init__(self, settings, config=None):
        super().__init__(settings, config)
        s = settings
        self.plateau = PlateauDetector(mode="max" if s.monitor == "val_acc" else "min", patience=s.patience,
                                       min_delta=s.min_delta, min_epochs=s.min_phase_epochs)
        self.phase = GROW
        self.growths = 0
        self.last_action = ""          # "", "widen" or "deepen"
        self.best_before = math.nan    # best monitored value before the last growth
        self.finetune_start = -1
        self.smoothed = math.nan       # exponential moving average of the monitored metric
        self._zeros: dict[str, torch.Tensor] = {}
        self.masks = masks.LearnedMasks(temperature=s.temperature, lr=s.mask_lr, threshold_init=s.threshold_init,
                                  channel_threshold=s.channel_threshold, channel_masks=s.channel_masks)

    # ---- lifecycle ----------------------------------------------------------------------------------------------
    def attach(self, trainer) -> None:
        self.masks.attach(trainer.graph, trainer.device)

    def _masking(self, trainer) -> bool:
        return self.phase == GROW and trainer.epoch >= self.settings.warmup_epochs

    def parametrize(self, trainer, training: bool):
        if self._masking(trainer):
            out = self.masks.forward(trainer.module, expected=training)
            extra = None
            if training and self.settings.param_cost > 0:
                extra = out.expected * (self.settings.param_cost / 1000.0)
            return out.overrides, extra
        if self.phase == FINETUNE and training:
            params = dict(trainer.module.named_parameters())
            self._zeros = {k: params[k].detach() == 0 for k in self.masks.layout.weights}
        return {}, None

    def on_step_end(self, trainer) -> list:
        if self._masking(trainer):
            self.masks.step()
            self.masks.zero_grad()
        elif self.phase == FINETUNE and self._zeros:
            params = dict(trainer.module.named_parameters())
            with torch.no_grad():
                for key, zero in self._zeros.items():
                    params[key].masked_fill_(zero, 0.0)
        return []

    def lr_factor(self, trainer) -> float:
        if self.phase != FINETUNE or self.settings.finetune_epochs == 0:
            return 1.0
        t = (trainer.progress - self.finetune_start) / self.settings.finetune_epochs
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, t))))

    def should_stop(self, trainer) -> bool:
        if self.phase == FINETUNE:
            return trainer.epoch >= self.finetune_start + self.settings.finetune_epochs
        return self.phase == DONE

    # ---- decisions at the end of an epoch ---------------------------------------------------------------------
    def on_epoch_end(self, trainer, metrics: dict) -> list:
        if self.phase != GROW:
            return []
        s = self.settings
        settled = self.plateau.seen + 1 >= s.min_phase_epochs   # new channels had time to get used
        if settled:
            self.masks.young = {}
        rules = self._prune_rules(trainer) if self._masking(trainer) and settled else []
        value = metrics.get(s.monitor)
        if value is None:
            value = metrics["train_loss"] if s.monitor == "val_loss" else metrics["train_acc"]
        self.smoothed = value if math.isnan(self.smoothed) else s.smoothing * self.smoothed + (1 - s.smoothing) * value
        plateau = self.plateau.update(self.smoothed)
        if trainer.epochs - trainer.epoch <= s.finetune_epochs:
            return rules + self._freeze(trainer, rules)
        if not plateau:
            return rules
        action = self._next_growth()
        graph = _after(trainer, rules)
        growth = []
        if action == "widen":
            growth = self._widen_rules(graph, trainer.apply)
            if not growth and s.deepen:
                action, growth = "deepen", self._deepen_rules(graph, trainer.apply)
        elif action == "deepen":
            growth = self._deepen_rules(graph, trainer.apply)
        if not growth:
            return rules + self._freeze(trainer, rules)
        self.growths += 1
        self.last_action = action
        self.best_before = self.plateau.best
        self.plateau.reset()
        return rules + growth

    def _next_growth(self) -> Optional[str]:
        s = self.settings
        if self.growths >= s.max_growths:
            return None
        if not self.last_action:
            return "widen"
        paid = self.plateau.improves(self.plateau.best, self.best_before) and \
            abs(self.plateau.best - self.best_before) > s.min_gain
        if self.last_action == "widen":
            return "widen" if paid else ("deepen" if s.deepen else None)
        return "widen" if paid else None

    def _freeze(self, trainer, rules_so_far: list) -> list:
        """Write the hard masks into the weights as exact zeros and start the fine-tuning phase; returns the prune
        rules still needed (``rules_so_far`` already holds this epoch's)."""
        rules = []
        if self.phase == GROW and self._masking(trainer):
            # decide on the masks as they are now, before the zeros change the rows' scales
            done = {r.node for r in rules_so_far if r.name == "prune_channels"}
            rules = [r for r in self._prune_rules(trainer) if r.node not in done]
            hard = self.masks.hard_weights(trainer.module)
            params = dict(trainer.module.named_parameters())
            with torch.no_grad():
                for key, value in hard.items():
                    params[key].copy_(value)
        if self.phase == GROW:
            self.phase = FINETUNE if self.settings.finetune_epochs > 0 else DONE
            self.finetune_start = trainer.epoch
            self.masks.young = {}
        return rules

    def finalize(self, trainer) -> list:
        rules = self._freeze(trainer, []) if self.phase == GROW else []
        self.phase = DONE
        return rules

    # ---- rules ------------------------------------------------------------------------------------------------
    def _prune_rules(self, trainer) -> list:
        dead = self.masks.dead_channels(trainer.module)
        out = []
        shapes = trainer.graph.shapes()
        for node, idx in sorted(dead.items()):
            width = channel_width(shapes[node])
            if len(idx) >= width:
                idx = idx[1:]   # keep one channel: a layer cannot have none
            if idx:
                out.append(R.PruneChannels(node=node, indices=list(idx)))
        return out

    def _widen_rules(self, graph, apply) -> list:
        s = self.settings
        out = []
        current = graph
        start = graph.shapes()
        for nid in growable_layers(graph):
            width = channel_width(current.shapes()[nid])
            if width != channel_width(start[nid]):
                continue   # widened already this growth, through a layer it is coupled to (a residual stream)
            target = min(s.max_width, int(math.ceil(width * s.growth_factor)))
            if target <= width:
                continue
            # the exact form where preserve is not (a layer-norm stream: masked)
            rule = R.exact_form(current, R.AddFilters(node=nid, count=target - width, init=s.grow_init), apply)
            try:
                current = apply(current, rule).graph
            except RuleError:
                continue   # e.g. a layer coupled to others through a residual add
            out.append(rule)
        for nid in attention_layers(current):     # attention: more heads of the same size
            heads = OPS[current.nodes[nid].op].heads(current.nodes[nid], current.input_shapes(nid))[0]
            rule = R.AddHeads(node=nid, count=max(1, int(math.ceil(heads * (s.growth_factor - 1)))),
                              init="random" if s.grow_init == "random" else "preserve")
            try:
                current = apply(current, rule).graph
            except RuleError:
                continue   # e.g. a count that does not spread over the kv groups
            out.append(rule)
        return out

    def _deepen_rules(self, graph, apply) -> list:
        where = self.settings.deepen_after or deepen_point(graph)
        if where is None or where not in graph.nodes:
            return []
        shape = graph.shapes()[where]
        rule: R.Rule
        if len(shape) == 2:   # a sequence: a pre-norm transformer block, its norm that of the graph's blocks
            # norm and activation given explicitly: the rule's defaults differ for a sequence, and the logged
            # rule (every field) must replay to the same block
            rule = R.InsertBlock(after=where, norm=sequence_norm(graph) or "layernorm", activation="gelu")
        elif len(shape) == 3:
            rule = R.InsertLayer(after=where, op="conv2d", kernel_size=3, norm="batchnorm", activation="relu",
                                 init="identity")
        else:
            rule = R.InsertLayer(after=where, op="linear", activation="relu", init="identity")
        return applicable(graph, [rule], apply)

    def on_rewrite(self, trainer, rewrite) -> None:
        old_graph, new_graph = rewrite.old, rewrite.graph
        self.masks.rebuild(new_graph)
        if rewrite.rule.kind == "growth" and self.phase == GROW:
            # channels a growth adds (appended at the end, or a whole new layer) are not charged for until the
            # phase settles: their outgoing weights start at zero and need time to become useful
            old, new = old_graph.shapes(), new_graph.shapes()
            for gid in self.masks.layout.groups:
                before = channel_width(old[gid]) if gid in old_graph.nodes else 0
                after = channel_width(new[gid])
                if after > before:
                    self.masks.young[gid] = sorted(set(self.masks.young.get(gid, [])) | set(range(before, after)))

    def learned_parameters(self, trainer) -> dict:
        return self.masks.parameters()

    # ---- numbers and state ------------------------------------------------------------------------------------
    def effective_weights(self, trainer) -> dict:
        if self._masking(trainer):
            return self.masks.hard_weights(trainer.module)
        return super().effective_weights(trainer)

    def metrics(self, trainer) -> dict:
        m = {"phase": self.phase, "growths": self.growths}
        if self.masks.tau:
            m["tau_mean"] = sum(t.item() for t in self.masks.tau.values()) / len(self.masks.tau)
        return m

def growable_layers(graph) -> list[str]:
    """Layers that make a new channel space of a width field - conv (``groups=1``), linear, embedding, lstm, gru -
    whose output is not a graph output, in graph order."""
    shapes = graph.shapes()
    out = []
    for nid, node in graph.nodes.items():
        if OPS[node.op].width_field is None or nid in graph.outputs:
            continue
        if OPS[node.op].channels(node, [shapes[i] for i in node.inputs]) == SOURCE:
            out.append(nid)
    return out


def attention_layers(graph) -> list[str]:
    """The nodes with heads (attention), in graph order."""
    return [nid for nid, node in graph.nodes.items() if OPS[node.op].heads(node, graph.input_shapes(nid))]


def deepen_point(graph: Graph) -> Optional[str]:
    """Where to insert a layer: after the per-channel ops (norm, activation) that follow the last growable conv
    (or linear, for an MLP), before any pooling; in a transformer (a sequence ``[T, D]`` through residual adds),
    after the last residual add, where a new block goes."""
    adds = _sequence_adds(graph)
    if adds and attention_layers(graph):
        return adds[-1]
    at = _last_weighted_layer(graph)
    return None if at is None else _past_per_channel_ops(graph, at)


def _sequence_adds(graph: Graph) -> list[str]:
    """The merges (residual adds) of sequences ``[T, D]``, in graph order."""
    shapes = graph.shapes()
    return [nid for nid, node in graph.nodes.items() if len(shapes[nid]) == 2
            and OPS[node.op].channels(node, [shapes[i] for i in node.inputs]) == MERGE]


def _last_weighted_layer(graph: Graph) -> Optional[str]:
    """The last growable weighted conv, or the last growable weighted layer when there is no conv."""
    layers = [n for n in growable_layers(graph) if OPS[graph.nodes[n].op].weighted]
    convs = [n for n in layers if OPS[graph.nodes[n].op].conv]
    candidates = convs or layers
    return candidates[-1] if candidates else None


def _past_per_channel_ops(graph: Graph, at: str) -> str:
    """Follow ``at``'s single users while they pass its channels through unweighted (norm, activation), stopping
    before a pooling, a dropout, a weighted op (a depthwise conv), a fork or a graph output."""
    shapes = graph.shapes()
    while True:
        users = graph.users(at)
        if len(users) != 1 or users[0] in graph.outputs:
            return at
        user = graph.nodes[users[0]]
        opdef = OPS[user.op]
        role = opdef.channels(user, [shapes[i] for i in user.inputs])
        if role != THROUGH or opdef.is_pool or opdef.is_dropout or opdef.weighted:   # weighted: a depthwise conv
            return at
        at = users[0]


def _after(trainer, rules: list):
    """The graph once ``rules`` are applied to the current one (rules only; no weights)."""
    graph = trainer.graph
    for rule in rules:
        graph = trainer.apply(graph, rule).graph
    return graph
