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

A rule whose rewrite is not exact is replaced by its exact form where one exists (:func:`~archgraph.rules.widen.
exact_form`: ``add_filters init=preserve`` on a layer-norm stream becomes ``init=masked``), and the history logs the
rule applied. With ``require_exact`` (the default) a rule that still is not exact stops the run with an error that
names it.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

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



class StagedStrategy(Strategy):
    """Applies each stage's rules once, after its step or at the end of its epoch."""

    name = "staged"
    STATE = ("done",)

    def __init__(self, settings, config=None):
        super().__init__(settings, config)
        self.done: list = []   # indices of the stages applied (a resumed run does not apply them again)

    def _due(self, trainer, *, epoch_end: bool) -> list:
        rules = []
        for i, stage in enumerate(self.settings.stages):
            if i in self.done:
                continue
            due = (stage.epoch is not None and epoch_end and trainer.epoch >= stage.epoch) or \
                  (stage.step is not None and trainer.step >= stage.step)
            if due:
                self.done.append(i)
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

    def on_step_end(self, trainer) -> list:
        return self._due(trainer, epoch_end=False)

    def on_epoch_end(self, trainer, metrics: dict) -> list:
        return self._due(trainer, epoch_end=True)

    def summary(self, trainer) -> dict:
        return {"stages_applied": len(self.done)}
