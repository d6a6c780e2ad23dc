"""GbP: growing before pruning (our reading of Lu, Dong, Fang, Lin, Li and Shi, Pattern Recognition 2025).

The paper first *expands the filter space* (to explore more architectures before exploiting them), then prunes
filters progressively: each filter's importance is measured by *global group sparsity* (a Gaussian scale mixture
model of the filter groups) and a *deterministic annealing* strategy removes them. Its exact equations were not
available to us; what we do, with :class:`GbpSettings`:

1. **Grow.** After ``expand_after`` epochs of the seed, every channel space that can change (one per group of
   coupled producers, :mod:`archgraph.channels`; residual adds keep their sides equal) is widened by
   ``expand_factor`` with ``add_filters`` (``expand_init``, default random: the new filters must be worth something
   to survive). Only "wider" is implemented; the paper's multi-branch expansion is not.
2. **Group sparsity.** A group is one coupled channel with everything tied to it (producer rows, norm entries, the
   reading layers' columns: :class:`~archgraph.train.groups.GroupIndex`). Its *scale* is the RMS of its entries,
   each divided by the RMS of its tensor (scale-free, so groups of every layer compare on one axis: the *global*
   part). The loss adds ``penalty`` times the mean over parameters of the groups' (scale-free) L2 norms, each
   weighted by ``sqrt(group size)`` and, with ``reweight``, by ``1 / (scale + 0.05)`` recomputed every epoch: the
   MAP update of a Gaussian scale mixture (iteratively reweighted group lasso), which pushes weak groups harder.
3. **Deterministic annealing.** ``anneal_start`` epochs after the expansion a threshold on the group scale starts to
   rise along a fixed cosine schedule from 0 to ``threshold`` over ``anneal_epochs``; at every epoch end the groups
   under it are removed with ``prune_channels`` (lowest first, at most ``max_prune_fraction`` of the remaining
   groups at once, ``min_width`` channels kept per space). Pruned groups are near zero, so removal barely changes
   the function.
4. **Fine-tune.** After the annealing the penalty is off and the remaining epochs train the pruned network.

``train_macs`` in the summary counts the MACs of training forward passes (the network trains wide until pruned).

Under ``torchrun`` nothing needs synchronising beyond what the loop does: GbP trains no tensor of its own (no
:meth:`~archgraph.train.strategies.base.Strategy.learned_parameters`), draws nothing at random, and its penalty,
reweighting and pruning decisions are functions of the weights alone, which are the same on every process (the
penalty's gradient is the same on every process too, so DDP's average leaves it as it is).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal, Optional

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt

from ... import rules as R
from ...channels import analyse
from ..deferred import deferred
from .base import MethodConfig, Strategy, applicable
from .costs import SizeLedger, TrainCost

if TYPE_CHECKING:
    import torch

    from .. import groups
else:   # imported when a run trains: validating a run file reads the settings without torch
    torch = deferred("torch")
    groups = deferred("archgraph.train.groups")


class GbpSettings(MethodConfig):
    """GbP: growing before pruning, with global group sparsity and an annealed threshold
    (see archgraph/train/strategies/gbp.py)."""
    name: Literal["gbp"] = "gbp"
    strategy = "archgraph.train.strategies.gbp:GbpStrategy"
    expand_after: PositiveInt = Field(1, description="epochs the seed trains before its filter space is expanded")
    expand_factor: Annotated[float, Field(gt=1.0, le=8.0)] = Field(
        2.0, description="every channel space that can change is widened by this factor")
    expand_init: Literal["preserve", "net2net", "random", "zero"] = Field(
        "random", description="initialisation of the new filters")
    max_width: PositiveInt = Field(1024, description="no layer is widened past this many channels/features")
    penalty: NonNegativeFloat = Field(
        0.5, description="weight of the group lasso (the mean over parameters of the groups' scale-free norms)")
    reweight: bool = Field(True, description="reweight each group by the inverse of its scale (the Gaussian "
                                             "scale mixture's MAP estimate), so weak groups are pushed harder")
    anneal_start: NonNegativeInt = Field(
        3, description="epochs after the expansion before the threshold starts rising")
    anneal_epochs: PositiveInt = Field(20, description="epochs over which the threshold rises to its final value")
    threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        0.3, description="final threshold on a group's relative scale (its RMS over the RMS of each tensor)")
    max_prune_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.25, description="at most this share of the remaining groups is removed at one epoch's end")
    min_width: PositiveInt = Field(2, description="a channel space keeps at least this many channels")


SEED, SEARCH, FINETUNE = "seed", "search", "finetune"
EPS = 0.05   # added to a group's scale in the reweighting (a group at zero is not pushed infinitely)


class GbpStrategy(Strategy):
    name = "gbp"
    STATE = ("phase", "expanded_at", "sizes", "threshold", "cost")

    def __init__(self, settings, config=None):
        super().__init__(settings, config)
        self.phase = SEED
        self.expanded_at = -1
        self.sizes = SizeLedger()
        self.threshold = 0.0
        self.cost = TrainCost()
        self.index: Optional[groups.GroupIndex] = None
        self._weights: Optional[torch.Tensor] = None
        self._sizes: Optional[torch.Tensor] = None

    # ---- lifecycle ----------------------------------------------------------------------------------------------
    def setup(self, trainer) -> None:
        self.sizes.start(trainer.graph)

    def attach(self, trainer) -> None:
        # the group weights are a function of the graph and the weights, both restored on resume
        self._rebuild(trainer)

    def _rebuild(self, trainer) -> None:
        self.index = groups.GroupIndex(trainer.graph, device=trainer.device)
        params = dict(trainer.module.named_parameters())
        self._sizes = self.index.sizes(params)
        self._reweight(trainer)

    def _built(self) -> tuple[groups.GroupIndex, torch.Tensor]:
        """The group index and the groups' sizes, which :meth:`_rebuild` makes (at setup and after each rewrite)."""
        assert self.index is not None and self._sizes is not None, "the group index is built at setup"
        return self.index, self._sizes

    def scales(self, params: dict[str, torch.Tensor], detach: bool = True) -> torch.Tensor:
        """Every group's scale: the RMS of its entries, each divided by its tensor's RMS."""
        index, sizes = self._built()
        ref = tensor_rms(params, index)
        src = {k: v.detach() for k, v in params.items()} if detach else params
        sq = index.sq_norms(src, ref)
        return (sq / sizes.clamp_min(1)).sqrt()

    def _reweight(self, trainer) -> None:
        index, sizes = self._built()
        params = dict(trainer.module.named_parameters())
        with torch.no_grad():
            w = sizes.clamp_min(1).sqrt()
            if self.settings.reweight and len(index):
                w = w / (self.scales(params) + EPS)
        self._weights = w

    # ---- the loss -----------------------------------------------------------------------------------------------
    def parametrize(self, trainer, training: bool):
        if not training or self.phase != SEARCH or self.settings.penalty == 0:
            return {}, None
        index, sizes = self._built()
        if not len(index):
            return {}, None
        assert self._weights is not None, "the group weights are set with the index"
        params = dict(trainer.module.named_parameters())
        ref = tensor_rms(params, index)
        norms = (index.sq_norms(params, ref) + 1e-12).sqrt()
        total = sizes.sum().clamp_min(1)
        return {}, self.settings.penalty * (self._weights * norms).sum() / total

    def on_step_end(self, trainer) -> list:
        self.cost.add_step(trainer)
        return []

    # ---- decisions ----------------------------------------------------------------------------------------------
    def on_epoch_end(self, trainer, metrics: dict) -> list:
        s = self.settings
        e = trainer.epoch
        if self.phase == SEED:
            if e >= s.expand_after:
                self.phase = SEARCH
                self.expanded_at = e
                return self._expand_rules(trainer)
            return []
        if self.phase != SEARCH:
            return []
        self.threshold = self.threshold_at(e)
        rules = self._prune_rules(trainer) if self.threshold > 0 else []
        if e - self.expanded_at >= s.anneal_start + s.anneal_epochs:
            self.phase = FINETUNE
        else:
            self._reweight(trainer)
        return rules

    def threshold_at(self, epoch: int) -> float:
        """The annealed threshold at the end of ``epoch``: 0 until ``anneal_start`` epochs after the expansion,
        then rising along a half cosine to ``threshold`` over ``anneal_epochs``."""
        s = self.settings
        if self.expanded_at < 0:
            return 0.0
        t = (epoch - self.expanded_at - s.anneal_start) / s.anneal_epochs
        t = min(1.0, max(0.0, t))
        return s.threshold * 0.5 * (1.0 - math.cos(math.pi * t))

    def _expand_rules(self, trainer) -> list:
        s = self.settings
        graph = trainer.graph
        out = []
        for space in analyse(graph).spaces():
            if space.frozen or space.irregular:
                continue
            node = next((p for p in space.producers if p in graph.nodes), None)
            if node is None:
                continue
            width = len(space.classes)
            count = min(s.max_width, int(math.ceil(width * s.expand_factor))) - width
            if count <= 0:
                continue
            out.append(R.exact_form(graph, R.AddFilters(node=node, count=count, init=s.expand_init), trainer.apply))
        # the seeds number the rules that apply (whether a rule applies does not depend on its seed)
        return [rule.model_copy(update={"seed": i}) for i, rule in enumerate(applicable(graph, out, trainer.apply))]

    def _prune_rules(self, trainer) -> list:
        index, _ = self._built()
        if not len(index):
            return []
        s = self.settings
        scales = self.scales(dict(trainer.module.named_parameters()))
        below = torch.nonzero(scales < self.threshold).flatten()
        if not below.numel():
            return []
        order = below[torch.argsort(scales[below], stable=True)]
        most = max(1, int(s.max_prune_fraction * len(index)))
        return index.prune_rules([int(g) for g in order[:most]], min_width=s.min_width, apply=trainer.apply)

    def on_rewrite(self, trainer, rewrite) -> None:
        self._rebuild(trainer)
        self.sizes.update(rewrite.graph)

    # ---- numbers and state --------------------------------------------------------------------------------------
    def metrics(self, trainer) -> dict:
        m = {"phase": self.phase, "threshold": round(self.threshold, 6), "train_macs": self.cost.macs,
             "groups": len(self.index) if self.index is not None else 0}
        if self.index is not None and len(self.index):
            sc = self.scales(dict(trainer.module.named_parameters()))
            m["scale_min"] = float(sc.min())
            m["scale_median"] = float(sc.median())
        return m

    def summary(self, trainer) -> dict:
        return {"train_macs": self.cost.macs, **self.sizes.summary(trainer.graph)}

def tensor_rms(params: dict[str, torch.Tensor], index: groups.GroupIndex) -> dict[str, torch.Tensor]:
    """RMS of every tensor that has group entries (detached; the reference scale of its entries)."""
    out = {}
    for key, _, _ in index.entries:
        if key not in out:
            p = params[key].detach()
            out[key] = p.pow(2).mean().sqrt().clamp_min(1e-12)
    return out
