"""The user's own datasets (``data: {name: python, factory: "package.module:function"}``): the function is called
with no arguments and returns a mapping (or an object with these attributes, or a tuple ``(train, test, task)`` or
``(train, test, val, task)``): ``train``, ``test`` and optionally ``val``, each a map-style torch ``Dataset``
whose items are ``(input, target)``, and ``task``: ``classification``
(targets are class ids), ``segmentation`` (per-pixel class ids ``[H, W]``) or ``lm`` (next-token targets ``[T]`` for
token inputs ``[T]``; metric perplexity). Optionally ``num_classes`` (default: the seed's output size).

**This runs the user's code**: ``archgraph grow`` imports the module (from the working directory or the Python
path) when the run starts, as a training script would. ``archgraph validate RUN.yaml`` only checks the factory's
spelling and never imports it. Inputs reach the network as the Dataset gives them (no normalisation or
augmentation by archgraph: the Dataset's own transforms apply, in the DataLoader's workers); a missing ``val`` is
carved from ``train`` (a random ``val_fraction``, fixed by the run's seed).
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from .registry import Loaded, Request, register
from .settings import DataBase

TASKS = {"classification": "classification", "segmentation": "segmentation", "lm": "token_model",
         "language_model": "token_model"}


class PythonSettings(DataBase):
    """Datasets made by the user's Python function (archgraph/data/python.py); running the run file runs it."""
    name: Literal["python"] = "python"
    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                         description="'package.module:function' returning train, test (and optionally val) torch "
                                     "Datasets and the task (classification, lm or segmentation); the module is "
                                     "imported and the function run when training starts, never by validate")


class UserItems:
    """An item set over a user's Dataset (or the examples ``index`` of it)."""

    def __init__(self, dataset, index=None):
        self.dataset, self.index = dataset, index

    def __len__(self) -> int:
        return len(self.dataset) if self.index is None else len(self.index)

    def get(self, i: int, draw):
        return self.dataset[int(i) if self.index is None else int(self.index[i])]


def call_factory(spec: str, req: Request):
    """Import ``module`` and call ``function`` of ``spec`` (``module:function``)."""
    module_name, _, fn_name = spec.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))   # as `python -m` would: the working directory's modules
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise req.error(f"cannot import '{module_name}' for data.factory: {err}", "data.factory") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise req.error(f"'{module_name}' has no function '{fn_name}'", "data.factory")
    return fn()


def _part(made, key: str):
    if isinstance(made, (tuple, list)):   # (train, test, task) or (train, test, val, task)
        parts = dict(zip(("train", "test", "val") if len(made) > 3 else ("train", "test"), made[:-1]))
        return made[-1] if key == "task" else parts.get(key)
    return made.get(key) if isinstance(made, dict) else getattr(made, key, None)


def load_python(cfg: PythonSettings, req: Request) -> Loaded:
    made = call_factory(cfg.factory, req)
    train, test, val, task = (_part(made, k) for k in ("train", "test", "val", "task"))
    if train is None or test is None:
        raise req.error(f"{cfg.factory} must return train and test Datasets (got {type(made).__name__})",
                        "data.factory")
    if task not in TASKS:
        raise req.error(f"{cfg.factory} returned task {task!r}; it must be one of {', '.join(TASKS)}",
                        "data.factory")
    shape = tuple(req.input_shape or ())
    train_items, val_items = UserItems(train), UserItems(val) if val is not None else None
    if val is None and cfg.val_fraction > 0:
        perm = np.random.RandomState(req.seed).permutation(len(train))
        n_val = max(1, int(round(cfg.val_fraction * len(train))))
        train_items, val_items = UserItems(train, np.sort(perm[n_val:])), UserItems(train, np.sort(perm[:n_val]))
    if cfg.limit is not None and cfg.limit < len(train_items):
        index = train_items.index if train_items.index is not None else np.arange(len(train_items))
        train_items = UserItems(train, index[:cfg.limit])
    test_items = UserItems(test, np.arange(cfg.test_limit) if cfg.test_limit is not None and
                           cfg.test_limit < len(test) else None)
    vocab = getattr(req.input_shape, "vocab", None)
    classes = _part(made, "num_classes") or (vocab if task == "lm" else None) or 0
    return Loaded("python", TASKS[task], train_items, val_items, test_items, int(classes), shape, 1.0,
                  normalize=False, ready=True, window=shape[0] if task == "lm" and shape else None)


register(PythonSettings, load_python)
