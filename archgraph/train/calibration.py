"""Calibration batches from a run file's ``data:`` section, for the calibrated pruning criteria and depth pruning
(``archgraph prune --calib RUN.yaml``, ``archgraph compress``).

>>> import archgraph
>>> g = archgraph.load("examples/seeds/digits_cnn.yaml")
>>> batches = calibration_batches("examples/digits_gnap.yaml", g, count=2)   # doctest: +SKIP
>>> len(batches), tuple(batches[0][0].shape)                                  # doctest: +SKIP
(2, (64, 1, 8, 8))
"""
from __future__ import annotations

import os
from typing import Optional, Union

import torch

from ..data.feed import load_data
from ..errors import ConfigError
from ..graph import Graph
from .config import RunConfig, load_config


def calibration_batches(run: Union[str, os.PathLike, RunConfig], graph: Graph, count: int = 8,
                        data_root: Optional[str] = None, seed: Optional[int] = None,
                        source: Optional[str] = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` batches ``(inputs, targets)`` of ``data.batch_size`` training examples of the run file's data,
    shaped for ``graph``'s one input (a random draw fixed by ``seed``, default the run's ``schedule.seed``; no
    augmentation)."""
    cfg = run if isinstance(run, RunConfig) else load_config(run)
    source = source or (str(run) if not isinstance(run, RunConfig) else "<config>")
    if count < 1:
        raise ConfigError(f"--calib-batches must be at least 1, not {count}", field="calib_batches")
    if len(graph.inputs) != 1:
        raise ConfigError(f"calibration from a run file needs a graph with one input, not {len(graph.inputs)}",
                          file=source, field="data")
    shape = graph.shape(next(iter(graph.inputs)))   # a TokenShape (with its vocab) for token ids
    seed = cfg.schedule.seed if seed is None else seed
    ds = load_data(cfg.data, seed=seed, root=data_root or getattr(cfg.data, "root", None), input_shape=shape,
                   source=source)
    try:
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(ds.train), generator=gen)
        size = int(getattr(cfg.data, "batch_size"))
        index = [order[i * size:(i + 1) * size] for i in range(count) if i * size < len(order)]
        return list(ds.batches(ds.train, index))
    finally:
        getattr(ds, "close", lambda: None)()
