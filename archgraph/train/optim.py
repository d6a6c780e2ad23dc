"""Optimizers, learning-rate schedules and optimizer state keyed by parameter name.

The optimizer is rebuilt after every rewrite and on resume from the state stored by parameter name, so an
interrupted and resumed run takes exactly the same steps as an uninterrupted one. Weight decay applies to conv and
linear weights only (not to biases and norm parameters).

>>> import torch
>>> from archgraph.train.config import Schedule
>>> m = torch.nn.Linear(2, 2)
>>> opt = make_optimizer(m, Schedule(optimizer="sgd"))
>>> lr_at(Schedule(lr=0.1, lr_schedule="cosine", epochs=10), 5.0)
0.05
"""
from __future__ import annotations

import math

import torch

from .config import Schedule


def make_optimizer(module: torch.nn.Module, schedule: Schedule) -> torch.optim.Optimizer:
    decay: list[torch.nn.Parameter] = []
    plain: list[torch.nn.Parameter] = []
    for name, p in module.named_parameters():
        (decay if p.dim() > 1 else plain).append(p)
    groups = [{"params": decay, "weight_decay": schedule.weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    if schedule.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=schedule.lr, momentum=schedule.momentum, nesterov=schedule.nesterov)
    if schedule.optimizer == "adam":
        return torch.optim.Adam(groups, lr=schedule.lr)
    return torch.optim.AdamW(groups, lr=schedule.lr)


def lr_at(schedule: Schedule, epoch: float) -> float:
    """Learning rate at fractional ``epoch`` (0 = start) of the run's epoch budget."""
    lr = schedule.lr
    if schedule.warmup_epochs and epoch < schedule.warmup_epochs:
        return lr * (epoch + 1e-3) / schedule.warmup_epochs
    if schedule.lr_schedule == "cosine":
        span = max(1e-9, schedule.epochs - schedule.warmup_epochs)
        t = min(1.0, max(0.0, (epoch - schedule.warmup_epochs) / span))
        return lr * 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule.lr_schedule == "step":
        return lr * schedule.lr_gamma ** int(epoch // schedule.lr_step_epochs)
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def optimizer_state(optimizer: torch.optim.Optimizer, module: torch.nn.Module, copy: bool = True) -> dict[str, dict]:
    """The optimizer's per-parameter state keyed ``<node_id>.<param>``: CPU copies, or with ``copy=False`` the
    optimizer's own tensors (to hand them to a new optimizer without copying them twice)."""
    out = {}
    for name, p in module.named_parameters():
        state = optimizer.state.get(p)
        if state:
            out[name] = {k: ((v.detach().to("cpu", copy=True) if copy else v.detach()) if torch.is_tensor(v) else v)
                         for k, v in state.items()}
    return out


def load_optimizer_state(optimizer: torch.optim.Optimizer, module: torch.nn.Module, state: dict[str, dict],
                         copy: bool = True) -> None:
    """Put state saved by :func:`optimizer_state` back (parameters absent from ``state`` start fresh); with
    ``copy=False`` tensors already on the parameter's device are taken over, not copied."""
    for name, p in module.named_parameters():
        saved = state.get(name)
        if not saved:
            continue
        restored = {}
        for k, v in saved.items():
            if torch.is_tensor(v):
                # Adam keeps ``step`` on the CPU; moments live with the parameter
                v = v.clone() if k == "step" else v.to(p.device, copy=copy)
                if v.shape != p.shape and k != "step" and v.dim() > 0:
                    raise ValueError(f"optimizer state '{k}' of '{name}' has shape {list(v.shape)}, "
                                     f"the parameter {list(p.shape)}")
            restored[k] = v
        optimizer.state[p] = restored
