"""Budget: budget-aware pruning by weight reparametrisation (our reading of Dupont, Sahbi and Michel, ICIP 2021,
"Weight reparametrization for budget-aware network pruning").

The paper trains and prunes in one go, without fine-tuning: the pruning masks are not extra parameters but a
function of the weights themselves (a reparametrisation that acts as a prior), and a budget loss drives the share
of kept weights to a target. We had the abstract and outline, not the code, so the details below are ours (settings
in :class:`BudgetSettings`):

1. **Reparametrisation.** Each conv/linear weight ``w`` is used as ``w * f(w)`` with
   ``f(w) = sigmoid((|w| / r - threshold) / T)``, where ``r`` is the RMS of the layer's weights (detached: the
   threshold is relative, so it means the same before a batchnorm, where a layer's scale is arbitrary, and under
   weight decay) and ``threshold`` is fixed (default 0.5): no parameter is added, the weights move across it. One RMS
   per layer, not per row, so whole rows - channels - can fall under it.
2. **Budget loss.** ``density = sum f(w) / number of weights`` over all conv/linear weights (one global budget: the
   layers compete for it) and the loss adds ``budget_weight * (density - target)^2`` (``squared``, default) or
   ``budget_weight * max(0, density - target)`` (``hinge``). Its gradient reaches the weights only through ``f``:
   it shrinks the weights near the threshold, most strongly where ``f`` is steepest, and the task loss holds up the
   ones that matter.
3. **Annealing.** The temperature ``T`` goes geometrically from ``temperature_start`` (smooth masks, every weight
   feels the budget) to ``temperature_end`` (``f`` is a step to within a sliver) over ``anneal_epochs`` (default: the
   whole run), after ``warmup_epochs`` of dense training (default none: the paper trains from scratch).
4. **No fine-tuning.** The hard mask is ``|w| / r > threshold``. Validation during training uses
   ``w * f(w) * hard`` - the network as it will be extracted - and at the end exactly that is written into the
   weights: dropped weights are exact zeros and, with ``f`` nearly a step by then, the kept ones barely change.
   Channels the mask empties (every weight making or reading them dropped; see :mod:`archgraph.train.unstructured`)
   are zeroed in every forward pass, so the network trains without them, and are removed at the end with
   ``prune_channels``, which keeps the function.

Not from the paper (our choices): the RMS-relative threshold, the exact form of ``f`` and of the budget loss, the
geometric annealing and the channel removal.

Under ``torchrun`` nothing needs synchronising beyond what the loop does: the masks, the threshold and the budget
loss are functions of the weights (the threshold is a fixed setting, not learned), so Budget has no
:meth:`~archgraph.train.strategies.base.Strategy.learned_parameters`, draws nothing at random, and every process
computes the same masks and the same final rules from the same weights.

>>> import torch
>>> w = torch.tensor([0.1, -1.0, 2.0, -0.05])
>>> keep_mask(w, 0.5).tolist()
[0.0, 1.0, 1.0, 0.0]
>>> round(budget_loss(torch.tensor(0.3), 0.1).item(), 4), budget_loss(torch.tensor(0.05), 0.1, "hinge").item()
(0.04, 0.0)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, Optional

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt

from ..deferred import deferred
from .base import MethodConfig, Strategy
from .gumbel import annealed

if TYPE_CHECKING:
    import torch

    from .. import unstructured
else:   # imported when a run trains: validating a run file reads the settings without torch
    torch = deferred("torch")
    unstructured = deferred("archgraph.train.unstructured")


class BudgetSettings(MethodConfig):
    """Budget-aware weight reparametrisation (see archgraph/train/strategies/budget.py)."""
    name: Literal["budget"] = "budget"
    strategy = "archgraph.train.strategies.budget:BudgetStrategy"
    target: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.1, description="kept fraction of the conv/linear weights the budget loss drives the network to")
    budget_weight: PositiveFloat = Field(50.0, description="loss weight of the budget term")
    budget_loss: Literal["squared", "hinge"] = Field(
        "squared", description="squared: (kept - target)^2; hinge: max(0, kept - target) (only pushes down)")
    threshold: PositiveFloat = Field(
        0.5, description="a weight is kept when |w| / RMS(layer's weights) exceeds this")
    temperature_start: PositiveFloat = Field(0.5, description="width of the sigmoid mask function at the start, in "
                                                               "units of the layer's RMS")
    temperature_end: PositiveFloat = Field(0.005, description="width at the end of the annealing (near a step)")
    anneal_epochs: Optional[PositiveInt] = Field(
        None, description="epochs over which the temperature is annealed geometrically (None: the whole run)")
    warmup_epochs: NonNegativeInt = Field(0, description="epochs of dense training before the reparametrisation "
                                                         "and the budget loss start")


TRAIN, DONE = "train", "done"


def _rms(w: torch.Tensor) -> torch.Tensor:
    return w.detach().pow(2).mean().sqrt().clamp_min(1e-12)


def mask_function(w: torch.Tensor, threshold: float, temperature: float) -> torch.Tensor:
    """``f(w) = sigmoid((|w| / RMS(w) - threshold) / temperature)``: the soft keep mask defined by the weights."""
    return torch.sigmoid((w.abs() / _rms(w) - threshold) / temperature)


def keep_mask(w: torch.Tensor, threshold: float) -> torch.Tensor:
    """The hard mask ``1[|w| / RMS(w) > threshold]`` (the limit of :func:`mask_function` as the temperature goes
    to 0)."""
    return (w.detach().abs() / _rms(w) > threshold).to(w.dtype)


def budget_loss(density: torch.Tensor, target: float, kind: str = "squared") -> torch.Tensor:
    """``(density - target)^2`` or the hinge ``max(0, density - target)``."""
    if kind == "hinge":
        return torch.relu(density - target)
    return (density - target) ** 2


class BudgetStrategy(Strategy):
    name = "budget"
    STATE = ("phase",)

    def __init__(self, settings, config=None):
        super().__init__(settings, config)
        self.phase = TRAIN
        self.death = None

    def attach(self, trainer) -> None:
        self.death = unstructured.ChannelDeath(trainer.graph)

    def on_rewrite(self, trainer, rewrite) -> None:
        # the masks are functions of the weights: nothing else to carry
        self.death = unstructured.ChannelDeath(rewrite.graph)

    def active(self, trainer) -> bool:
        return self.phase == TRAIN and trainer.epoch >= self.settings.warmup_epochs

    def temperature(self, trainer) -> float:
        s = self.settings
        span = s.anneal_epochs or max(1, trainer.epochs - s.warmup_epochs)
        return annealed(s.temperature_start, s.temperature_end, (trainer.progress - s.warmup_epochs) / span)

    def masked(self, trainer, training: bool) -> tuple[dict, torch.Tensor]:
        """``(values, density)``: the reparametrised weights ``w * f(w)`` (times the hard mask unless
        ``training``), dead channels zeroed, and the soft kept fraction."""
        params = dict(trainer.module.named_parameters())
        s = self.settings
        temperature = self.temperature(trainer)
        values, hard = {}, {}
        kept = torch.zeros((), device=trainer.device)
        total = 0
        for key in unstructured.masked_keys(trainer.graph):
            w = params[key]
            f = mask_function(w, s.threshold, temperature)
            hard[key] = keep_mask(w, s.threshold)
            values[key] = w * f if training else w * f * hard[key]
            kept = kept + f.sum()
            total += w.numel()
        values = self.death.gate(values, params, self.death.dead(hard))
        return values, kept / max(1, total)

    def parametrize(self, trainer, training: bool):
        if not self.active(trainer):
            return {}, None
        values, density = self.masked(trainer, training)
        extra = None
        if training:
            s = self.settings
            extra = s.budget_weight * budget_loss(density, s.target, s.budget_loss)
        return values, extra

    def finalize(self, trainer) -> list:
        if self.phase == DONE:
            return []
        with torch.no_grad():
            values, _ = self.masked(trainer, training=False)
            hard = {k: (values[k] != 0).float() for k in unstructured.masked_keys(trainer.graph)}
            dead = self.death.dead(hard)
            params = dict(trainer.module.named_parameters())
            for key, value in values.items():
                params[key].copy_(value)
        self.phase = DONE
        return self.death.rules(dead)

    def effective_weights(self, trainer) -> dict:
        out = super().effective_weights(trainer)
        if self.active(trainer):
            with torch.no_grad():
                values, _ = self.masked(trainer, training=False)
            out.update({k: v.detach() for k, v in values.items()})
        return out

    def metrics(self, trainer) -> dict:
        m = {"phase": self.phase}
        if self.active(trainer):
            with torch.no_grad():
                values, density = self.masked(trainer, training=False)
            keys = unstructured.masked_keys(trainer.graph)
            m["temperature"] = round(self.temperature(trainer), 6)
            m["soft_density"] = round(float(density), 5)
            m["density"] = round(sum(int((values[k] != 0).sum()) for k in keys) /
                                 sum(values[k].numel() for k in keys), 5)
        return m

