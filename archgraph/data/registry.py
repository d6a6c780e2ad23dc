"""The registry of data sources: one :class:`Source` per ``data.name``, registered by the module that defines it
(as each op registers its :class:`~archgraph.ops.registry.OpDef`).

A source's ``load(settings, request)`` reads the data and returns a :class:`Loaded`: plain numpy arrays or a
streamed item set per split, what task they are for and their shapes. It never imports torch: the torch side,
:mod:`archgraph.data.feed`, turns a :class:`Loaded` into batches (whole tensors on the device for
:class:`ArraySplit` and :class:`WindowSplit`, a ``torch.utils.data.DataLoader`` for an item set).

An item set is any object with ``len(items)`` and ``items.get(index, draw)`` returning one example ``(x, y)``
(numpy arrays or tensors); ``draw`` is ``None`` when evaluating and an integer seed when training, for the
example's own random choices (a crop position, a token window), so any example of any epoch can be made again in
any worker after a resume.

>>> sorted(SOURCES) == sorted(set(SOURCES))
True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union, get_args

import numpy as np
from pydantic import BaseModel

from ..errors import ConfigError

#: the tasks a source may declare (archgraph/train/tasks.py): ``language_model`` reports bits per character,
#: ``token_model`` perplexity (a tokenised corpus)
TASK_NAMES = ("classification", "segmentation", "language_model", "token_model")


@dataclass
class ArraySplit:
    """A split held whole in memory: ``x`` raw examples (``uint8`` or float, ``N, C, H, W`` or ``N, F``), ``y``
    labels (``N`` or per pixel ``N, H, W``)."""
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class WindowSplit:
    """A token sequence in memory and the start of each window in it (window ``i`` is
    ``tokens[starts[i] : starts[i] + T + 1]``)."""
    tokens: np.ndarray
    starts: np.ndarray

    def __len__(self) -> int:
        return int(self.starts.shape[0])


Split = Union[ArraySplit, WindowSplit, Any]   # Any: an item set (len, get(index, draw))


@dataclass
class Request:
    """What a source is asked for: the run's seed (it fixes carved splits), the dataset root (``--data-root``), the
    seed graph's input shape (a token input's shape carries ``vocab``) and the run file's name for errors."""
    seed: int = 0
    root: Optional[str] = None
    input_shape: Optional[tuple] = None
    source: str = "<config>"

    def error(self, message: str, field_name: str = "data.path") -> ConfigError:
        return ConfigError(message, file=self.source, field=field_name)

    def path(self, name: str) -> Path:
        """A ``data:`` path: as written when it exists from the working directory (or is absolute), else relative
        to the run file's folder when it exists there.

        >>> str(Request(source="runs/x/run.yaml").path("/abs/pets"))
        '/abs/pets'
        """
        p = Path(name).expanduser()
        if p.is_absolute() or p.exists() or self.source.startswith("<"):
            return p
        beside = Path(self.source).parent / p
        return beside if beside.exists() else p


@dataclass
class Loaded:
    """A source's data: three splits (``val`` may be None, ``test`` may be ``val``), the task, the number of classes
    (the vocabulary for language models), the per-example input shape the network takes, and for raw images the
    factor to ``[0, 1]`` (``scale``). Language models give their window ``T`` and, when known, ``symbols`` (the text of
    each id)."""
    name: str
    task: str
    train: Split
    val: Optional[Split]
    test: Split
    classes: int
    input_shape: tuple
    scale: float = 1.0
    normalize: bool = True
    window: Optional[int] = None
    symbols: Optional[list] = None
    epoch_size: Optional[int] = None   # training examples per epoch, drawn afresh each epoch (a limit on windows)
    ready: bool = False   # examples are network inputs as they are (a python source's Datasets transform themselves)
    notes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """One data source: the ``data.name`` values it serves, its settings model and its loader."""
    names: tuple[str, ...]
    settings: type[BaseModel]
    load: Callable[[Any, Request], Loaded]


SOURCES: dict[str, Source] = {}


def register(settings: type[BaseModel], load: Callable[[Any, Request], Loaded]) -> Source:
    """Register a source for every name its settings' ``name`` literal allows."""
    names = tuple(get_args(settings.model_fields["name"].annotation))
    if not names:
        raise ValueError(f"{settings.__name__}.name must be a Literal of the data.name values it serves")
    for name in names:
        if name in SOURCES:
            raise ValueError(f"data source {name!r} is registered twice")
    src = Source(names, settings, load)
    SOURCES.update({name: src for name in names})
    return src


def stratified_subset(y: np.ndarray, n: int, rng: np.random.RandomState) -> np.ndarray:
    """``n`` indices with the class proportions of ``y`` (sorted, so the order stays the dataset's)."""
    from sklearn.model_selection import train_test_split
    idx = np.arange(len(y))
    counts = np.bincount(y)
    if n < len(counts[counts > 0]) or n >= len(y) or counts[counts > 0].min() < 2:
        return np.sort(rng.permutation(len(y))[:n])
    _, chosen = train_test_split(idx, test_size=n, stratify=y, random_state=rng.randint(2**31 - 1))
    return np.sort(chosen)


def carve(y: np.ndarray, fraction: float, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held)`` indices: a stratified ``fraction`` of ``y`` held out (at least one example)."""
    n_val = max(1, int(round(fraction * len(y))))
    hold = stratified_subset(y, n_val, rng)
    mask = np.ones(len(y), dtype=bool)
    mask[hold] = False
    return np.flatnonzero(mask), hold
