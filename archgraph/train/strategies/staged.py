"""Staged growth: function-preserving rules on a fixed schedule, the baseline of Staged Training (Shen et al. 2022)
and MSG (Yao et al. 2024): the network trains small, and at the given steps or epoch ends it is widened or deepened
by rules that keep its function (new heads, MLP units or stream channels at zero, a new block whose output
projections are zero), so the loss does not jump and training goes on from where it was.

The schedule is data in the run file, rules in the codec of :func:`archgraph.rules.decode`::

    method:
      name: staged
      stages:
        - {step: 200, rules: [{rule: add_filters, args: {node: b0_fc, count: 64, init: preserve}}]}
        - {epoch: 3, rules: [{rule: insert_block, args: {after: b1_res2}}]}

The learning rate can follow the growth (the point of staged training: a small model takes a larger step): the
method's ``lr_factor`` multiplies the schedule's learning rate (``schedule.lr`` and its ``lr_schedule``) while the seed
trains, and a stage's ``lr_factor`` replaces it from that stage on, reached linearly over the stage's
``warmup_steps`` (a re-warm-up after the event; 0: at once)::

    method:
      name: staged
      lr_factor: 2.0                       # the seed trains at twice the schedule's rate
      stages:
        - {step: 200, lr_factor: 1.0, warmup_steps: 50, rules: [...]}   # down to the schedule's over 50 steps

A rule whose rewrite is not exact is replaced by its exact form where one exists (:func:`~archgraph.rules.widen.
exact_form`: ``add_filters init=preserve`` on a layer-norm stream becomes ``init=masked``), and the history logs the
rule applied. With ``require_exact`` (the default) a rule that still is not exact stops the run with an error that
names it.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from ...errors import ArchgraphError, ConfigError
from ...rules.base import decode
from ...rules.widen import exact_form
from .base import MethodConfig, Strategy


class Stage(BaseModel):
    """One growth event of a fixed schedule: the rules applied, in order, after a given step or epoch."""
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)
    step: Optional[PositiveInt] = Field(None, description="apply the rules after this training step")
    epoch: Optional[PositiveInt] = Field(None, description="or at the end of this epoch")
    rules: list[dict[str, Any]] = Field(
        min_length=1, description="rules as {rule: name, args: {...}} (archgraph.rules.decode), applied in order")
    lr_factor: Optional[PositiveFloat] = Field(
        None, description="multiplies the schedule's learning rate from this stage on (default: the factor before)")
    warmup_steps: NonNegativeInt = Field(
        0, description="steps over which the factor moves linearly from the one before to this stage's (0: at once)")

    @model_validator(mode="after")
    def _one_time(self):
        if (self.step is None) == (self.epoch is None):
            raise ValueError("a stage gives exactly one of step and epoch")
        return self

    @field_validator("rules")
    @classmethod
    def _rules_decode(cls, rules):
        for data in rules:
            try:
                decode(data)
            except ArchgraphError as err:
                raise ValueError(str(err)) from None
        return rules


class StagedSettings(MethodConfig):
    """Staged growth: function-preserving rules on a fixed schedule (the Staged Training / MSG baseline;
    see archgraph/train/strategies/staged.py)."""
    name: Literal["staged"] = "staged"
    strategy = "archgraph.train.strategies.staged:StagedStrategy"
    stages: list[Stage] = Field(default_factory=list, description="the growth events, each at a step or an epoch")
    require_exact: bool = Field(True, description="refuse a rule whose rewrite does not keep the network's "
                                                  "function exactly (its transfer plan is not exact)")
    lr_factor: PositiveFloat = Field(1.0, description="multiplies the schedule's learning rate before the first "
                                                      "stage (while the seed trains); stages may change it")


class StagedStrategy(Strategy):
    """Applies each stage's rules once, after its step or at the end of its epoch."""

    name = "staged"
    STATE = ("done", "done_steps")

    def __init__(self, settings, config=None):
        super().__init__(settings, config)
        self.done: list = []   # indices of the stages applied (a resumed run does not apply them again)
        self.done_steps: list = []   # the step after which each of them was applied

    def load_state_dict(self, state) -> None:
        if "done_steps" not in state:   # a checkpoint from before done_steps: each stage taken as applied when due
            state = {**state, "done_steps": [self.settings.stages[i].step or 0 for i in state["done"]]}
        super().load_state_dict(state)

    def _due(self, trainer, *, epoch_end: bool) -> list:
        rules = []
        for i, stage in enumerate(self.settings.stages):
            if i in self.done:
                continue
            due = (stage.epoch is not None and epoch_end and trainer.epoch >= stage.epoch) or \
                  (stage.step is not None and trainer.step >= stage.step)
            if due:
                self.done.append(i)
                self.done_steps.append(trainer.step)
                rules += self._checked(trainer, i, [decode(d) for d in stage.rules])
        return rules

    def _checked(self, trainer, i: int, rules: list) -> list:
        """The stage's rules, each tried on the graph the previous ones make (and refused when not exact)."""
        graph = trainer.graph
        chosen = []
        for rule in rules:
            rule = exact_form(graph, rule, trainer.apply)
            chosen.append(rule)
            rw = trainer.apply(graph, rule)
            if self.settings.require_exact and not rw.exact:
                raise ConfigError(f"stage {i}: rule {rule.name}({rule.args()}) does not keep the network's "
                                  "function exactly (set method.require_exact: false to allow it)",
                                  field=f"method.stages.{i}.rules")
            graph = rw.graph
        return chosen

    def lr_factor(self, trainer) -> float:
        """The seed's factor, then each applied stage's (by the order applied), each reached over its warm-up."""
        factor = self.settings.lr_factor
        for i, at in zip(self.done, self.done_steps):
            stage = self.settings.stages[i]
            if stage.lr_factor is None:
                continue
            t = 1.0 if stage.warmup_steps == 0 else min(1.0, max(0.0, (trainer.step - at) / stage.warmup_steps))
            factor += t * (stage.lr_factor - factor)
        return factor

    def on_step_end(self, trainer) -> list:
        return self._due(trainer, epoch_end=False)

    def on_epoch_end(self, trainer, metrics: dict) -> list:
        return self._due(trainer, epoch_end=True)

    def summary(self, trainer) -> dict:
        return {"stages_applied": len(self.done)}
