"""Gumbel: extract a subnetwork with Gumbel-softmax sampled topologies (our reading of Dupont, Alaoui, Sahbi and
Lebois 2022, "Extracting effective subnetworks with Gumbel-softmax").

The paper extracts effective subnetworks from a larger, untrained network: each weight gets a learned probability
of being kept, topologies are sampled with the Gumbel-softmax trick while those probabilities train, a rescaling
mechanism improves the sampled subnetworks, and the final subnetwork keeps the likely weights. We had the abstract
and the method's outline, not its code, so the details below are ours (settings in
:class:`GumbelSettings`):

1. **Keep probabilities.** Every conv/linear weight ``w`` has a logit ``l`` (``logit_init``, default 0: probability
   one half); ``p = sigmoid(l)``. The logits are the method's own parameters, trained by their own Adam
   (``mask_lr``, scaled by the run's learning-rate schedule), kept in the strategy's state for resume and carried
   through rewrites by the rewrite's transfer plan.
2. **Sampled topologies.** At each training step a mask is sampled per weight from the binary concrete (relaxed
   Bernoulli) distribution, which is the two-class Gumbel-softmax written with one logit (the difference of two
   Gumbel variables is logistic): ``soft = sigmoid((l + log u - log(1 - u)) / T)``, ``u ~ U(0, 1)``. With ``hard``
   (default) the forward pass uses the hard sample ``1[soft > 0.5]`` - a real binary topology, kept with probability
   exactly ``p`` - and the gradient of the relaxed one (straight-through). The temperature ``T`` is annealed
   geometrically from ``temperature_start`` to ``temperature_end`` over the run, so the gradient estimate starts
   smooth and ends close to the hard samples' own.
3. **Weights.** By default (``weights: fixed``) conv/linear weights keep their initial random values - the paper's
   main setting, extracting from an untrained network - and receive no gradient (no weight decay either); norm
   parameters and biases still train with the run's optimizer (our choice: they are a small share and give
   batchnorm somewhere to adapt to each sampled width). ``weights: trained`` trains the weights jointly with the
   masks (the paper also extracts from trained networks).
4. **Rescaling.** Dropping weights shrinks each layer's output. The kept weights of a layer are multiplied by a
   per-layer scale: ``learned`` (default: one learned log-scale per layer, Adam with ``scale_lr``; our reading of the
   paper's cheap rescaling, one scalar per layer instead of training the weights), ``fan_in``
   (``sqrt(weights / kept weights)`` of the current mask, which keeps the output's variance at initialisation, as
   supermask-style dynamic rescaling does) or ``none``.
5. **Extraction.** The final mask is deterministic: weights with ``p > 0.5`` (or, with ``density``, the top
   ``density`` share of all masked weights by probability, one global ranking). Validation during training already
   uses this mask, so the logged accuracy is the extracted subnetwork's. ``sparsity`` adds that weight times the
   expected kept fraction to the loss (0 by default: the extracted size is what the probabilities settle at).
   At the end the scale is folded into the kept weights, dropped weights become exact zeros, channels the mask
   empties (see :mod:`archgraph.train.unstructured`) are zeroed and removed with ``prune_channels``, which leaves
   the function unchanged, and (``recalibrate_bn``) the norms' running statistics - gathered on random topologies -
   are recomputed on the training set for the extracted network, with no weight changing. There is no fine-tuning.

Under ``torchrun`` the logits and log-scales are the strategy's
:meth:`~GumbelStrategy.learned_parameters` (gradients averaged over the processes before Adam steps them), every
process starts each step from rank 0's global RNG state so all sample the same topology, and with ``weights:
fixed`` DDP is told that the conv/linear weights get no gradient. The batchnorm recalibration runs the whole
training set on every process (the same computation everywhere).

Not from the paper (our choices): the single-logit parametrisation, the per-layer learned log-scale, training the
norm parameters, the batchnorm recalibration, and the channel removal.

>>> import torch
>>> s = binary_concrete(torch.zeros(10000), 0.5, generator=torch.Generator().manual_seed(0))
>>> 0.47 < s.mean().item() < 0.53 and set(s.unique().tolist()) == {0.0, 1.0}
True
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal, Optional, cast

from pydantic import Field, NonNegativeFloat, PositiveFloat

from ...fx.torchnames import module_classes
from ..deferred import deferred
from .base import MethodConfig, Strategy

if TYPE_CHECKING:
    import torch

    from .. import tensors, unstructured
else:   # imported when a run trains: validating a run file reads the settings without torch
    torch = deferred("torch")
    tensors = deferred("archgraph.train.tensors")
    unstructured = deferred("archgraph.train.unstructured")


class GumbelSettings(MethodConfig):
    """Gumbel-softmax subnetwork extraction (see archgraph/train/strategies/gumbel.py)."""
    name: Literal["gumbel"] = "gumbel"
    strategy = "archgraph.train.strategies.gumbel:GumbelStrategy"
    weights: Literal["fixed", "trained"] = Field(
        "fixed", description="fixed: conv/linear weights keep their (random) initial values and only the masks, "
                             "the rescaling and the norm/bias parameters learn (the paper's setting); trained: the "
                             "weights train jointly with the masks")
    logit_init: float = Field(0.0, description="initial keep logit of every weight (0: keep probability 0.5)")
    mask_lr: PositiveFloat = Field(0.05, description="Adam learning rate of the logits (scaled by the run's "
                                                      "learning-rate schedule)")
    temperature_start: PositiveFloat = Field(1.0, description="Gumbel-softmax temperature at the start")
    temperature_end: PositiveFloat = Field(0.1, description="temperature at the end (annealed geometrically)")
    hard: bool = Field(True, description="forward hard 0/1 samples with straight-through gradients (false: the "
                                         "relaxed samples themselves)")
    rescale: Literal["learned", "fan_in", "none"] = Field(
        "learned", description="learned: one learned scale per layer on the kept weights; fan_in: sqrt(weights / "
                               "kept weights) per layer, so each layer's output scale at initialisation is kept; "
                               "none: no rescaling")
    scale_lr: PositiveFloat = Field(0.01, description="Adam learning rate of the learned per-layer log-scales")
    sparsity: NonNegativeFloat = Field(0.0, description="loss weight of the expected kept fraction of the masked "
                                                        "weights (0: no pressure towards fewer weights)")
    density: Optional[Annotated[float, Field(gt=0.0, le=1.0)]] = Field(
        None, description="extraction keeps this fraction of the masked weights, those with the highest keep "
                          "probability (None: every weight with keep probability > 0.5)")
    recalibrate_bn: bool = Field(True, description="after extraction, recompute the norms' running statistics "
                                                   "on the training set for the extracted network (no training)")


TRAIN, DONE = "train", "done"


def binary_concrete(logits: torch.Tensor, temperature: float, hard: bool = True,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A keep mask sampled from the binary concrete distribution with keep probability ``sigmoid(logits)``.

    ``hard``: the values are 0/1 samples (``1`` with probability exactly ``sigmoid(logits)``) and the gradient is
    that of the relaxed sample ``sigmoid((logits + logistic noise) / temperature)`` (straight-through); otherwise the
    relaxed sample itself.
    """
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    u = u.clamp(1e-6, 1 - 1e-6)
    z = logits + (torch.log(u) - torch.log1p(-u))
    soft = torch.sigmoid(z / temperature)
    if not hard:
        return soft
    return (z > 0).to(soft.dtype) + (soft - soft.detach())


def annealed(start: float, end: float, fraction: float) -> float:
    """Geometric interpolation from ``start`` (``fraction`` 0) to ``end`` (1), clamped.

    >>> annealed(1.0, 0.01, 0.5)
    0.1
    """
    t = min(1.0, max(0.0, fraction))
    return float(start * (end / start) ** t)


class GumbelStrategy(Strategy):
    name = "gumbel"
    STATE = ("phase", "logits", "log_scale", "adam_logits", "adam_scale")
    uses_global_rng = True   # the topology samples (under torchrun every process draws rank 0's)

    def __init__(self, settings, config=None):
        super().__init__(settings, config)
        # fixed weights take no gradient: DDP must not wait for them
        self.find_unused_parameters = settings.weights == "fixed"
        self.phase = TRAIN
        self.logits: dict[str, torch.Tensor] = {}
        self.log_scale: dict[str, torch.Tensor] = {}
        self.adam_logits = tensors.TensorAdam(settings.mask_lr)
        self.adam_scale = tensors.TensorAdam(settings.scale_lr)
        self.death: Optional[unstructured.ChannelDeath] = None

    # ---- lifecycle ----------------------------------------------------------------------------------------------
    def setup(self, trainer) -> None:
        params = dict(trainer.module.named_parameters())
        self.logits = {k: torch.full_like(params[k], self.settings.logit_init).detach()
                       for k in unstructured.masked_keys(trainer.graph)}
        self.log_scale = {k.rsplit(".", 1)[0]: torch.zeros((), device=trainer.device) for k in self.logits}

    def attach(self, trainer) -> None:
        self.device = trainer.device
        self.logits = {k: v.to(trainer.device) for k, v in self.logits.items()}
        self.log_scale = {k: v.to(trainer.device) for k, v in self.log_scale.items()}
        self.adam_logits.to(trainer.device)
        self.adam_scale.to(trainer.device)
        for t in [*self.logits.values(), *self.log_scale.values()]:
            t.requires_grad_(True)
        self.death = unstructured.ChannelDeath(trainer.graph)

    def temperature(self, trainer) -> float:
        s = self.settings
        return annealed(s.temperature_start, s.temperature_end, trainer.progress / max(1, trainer.epochs))

    # ---- masks --------------------------------------------------------------------------------------------------
    def keep_masks(self) -> dict[str, torch.Tensor]:
        """The deterministic (extraction) masks: ``p > 0.5``, or the top ``density`` share by probability."""
        with torch.no_grad():
            if self.settings.density is None:
                return {k: (l > 0).float() for k, l in self.logits.items()}
            flat = torch.cat([l.flatten() for l in self.logits.values()])
            k = max(1, int(round(self.settings.density * flat.numel())))
            order = torch.argsort(flat, descending=True, stable=True)
            keep = torch.zeros_like(flat)
            keep[order[:k]] = 1.0
            out, at = {}, 0
            for key, l in self.logits.items():
                out[key] = keep[at:at + l.numel()].view_as(l)
                at += l.numel()
            return out

    def _scale(self, key: str, hard: torch.Tensor) -> torch.Tensor:
        mode = self.settings.rescale
        if mode == "learned":
            return self.log_scale[key.rsplit(".", 1)[0]].exp()
        if mode == "fan_in":
            kept = hard.detach().sum().clamp_min(1.0)
            return (hard.numel() / kept).sqrt()
        return torch.ones((), device=hard.device)

    def masked(self, trainer, sample: bool) -> tuple[dict, dict]:
        """``(values, hard)``: masked, rescaled weights (dead channels zeroed) for a sampled (training) or the
        deterministic topology, and the 0/1 masks used."""
        params = dict(trainer.module.named_parameters())
        s = self.settings
        temperature = self.temperature(trainer)
        masks = {k: binary_concrete(l, temperature, s.hard) for k, l in self.logits.items()} if sample \
            else self.keep_masks()
        hard = {k: (m.detach() > 0.5).to(m.dtype) for k, m in masks.items()}
        values = {}
        for key, m in masks.items():
            w = params[key]
            base = w.detach() if s.weights == "fixed" else w
            values[key] = base * m * self._scale(key, hard[key])
        if s.hard or not sample:
            assert self.death is not None, "setup builds the channel death"
            values = self.death.gate(values, params, self.death.dead(hard))
        return values, hard

    def parametrize(self, trainer, training: bool):
        if self.phase == DONE:
            return {}, None
        values, _ = self.masked(trainer, sample=training)
        extra = None
        if training and self.settings.sparsity > 0:
            extra = self.settings.sparsity * self.expected_density()
        return values, extra

    def expected_density(self) -> torch.Tensor:
        """Expected kept fraction of the masked weights (differentiable in the logits)."""
        total = sum(l.numel() for l in self.logits.values())
        # a sum of tensors (there is at least one: total is not 0), which the builtin sum's start of 0 hides
        return cast("torch.Tensor", sum(torch.sigmoid(l).sum() for l in self.logits.values()) / total)

    def on_step_end(self, trainer) -> list:
        if self.phase == DONE:
            return []
        factor = trainer.lr / trainer.base_lr
        self.adam_logits.step(self.logits, self.settings.mask_lr * factor)
        if self.settings.rescale == "learned":
            self.adam_scale.step({f"scale.{n}": t for n, t in self.log_scale.items()},
                                 self.settings.scale_lr * factor)
        else:
            for t in self.log_scale.values():
                t.grad = None
        return []

    def learned_parameters(self, trainer) -> dict:
        """The keep logits ``logit.<node>.<param>`` and the per-layer log-scales ``scale.<node>``."""
        return {**{f"logit.{k}": v for k, v in self.logits.items()},
                **{f"scale.{k}": v for k, v in self.log_scale.items()}}

    # ---- the end ------------------------------------------------------------------------------------------------
    def finalize(self, trainer) -> list:
        if self.phase == DONE:
            return []
        values, hard = self.masked(trainer, sample=False)
        assert self.death is not None, "setup builds the channel death"
        dead = self.death.dead(hard)
        params = dict(trainer.module.named_parameters())
        with torch.no_grad():
            for key, value in values.items():
                params[key].copy_(value)
        if self.settings.recalibrate_bn:
            recalibrate_norms(trainer)
        self.phase = DONE
        return self.death.rules(dead)

    def effective_weights(self, trainer) -> dict:
        out = super().effective_weights(trainer)
        if self.phase != DONE:
            with torch.no_grad():
                values, _ = self.masked(trainer, sample=False)
            out.update({k: v.detach() for k, v in values.items()})
        return out

    def on_rewrite(self, trainer, rewrite) -> None:
        plan, new_graph = rewrite.plan, rewrite.graph
        params = dict(trainer.module.named_parameters())
        shapes = {k: params[k].shape for k in unstructured.masked_keys(new_graph)}
        with torch.no_grad():
            followed = tensors.follow_weights(plan, self.logits, shapes, self.settings.logit_init, trainer.device)
            self.logits = {k: v.requires_grad_(True) for k, v in followed.items()}
            self.adam_logits.follow(plan, shapes, device=trainer.device)
            scales = {}
            for key in shapes:
                node = key.rsplit(".", 1)[0]
                old = self.log_scale.get(plan.nodes.get(node) or node)
                scales[node] = (old.detach().clone() if old is not None
                                else torch.zeros((), device=trainer.device)).requires_grad_(True)
            self.log_scale = scales
            self.adam_scale.follow(plan, {}, others=[f"scale.{n}" for n in scales], device=trainer.device)
        self.death = unstructured.ChannelDeath(new_graph)

    # ---- numbers and state --------------------------------------------------------------------------------------
    def metrics(self, trainer) -> dict:
        if not self.logits:
            return {"phase": self.phase}
        keep = self.keep_masks()
        kept = sum(int(m.sum()) for m in keep.values())
        total = sum(m.numel() for m in keep.values())
        with torch.no_grad():
            expected = float(self.expected_density())
            scales = [math.exp(float(t)) for t in self.log_scale.values()]
        m = {"phase": self.phase, "temperature": round(self.temperature(trainer), 5),
             "expected_density": round(expected, 5), "density": round(kept / total, 5)}
        if self.settings.rescale == "learned":
            m["scale_mean"] = round(sum(scales) / len(scales), 5)
        return m


def recalibrate_norms(trainer) -> None:
    """Recompute every batchnorm's running statistics as the plain average over the training set (no augmentation)
    for the network as it is now; no parameter changes."""
    with torch.no_grad():
        # the registry's classes with running statistics: torch's batch norms (module_classes types them as ``type``)
        norms = cast("list[torch.nn.modules.batchnorm._NormBase]",
                     [m for m in trainer.module.modules() if isinstance(m, module_classes(running_stats=True))])
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None   # cumulative average
        was_training = trainer.module.training
        trainer.module.train()
        for x in trainer.train_inputs():
            if len(x) >= 2:   # a batch of one has no batch statistics
                trainer.forward(x, {})
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        trainer.module.train(was_training)
