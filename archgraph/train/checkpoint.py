"""What a checkpoint needs beyond the loop's own counters: its format number, the run settings it must be resumed
with, and the state of every random number generator the run draws from (torch's, the data generator's, numpy's,
Python's and CUDA's), so a resumed run draws exactly what an uninterrupted one would.

>>> import torch
>>> gen = torch.Generator().manual_seed(0)
>>> state = rng_state(gen)
>>> a = torch.rand(2, generator=gen)
>>> set_rng_state(state, gen)
>>> torch.equal(torch.rand(2, generator=gen), a)
True
"""
from __future__ import annotations

import json
import random
from typing import cast

import numpy as np
import torch

from ..errors import ConfigError
from .config import RunConfig

#: the layout of ``checkpoint.pt``; a checkpoint of another format is refused on resume
CHECKPOINT_FORMAT = 2   # 2: the loop's state as one record (LoopState), the version in it


def comparable_config(config: RunConfig) -> str:
    """The run settings as the checkpoint records them: JSON without the settings that may change between a run
    and its resume (data root, device, threads, extra logs)."""
    data = config.model_dump(mode="json")
    data["data"].pop("root", None)
    data["schedule"].pop("device", None)
    data["schedule"].pop("threads", None)
    data["schedule"].pop("log", None)
    return json.dumps(data, sort_keys=True)


def check_resumable(ckpt: dict, config: RunConfig, *, path: str, source: str) -> None:
    """Refuse a checkpoint of another format, or one written with other run settings."""
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"checkpoint format {ckpt.get('format')!r} is not {CHECKPOINT_FORMAT}", file=path)
    if ckpt["config"] != comparable_config(config):
        raise ConfigError("the run file differs from the one this run started with; resume with the same "
                          "settings or start a new run in another directory", file=source)


def rng_state(data_gen: torch.Generator) -> dict:
    """Every generator's state, as tensors and plain data."""
    # the legacy tuple of the global MT19937 generator: (name, keys, pos, has_gauss, gauss)
    np_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    return {"torch": torch.get_rng_state(), "data": data_gen.get_state(),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
            "python": list(random.getstate()[1]), "python_version": random.getstate()[0],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict, data_gen: torch.Generator) -> None:
    """Put back what :func:`rng_state` saved (CUDA's only on a machine with as many devices)."""
    torch.set_rng_state(state["torch"])
    data_gen.set_state(state["data"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((state["python_version"], tuple(state["python"]), None))
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
