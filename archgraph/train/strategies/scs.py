"""SCS: structured continuous sparsification, growing from a seed (our reading of Yuan, Savarese and Maire,
ICLR 2021, built on Continuous Sparsification, Savarese, Silva and Maire, 2020).

Continuous Sparsification (CS, public code) learns a mask logit ``s`` per weight: the weight is scaled by
``sigmoid(beta*s) / sigmoid(s0)`` (so it starts at 1 with ``s = s0``), the loss adds an L1 penalty on the soft mask,
the temperature ``beta`` is multiplied every epoch so that it reaches about 200 at the end of a round, between
rounds ``s`` is clamped to at most ``s0`` and ``beta`` reset to 1, and the final mask is ``1[s > 0]``. SCS applies
this to *structures* - channels and layers - samples the active structures during training so that the switched-off
ones cost no compute, makes the penalty budget-aware, and grows the network from a small seed. What we do, with
:class:`ScsSettings`:

1. **Gates.** One logit per channel of every layer whose channels can be removed on their own, and one per residual
   branch (``branch_gates``), :mod:`archgraph.train.gates`. A gate multiplies what makes the channel after its
   last normalisation (the batchnorm's weight and bias), or the branch's closing batchnorm, through the
   parametrize hook (``torch.func.functional_call`` overrides; the module is untouched). The logits live in the
   strategy with their own SGD with momentum (``gate_lr``; SGD so that a gate's task gradient and its penalty
   keep the balance the loss gives them), are in its ``state_dict`` and follow every rewrite (kept and split
   channels keep theirs, new ones start at ``s_new``).
2. **Sampling** (``sample``, the default, SCS). Each training step draws every structure's indicator
   ``q ~ Bernoulli(sigmoid(beta*s))`` (one draw per structure for the whole batch) and the gate's forward value is
   ``q``, its gradient that of ``sigmoid(beta*s)`` (straight-through); a structure drawn off is scaled by 0.001
   rather than 0 so that the ReLU after it still passes a gradient. Evaluation uses the hard mask ``1[s > 0]``.
   We do not multiply the sample by the soft gate: a batchnorm downstream undoes any common scale of a layer's
   channels, so soft values would let a whole layer's gates sink together at no cost to the loss (we saw it).
   The samples are drawn from torch's global RNG (checkpointed by the loop); under ``torchrun`` every process
   starts each step from rank 0's RNG state, so all draw the same structures, and the logits' gradients are
   averaged over the processes (:meth:`ScsStrategy.learned_parameters`), so they stay equal.
   The training MACs of a step are those of the sampled sub-network (a layer costs its dense MACs times its
   active share of output and input channels; a branch drawn off costs nothing).
   Without ``sample`` the gates are CS's deterministic ``sigmoid(beta*s) / sigmoid(s0)`` (1 at the start).
3. **Budget-aware penalty.** The loss adds ``penalty * E[MACs] / seed MACs``, where ``E[MACs]`` is the expected
   MACs under the soft gates ``sigmoid(beta*s)``: an L1 penalty on the soft masks in which every gate is weighted
   by the MACs it controls (its layer's share and the readers' columns), so it reduces to CS's L1 for one gate
   family and prices structures by what they cost. The ``min_width`` most open gates of each layer get no
   penalty gradient (a layer keeps them anyway). With ``budget`` (a share of the seed's MACs) the penalty is off
   while the expected MACs are under the budget, so the network settles at the budget instead of shrinking on
   (our choice: the paper's budget-aware form was not available to us). With ``cost: params`` the penalty and
   the budget price parameters instead (:meth:`~archgraph.train.gates.GateLayout.active_params`), for a goal
   set in parameters, or a network whose parameters sit where its MACs do not (an embedding).
4. **Annealing.** ``beta`` is multiplied every epoch by ``beta_final ** (1 / L)``, ``L`` the round length
   (``(epochs - finetune_epochs) // rounds``), so it reaches ``beta_final`` at the end of a round; between rounds
   ``s <- min(s, s0)`` and ``beta <- 1``.
5. **Growth.** In the first ``grow_until`` share of every round (while ``beta`` is small and gates can still move),
   every ``grow_every`` epochs, a layer with at least ``grow_threshold`` of its gates open (``sigmoid(beta*s) >
   0.5``) is widened by ``growth_factor`` with ``add_filters`` (``grow_init``, default random; at most
   ``max_growths`` events, ``max_width``); with ``grow_blocks`` and every branch gate open, a residual block is
   inserted (``insert_block``) after the most open branch. SCS proper grows by opening gates of a larger
   super-network; adding channels when a layer's gates are all in use keeps the network small all along.
6. **Removal.** At every epoch end, channels and branches whose gate ``sigmoid(beta*s)`` fell under
   ``close_below`` are removed (``prune_channels``, ``collapse_layer``): they are almost never drawn, and removing
   them saves their training compute from then on.
7. **The end.** After the last round the hard mask ``1[s > 0]`` (times ``1 / sigmoid(s0)`` for CS's gates) is
   folded into the weights, closed structures become exact zeros and are removed, so the saved network computes
   exactly what the hard-masked one did; ``finetune_epochs`` (default 0: SCS has no fine-tuning stage) may follow.

Epoch events and the summary carry ``train_macs`` (MACs of training forward passes with the sampled structures),
``train_macs_dense`` (the same steps with every structure of each version active) and ``expected_macs``; the
summary's ``macs`` are the final graph's inference MACs.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal, Optional

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from ... import rules as R
from ...ops.registry import OPS
from ..deferred import deferred
from .base import MethodConfig, Strategy, applicable, sequence_norm
from .costs import SizeLedger, TrainCost

if TYPE_CHECKING:
    import torch

    from .. import gates, tensors
else:   # imported when a run trains: validating a run file reads the settings without torch
    torch = deferred("torch")
    gates = deferred("archgraph.train.gates")
    tensors = deferred("archgraph.train.tensors")


class ScsSettings(MethodConfig):
    """SCS: structured continuous sparsification with growth (see archgraph/train/strategies/scs.py)."""
    name: Literal["scs"] = "scs"
    strategy = "archgraph.train.strategies.scs:ScsStrategy"
    # gates (continuous sparsification)
    s_init: float = Field(2.0, description="initial gate logit s0; gates are sigmoid(beta*s)/sigmoid(s0)")
    beta_final: Annotated[float, Field(gt=1.0)] = Field(
        200.0, description="the temperature beta is multiplied every epoch to reach this at the end of a round")
    rounds: PositiveInt = Field(1, description="rounds of annealing; between rounds s is clamped to s0 and "
                                               "beta reset to 1")
    gate_lr: PositiveFloat = Field(0.1, description="learning rate of the gate logits (SGD, momentum 0.9)")
    sample: bool = Field(True, description="Bernoulli-sample the active channels and branches at each step")
    branch_gates: bool = Field(True, description="gate residual branches too (removed by collapse_layer)")
    cost: Literal["macs", "params"] = Field(
        "macs", description="what the penalty and the budget price: inference MACs (the paper's FLOPs) or "
                            "parameters (an embedding has parameters and no MACs)")
    penalty: NonNegativeFloat = Field(
        1.0, description="loss units per seed cost of expected cost (MACs or parameters, see cost): a "
                         "cost-weighted L1 on the soft gates")
    budget: Optional[PositiveFloat] = Field(
        None, description="target cost (MACs or parameters) as a share of the seed's; the penalty is off while "
                          "the expected cost is under it (None: always on)")
    close_below: Annotated[float, Field(gt=0.0, lt=0.5)] = Field(
        0.01, description="a channel or branch whose gate sigmoid(beta*s) falls under this is removed")
    min_width: PositiveInt = Field(2, description="a layer keeps at least this many channels (the penalty does "
                                                   "not push on its min_width most open gates)")
    # growth
    grow_every: PositiveInt = Field(3, description="epochs between growth checks")
    grow_until: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.5, description="growth checks happen in this first share of every round (while beta is small)")
    grow_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.9, description="a layer grows when at least this share of its gates is open (sigmoid(beta*s) > 0.5)")
    growth_factor: Annotated[float, Field(gt=1.0, le=4.0)] = Field(1.5, description="width multiplier of a growth")
    max_growths: NonNegativeInt = Field(4, description="most growth events (each may widen several layers)")
    max_width: PositiveInt = Field(512, description="no layer grows past this many channels/features")
    grow_init: Literal["preserve", "net2net", "random", "zero"] = Field(
        "random", description="initialisation of new filters")
    s_new: float = Field(0.0, description="initial gate logit of new channels and blocks")
    grow_blocks: bool = Field(False, description="insert a residual block (insert_block) when every branch "
                                                 "gate is open")
    # the end
    finetune_epochs: NonNegativeInt = Field(
        0, description="epochs after the hard masks 1[s > 0] are folded into the weights")


SEARCH, FINETUNE, DONE = "search", "finetune", "done"


class ScsStrategy(Strategy):
    name = "scs"
    STATE = ("s", "sb", "beta", "round", "k", "round_length", "phase", "growths", "sizes", "opt", "opt_b", "cost",
             "dense_cost")
    uses_global_rng = True   # the Bernoulli samples (under torchrun every process draws rank 0's)

    def __init__(self, settings, config=None):
        super().__init__(settings, config)
        self.s: dict[str, torch.Tensor] = {}
        self.sb: dict[str, torch.Tensor] = {}
        self.beta = 1.0
        self.round = 0
        self.k = 0                 # epochs into the current round
        self.round_length = 1
        self.phase = SEARCH
        self.growths = 0
        self.sizes = SizeLedger()
        self.opt = tensors.TensorSGD(settings.gate_lr)
        self.opt_b = tensors.TensorSGD(settings.gate_lr)
        self.cost = TrainCost()
        self.dense_cost = TrainCost()
        self.layout = None
        self._step_macs: Optional[float] = None
        self._device = None

    # ---- lifecycle ----------------------------------------------------------------------------------------------
    def setup(self, trainer) -> None:
        s = self.settings
        self.sizes.start(trainer.graph)
        self.round_length = max(1, (trainer.epochs - s.finetune_epochs) // s.rounds)

    def attach(self, trainer) -> None:
        self._device = trainer.device
        self.layout = gates.gate_layout(trainer.graph, branches=self.settings.branch_gates)
        self.s = {k: _leaf(v, trainer.device) for k, v in self.s.items()}
        self.sb = {k: _leaf(v, trainer.device) for k, v in self.sb.items()}
        for node, gate in self.layout.channel.items():
            if node not in self.s:
                self.s[node] = _leaf(torch.full((gate.width,), self.settings.s_init), trainer.device)
        for node in self.layout.branch:
            if node not in self.sb:
                self.sb[node] = _leaf(torch.tensor(self.settings.s_init), trainer.device)
        self.opt.to(trainer.device)
        self.opt_b.to(trainer.device)

    @property
    def scale(self) -> float:
        """The value of an open gate: ``1 / sigmoid(s0)`` for CS's deterministic gates (a gate with ``s = s0`` at
        ``beta = 1`` is then 1), 1 for sampled gates (whose forward value is the 0/1 sample)."""
        return 1.0 if self.settings.sample else 1.0 / _sigmoid(self.settings.s_init)

    # ---- the forward pass -----------------------------------------------------------------------------------------
    def soft(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``sigmoid(beta*s)`` of every channel gate and branch gate (differentiable in ``s``)."""
        return ({k: torch.sigmoid(self.beta * v) for k, v in self.s.items()},
                {k: torch.sigmoid(self.beta * v) for k, v in self.sb.items()})

    def parametrize(self, trainer, training: bool):
        self._step_macs = None
        if self.phase != SEARCH:
            return {}, None
        params = dict(trainer.module.named_parameters())
        soft, soft_b = self.soft()
        channel_gates, branch_gates = self._gate_values(soft, soft_b, training)
        overrides = gates.gate_overrides(params, self.layout, channel_gates, branch_gates)
        extra = self._penalty(soft, soft_b) if training else None
        return overrides, extra

    def _gate_values(self, soft: dict[str, torch.Tensor], soft_b: dict[str, torch.Tensor], training: bool
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The channel and branch gates of this forward pass: sampled 0/1 gates with straight-through gradients
        when training with ``sample`` (their MACs are the step's), the open gates (``s > 0``) when evaluating with
        ``sample``, else CS's deterministic ``scale * sigmoid(beta*s)``."""
        if self.settings.sample and training:
            return self._sampled_gates(soft, soft_b)
        if self.settings.sample:
            return ({k: (v.detach() > 0).to(v.dtype) for k, v in self.s.items()},
                    {k: (v.detach() > 0).to(v.dtype) for k, v in self.sb.items()})
        return {k: v * self.scale for k, v in soft.items()}, {k: v * self.scale for k, v in soft_b.items()}

    def _sampled_gates(self, soft: dict[str, torch.Tensor], soft_b: dict[str, torch.Tensor]
                       ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Bernoulli draws of the soft gates, straight-through in ``s``; records the sampled network's MACs."""
        q = {k: torch.bernoulli(v.detach()) for k, v in soft.items()}
        qb = {k: torch.bernoulli(v.detach()) for k, v in soft_b.items()}
        channel_gates = {k: _straight_through(q[k], v) for k, v in soft.items()}
        branch_gates = {k: _straight_through(qb[k], v) for k, v in soft_b.items()}
        self._step_macs = float(self.layout.active_macs({k: float(v.mean()) for k, v in q.items()},
                                                        {k: float(v) for k, v in qb.items()}))
        return channel_gates, branch_gates

    def _penalty(self, soft: dict[str, torch.Tensor], soft_b: dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
        """``penalty * expected cost / seed cost`` of a training step, or ``None``: no penalty, no gates, or the
        expected cost already within ``budget``."""
        if not (self.settings.penalty > 0 and (soft or soft_b)):
            return None
        expected, seed = self.expected_cost(self._unprotected(soft), soft_b)
        budget = self.settings.budget
        if budget is None or float(expected.detach()) > budget * seed:
            return self.settings.penalty * expected / seed
        return None

    def _unprotected(self, soft: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The soft gates with the gradient of each layer's ``min_width`` highest logits cut: a layer keeps that
        many channels whatever happens, so the penalty does not push on them (else a layer's gates, which a
        normalisation downstream makes interchangeable, can close together)."""
        out = {}
        for node, p in soft.items():
            k = min(self._min_width(node), p.numel())
            keep = torch.zeros_like(p)
            keep[torch.argsort(self.s[node].detach(), descending=True, stable=True)[:k]] = 1.0
            out[node] = p * (1 - keep) + p.detach() * keep
        return out

    def _min_width(self, node: str) -> int:
        """How many channels a gated layer keeps: ``min_width``, or one head of an attention node."""
        return 1 if self.layout.channel[node].unit == gates.HEAD else self.settings.min_width

    def _prune(self, node: str, indices: list[int]):
        """The rule removing channels (or heads) ``indices`` of a gated node."""
        if self.layout.channel[node].unit == gates.HEAD:
            return R.PruneHeads(node=node, indices=indices)
        return R.PruneChannels(node=node, indices=indices)

    def expected_macs(self, soft=None, soft_b=None):
        """Expected MACs of the network under the soft gates (a tensor, differentiable in the logits)."""
        if soft is None:
            soft, soft_b = self.soft()
        return self.layout.active_macs({k: v.mean() for k, v in soft.items()}, dict(soft_b))

    def expected_params(self, soft, soft_b):
        """Expected parameters of the network under the soft gates (as :meth:`expected_macs`)."""
        return self.layout.active_params({k: v.mean() for k, v in soft.items()}, dict(soft_b))

    def expected_cost(self, soft, soft_b):
        """(expected cost under the soft gates, the seed's cost) in the unit ``cost`` names: MACs or
        parameters."""
        if self.settings.cost == "params":
            return self.expected_params(soft, soft_b), self.sizes.seed_params
        return self.expected_macs(soft, soft_b), self.sizes.seed_macs

    def on_step_end(self, trainer) -> list:
        self.cost.add_step(trainer, self._step_macs)
        self.dense_cost.add_step(trainer)
        if self.phase == SEARCH:
            self.opt.step(self.s)
            self.opt_b.step(self.sb)
        return []

    def learned_parameters(self, trainer) -> dict:
        """The gate logits: channel gates ``s.<node>`` and branch gates ``sb.<node>``."""
        return {**{f"s.{k}": v for k, v in self.s.items()}, **{f"sb.{k}": v for k, v in self.sb.items()}}

    # ---- decisions ----------------------------------------------------------------------------------------------
    def on_epoch_end(self, trainer, metrics: dict) -> list:
        if self.phase != SEARCH:
            return []
        s = self.settings
        self.k += 1
        self.beta = s.beta_final ** (self.k / self.round_length)
        rules = self._removal_rules(trainer)
        if self.k >= self.round_length:
            if self.round + 1 < s.rounds:
                self.round += 1
                self.k = 0
                self.beta = 1.0
                with torch.no_grad():
                    for v in list(self.s.values()) + list(self.sb.values()):
                        v.clamp_(max=s.s_init)
                return rules
            return self._harden(trainer)
        if (self.k < s.grow_until * self.round_length and self.k % s.grow_every == 0
                and self.growths < s.max_growths):
            growth = self._growth_rules(trainer, _after(trainer, rules))
            if growth:
                self.growths += 1
            rules = rules + growth
        return rules

    def _removal_rules(self, trainer) -> list:
        s = self.settings
        with torch.no_grad():
            soft, soft_b = self.soft()
        out = []
        gone: set[str] = set()
        for node, p in sorted(soft_b.items()):
            if float(p) < s.close_below:
                out.append(R.CollapseLayer(node=node))
                gone.update(self.layout.branch[node].removed)
        for node, p in sorted(soft.items()):
            if node in gone:
                continue
            closed = closed_channels(p.detach(), self.s[node].detach(), s.close_below, self._min_width(node))
            if closed:
                out.append(self._prune(node, closed))
        return applicable(trainer.graph, out, trainer.apply)

    def _growth_rules(self, trainer, graph) -> list:
        s = self.settings
        with torch.no_grad():
            soft, soft_b = self.soft()
        out: list[R.Rule] = []
        now = gates.gate_layout(graph, branches=False)
        for node in sorted(self.layout.channel):
            if node not in now.channel:
                continue
            gate = now.channel[node]
            width = gate.width
            p = soft[node].detach()
            if p.numel() != width or float((p > 0.5).float().mean()) < s.grow_threshold:
                continue
            count = min(int(math.ceil(width * (s.growth_factor - 1))), s.max_width - width)
            if count <= 0:
                continue
            if gate.unit == gates.HEAD:
                out.append(R.AddHeads(node=node, count=count))
            else:
                out.append(R.exact_form(graph, R.AddFilters(node=node, count=count, init=s.grow_init,
                                                            seed=self.growths), trainer.apply))
        if s.grow_blocks and soft_b and all(float(p) > 0.5 for p in soft_b.values()):
            best = max(sorted(soft_b), key=lambda k: float(soft_b[k]))
            after = block_output(graph, best)
            if after is not None and len(graph.shapes()[after]) == 2:   # a sequence: a transformer block
                out.append(R.InsertBlock(after=after, norm=sequence_norm(graph) or "layernorm", activation="gelu"))
            elif after is not None:
                out.append(R.InsertBlock(after=after, norm="batchnorm", activation="relu"))
        return applicable(graph, out, trainer.apply)

    def _harden(self, trainer) -> list:
        """Fold the hard masks ``1[s > 0] / sigmoid(s0)`` into the weights; return the rules removing what is
        closed."""
        s = self.settings
        channel_on = {k: v.detach() > 0 for k, v in self.s.items()}
        for node, on in channel_on.items():     # a layer keeps min_width channels (as exact zeros if closed)
            if int(on.sum()) < self._min_width(node):
                keep = torch.argsort(self.s[node].detach(), descending=True, stable=True)[:self._min_width(node)]
                on[keep] = True
        branch_on = {k: bool(v.detach() > 0) for k, v in self.sb.items()}
        params = dict(trainer.module.named_parameters())
        hard = gates.hard_weights(params, self.layout, channel_on, branch_on, scale=self.scale)
        for node, on in channel_on.items():    # kept despite a closed gate: its gated params are zero
            closed = ~(self.s[node].detach() > 0) & on
            for part in self.layout.channel[node].scale:
                gates.closed_entries(hard[part.key], part, closed)
        with torch.no_grad():
            for key, value in hard.items():
                params[key].copy_(value)
        rules = [R.CollapseLayer(node=k) for k, on in sorted(branch_on.items()) if not on]
        gone = {n for k, on in branch_on.items() if not on for n in self.layout.branch[k].removed}
        for node, on in sorted(channel_on.items()):
            off = torch.nonzero(~on).flatten().tolist()
            if off and node not in gone:
                rules.append(self._prune(node, off))
        self.phase = FINETUNE if s.finetune_epochs > 0 else DONE
        return applicable(trainer.graph, rules, trainer.apply)

    def should_stop(self, trainer) -> bool:
        return self.phase == DONE

    def finalize(self, trainer) -> list:
        if self.phase == SEARCH:
            return self._harden(trainer)
        self.phase = DONE
        return []

    def on_rewrite(self, trainer, rewrite) -> None:
        plan, new_graph = rewrite.plan, rewrite.graph
        self.layout = gates.gate_layout(new_graph, branches=self.settings.branch_gates)
        sizes = {k: v.width for k, v in self.layout.channel.items()}
        anchors = {k: v.anchor for k, v in self.layout.channel.items()}
        s_new = self.settings.s_new

        def fill(node, n):
            return torch.full((n,), s_new, device=trainer.device)

        detached = {k: v.detach() for k, v in self.s.items()}
        self.s = {k: _leaf(v, trainer.device)
                  for k, v in tensors.follow_channels(plan, detached, fill, sizes, anchors).items()}
        self.opt.follow(plan, sizes, anchors)
        self.sb = {k: self.sb[k] if k in self.sb else _leaf(torch.tensor(s_new), trainer.device)
                   for k in self.layout.branch}
        self.opt_b.keep(self.sb)
        self.sizes.update(new_graph)

    # ---- numbers and state --------------------------------------------------------------------------------------
    def effective_weights(self, trainer) -> dict:
        params = dict(trainer.module.named_parameters())
        if self.phase != SEARCH:
            return {k: v.detach() for k, v in params.items()}
        return gates.hard_weights(params, self.layout, {k: v.detach() > 0 for k, v in self.s.items()},
                            {k: bool(v.detach() > 0) for k, v in self.sb.items()}, scale=self.scale)

    def metrics(self, trainer) -> dict:
        m = {"phase": self.phase, "beta": round(self.beta, 4), "round": self.round, "growths": self.growths,
             "train_macs": self.cost.macs, "train_macs_dense": self.dense_cost.macs}
        if self.phase == SEARCH and (self.s or self.sb):
            soft, soft_b = self.soft()
            with torch.no_grad():
                m["expected_macs"] = float(self.expected_macs(soft, soft_b))
                if self.settings.cost == "params":
                    m["expected_params"] = float(self.expected_params(soft, soft_b))
                probs = torch.cat([v.flatten() for v in list(soft.values()) + list(soft_b.values())])
                m["gates_open"] = float((probs > 0.5).float().mean())
        return m

    def summary(self, trainer) -> dict:
        return {"train_macs": self.cost.macs, "train_macs_dense": self.dense_cost.macs,
                "seed_macs": self.sizes.seed_macs, "beta_final": self.beta}

def closed_channels(p: torch.Tensor, s: torch.Tensor, below: float, min_width: int) -> list[int]:
    """Channels whose gate ``p`` is under ``below``, leaving the ``min_width`` highest logits in any case.

    >>> closed_channels(torch.tensor([0.9, 0.001, 0.002, 0.5]), torch.tensor([2., -9., -8., 0.]), 0.01, 1)
    [1, 2]
    >>> closed_channels(torch.tensor([0.001, 0.002]), torch.tensor([-9., -8.]), 0.01, 1)
    [0]
    """
    closed = [int(i) for i in torch.nonzero(p < below).flatten()]
    spare = p.numel() - min_width
    if len(closed) > spare:
        order = sorted(closed, key=lambda i: float(s[i]))
        closed = sorted(order[:max(0, spare)])
    return closed


def block_output(graph, branch: str) -> Optional[str]:
    """Where a new residual block goes after the block whose branch ends in ``branch``: after the activation
    that reads its add, else after the add."""
    users = graph.users(branch)
    if len(users) != 1:
        return None
    add = users[0]
    after = graph.users(add)
    if len(after) == 1 and OPS[graph.nodes[after[0]].op].block_activation \
            and after[0] not in graph.outputs:
        return after[0]
    return add


def _after(trainer, rules: list):
    """The graph once ``rules`` are applied to the current one (rules only; no weights)."""
    graph = trainer.graph
    for rule in rules:
        graph = trainer.apply(graph, rule).graph
    return graph


OFF = 1e-3   # forward value of a structure sampled off (see _straight_through)


def _straight_through(q: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """The sample ``q`` in the forward pass, the gradient of ``soft`` in the backward pass (a straight-through
    Bernoulli estimator), so a structure sampled off still learns how much turning it on would lower the loss.
    A structure sampled off is scaled by ``OFF`` = 0.001 rather than 0: at exactly 0 the ReLU after it would pass
    no gradient at all; at 0.001 its output is negligible and the gradient is the one-sided derivative at 0.

    >>> s = torch.tensor([0.3, 0.8], requires_grad=True)
    >>> g = _straight_through(torch.tensor([0., 1.]), s)
    >>> [round(v, 6) for v in g.tolist()]
    [0.001, 1.0]
    >>> g.sum().backward(); s.grad.tolist()
    [1.0, 1.0]
    """
    return torch.where(q > 0, 1.0, OFF) + (soft - soft.detach())


def _leaf(value: torch.Tensor, device) -> torch.Tensor:
    return value.detach().to(device).clone().requires_grad_(True)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
