"""How a loop drives a method: :class:`Driver`, the one path from a strategy's hooks to rewrites, shared by
``archgraph grow`` (:class:`~archgraph.train.loop.Trainer`) and a user's own loop (:class:`Method`).

A :class:`Driver` holds a strategy and the view of the run it reads (a
:class:`~archgraph.train.view.RunView` in ``grow``, a :class:`NetworkView` in a plain loop) and hands the rules
each hook returns to ``take(rules, hook)``: the trainer queues them (agreed across processes, checkpointed, then
applied), a :class:`Method` applies them to its :class:`~archgraph.fx.network.Network` at once.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, Optional

import torch
from torch.func import functional_call
from torch.nn.utils.stateless import _reparametrize_module

from ..rules.base import Rewrite
from ..train.view import RememberedRewrites


class Driver:
    """A strategy and the view it reads; each hook's rules go to ``take(rules, hook)``."""

    def __init__(self, strategy, view, take: Callable[[list, str], None]):
        self.strategy = strategy
        self.view = view
        self.take = take

    @property
    def name(self) -> str:
        return self.strategy.name

    def parametrize(self, training: bool):
        """``(overrides, extra_loss)`` for the next forward pass (see ``Strategy.parametrize``)."""
        return self.strategy.parametrize(self.view, training)

    def output_loss(self, inputs: torch.Tensor, output: torch.Tensor) -> Optional[torch.Tensor]:
        """The strategy's loss term read from a training forward pass (see ``Strategy.output_loss``)."""
        return self.strategy.output_loss(self.view, inputs, output)

    def task_weight(self) -> float:
        """The weight of the task loss in the objective (see ``Strategy.task_weight``)."""
        return float(self.strategy.task_weight(self.view))

    def after_step(self) -> list:
        rules = list(self.strategy.on_step_end(self.view))
        self.take(rules, "on_step_end")
        return rules

    def after_epoch(self, metrics: dict) -> list:
        rules = list(self.strategy.on_epoch_end(self.view, metrics))
        self.take(rules, "on_epoch_end")
        return rules

    def finalize(self) -> list:
        rules = list(self.strategy.finalize(self.view))
        self.take(rules, "finalize")
        return rules

    def lr_factor(self) -> float:
        return self.strategy.lr_factor(self.view)

    def should_stop(self) -> bool:
        return bool(self.strategy.should_stop(self.view))


class Method(Driver):
    """A method attached to a :class:`~archgraph.fx.network.Network` in a plain loop (made by
    :func:`archgraph.methods.attach`). The masks and gates it trains are applied by hooks on ``net.module``
    (re-installed after every rewrite), so ``net.module(x)`` is the masked network; per training step::

        out = net.module(x); loss = F.cross_entropy(out, y) + method.loss()
        optimizer.zero_grad(); loss.backward(); optimizer.step(); method.step()

    and ``method.epoch_end({"val_loss": ..., "val_acc": ...})`` after each epoch, ``method.finish()`` at the end.
    ``step``, ``epoch_end`` and ``finish`` may rewrite ``net`` (the optimizer follows; each rewrite is a version in
    ``net.history``) and return the rules applied."""

    def __init__(self, strategy, net, optimizer: Optional[torch.optim.Optimizer], *, epochs: int,
                 steps_per_epoch: Optional[int] = None,
                 train_inputs: Optional[Callable[[], Iterable[torch.Tensor]]] = None):
        self.net = net
        self.optimizer = optimizer
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.steps = 0
        self.epoch = 0
        self.epoch_steps = 0
        self.batch_samples = 0
        self.metrics: dict = {}
        self.base_lr = optimizer.param_groups[0]["lr"] if optimizer is not None else 0.0
        self.finished = False
        self._train_inputs = train_inputs
        self._extra: Optional[torch.Tensor] = None
        self._swap = None          # the parameter swap of the forward pass under way
        self._bypass = False       # a forward pass of the bare module (the method's own, e.g. recalibration)
        self._handles: list = []
        super().__init__(strategy, NetworkView(self), self._apply)
        strategy.setup(self.view)
        strategy.attach(self.view)
        self._hook(net.module)
        net.follow(self._followed)

    # ---- the loop's calls ---------------------------------------------------------------------------------------
    def loss(self, task_loss: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The method's extra loss term for the last training forward pass of ``net.module`` (a zero tensor when
        it has none). Given the task loss, the whole objective: ``task_weight() * task_loss`` plus the term
        (distillation weighs the task loss by its ``alpha``; every other method by 1)."""
        extra = torch.zeros((), device=self.view.device) if self._extra is None else self._extra
        if task_loss is None:
            return extra
        return self.task_weight() * task_loss + extra

    def step(self) -> list:
        """Call after ``optimizer.step()``: the method's own tensors step, and it may rewrite the network."""
        self.steps += 1
        self.epoch_steps += 1
        self.net.step = self.steps
        rules = self.after_step()
        self._extra = None
        return rules

    def epoch_end(self, val_metrics: Optional[dict] = None) -> list:
        """Call after each epoch with its validation metrics (``val_loss``, ``val_acc``; what the method monitors:
        GNAP watches ``val_loss`` by default). Logs an epoch event in ``net.history`` and may rewrite ``net``."""
        if self.steps_per_epoch is None and self.epoch_steps:
            self.steps_per_epoch = self.epoch_steps
        self.epoch += 1
        self.epoch_steps = 0
        self.net.epoch = self.epoch
        metrics = {**dict(val_metrics or {}), **self.net.size_metrics(self._effective()),
                   **self.strategy.metrics(self.view)}
        self.metrics = metrics
        self.net.log({"event": "epoch", "epoch": self.epoch, "metrics": _plain(metrics)})
        return self.after_epoch(metrics)

    def finish(self) -> list:
        """The end: the method makes its final weights (hard masks as exact zeros, closed structures removed) and
        they are written into ``net.module``, whose hooks are then removed: ``net.module`` alone is the result."""
        if self.finished:
            return []
        rules = self.finalize()
        final = self._effective()
        with torch.no_grad():
            params = dict(self.net.module.named_parameters())
            for key, value in final.items():
                if key in params and value is not params[key]:
                    params[key].copy_(value)
        self.detach()
        self.finished = True
        return rules

    def detach(self) -> None:
        """Remove the hooks from ``net.module`` and stop following the network's rewrites."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.net.unfollow(self._followed)

    @property
    def progress(self) -> float:
        if self.steps_per_epoch:
            return self.epoch + min(1.0, self.epoch_steps / self.steps_per_epoch)
        return float(self.epoch)

    # ---- rewrites -----------------------------------------------------------------------------------------------
    def _apply(self, rules: list, hook: str) -> None:
        for rule in rules:
            self.net.rewrite(self.view.apply(self.net.graph, rule), self.optimizer)
        self.view.forget()

    def _followed(self, rw: Rewrite) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._hook(self.net.module)
        self.strategy.on_rewrite(self.view, rw)

    def _effective(self) -> dict:
        return self.strategy.effective_weights(self.view)

    # ---- masks through the module's hooks -----------------------------------------------------------------------
    def _hook(self, module: torch.nn.Module) -> None:
        self._handles = [module.register_forward_pre_hook(self._before),
                         module.register_forward_hook(self._after, always_call=True)]

    def _before(self, module, args):
        if self._bypass:
            return None
        if module.training and args:
            self.batch_samples = len(args[0])
        overrides, extra = self.strategy.parametrize(self.view, training=module.training)
        if module.training:
            self._extra = extra
        if overrides:
            self._swap = _reparametrize_module(module, overrides)
            self._swap.__enter__()
        return None

    def _after(self, module, args, output):
        if self._swap is not None:
            swap, self._swap = self._swap, None
            swap.__exit__(None, None, None)
        if module.training and not self._bypass and args:
            own = self.output_loss(args[0], output)
            if own is not None:
                self._extra = own if self._extra is None else self._extra + own
        return None

    def bare_forward(self, x: torch.Tensor, overrides: Optional[dict] = None) -> torch.Tensor:
        """The module on ``x`` with ``overrides`` only (none of the method's hooks)."""
        self._bypass = True
        try:
            module = self.net.module
            return functional_call(module, overrides, (x,)) if overrides else module(x)
        finally:
            self._bypass = False

    def train_inputs(self) -> Iterator[torch.Tensor]:
        if self._train_inputs is None:
            return iter(())
        return iter(self._train_inputs())


class NetworkView(RememberedRewrites):
    """What a strategy sees of a plain loop: the same names as :class:`~archgraph.train.view.RunView`, read from
    the :class:`Method` (graph and module from its network, the learning rate from its optimizer)."""

    def __init__(self, method: Method):
        self._m = method
        self._rewrites: dict = {}

    @property
    def graph(self):
        return self._m.net.graph

    @property
    def module(self) -> torch.nn.Module:
        return self._m.net.module

    @property
    def device(self) -> torch.device:
        for t in self._m.net.module.parameters():
            return t.device
        return torch.device("cpu")

    @property
    def epoch(self) -> int:
        return self._m.epoch

    @property
    def epochs(self) -> int:
        return self._m.epochs

    @property
    def step(self) -> int:
        return self._m.steps

    @property
    def progress(self) -> float:
        return self._m.progress

    @property
    def lr(self) -> float:
        opt = self._m.optimizer
        return opt.param_groups[0]["lr"] if opt is not None else self._m.base_lr

    @property
    def base_lr(self) -> float:
        return self._m.base_lr or 1.0

    @property
    def batch_samples(self) -> int:
        return self._m.batch_samples

    @property
    def metrics(self) -> dict:
        return self._m.metrics

    def forward(self, x: torch.Tensor, overrides: Optional[dict] = None) -> torch.Tensor:
        return self._m.bare_forward(x, overrides or {})

    def train_inputs(self) -> Iterator[torch.Tensor]:
        return self._m.train_inputs()


def _plain(metrics: dict) -> dict:
    """Metrics as JSON numbers (tensors read out, NaN and infinities as None)."""
    out = {}
    for k, v in metrics.items():
        if torch.is_tensor(v):
            v = float(v)
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out
