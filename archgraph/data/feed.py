"""Batches for the training loop, from what a source loaded (:class:`~archgraph.data.registry.Loaded`).

Two paths behind one interface:

* **in memory** (:class:`Dataset`, :class:`SceneDataset`, :class:`TextDataset`): whole splits as tensors on the
  training device, a batch is an index into them, augmentation runs on the whole batch on the device with random
  numbers from the run's data generator. For the built-in datasets, scenes and text (already in memory).
* **streamed** (:class:`Streamed`): a ``torch.utils.data.DataLoader`` per split with ``data.workers`` worker
  processes (persistent, ``pin_memory`` on CUDA), each reading and augmenting its examples; an example's random
  choices come from its own seed, made of the run's seed, the epoch and the example's index, so they never depend on
  which worker made it, how far the workers read ahead, or whether the run was resumed. For folder, arrays, tokens,
  python.

The loop asks both the same two things: :meth:`epoch_order` (one epoch's training order, drawn from the run's data
generator: a permutation, or for a text ``limit`` a fresh sample of that many windows) and :meth:`batches` (the
batches of given index lists, this process's share of each when distributed, as network inputs and targets on the
device). The epoch's order and the next batch are the sampler state the loop checkpoints, so a run killed at any step
resumes at that batch.

>>> from archgraph.data import data_config
>>> ds = load_data(data_config(name="digits"), seed=0)
>>> order = ds.epoch_order(torch.Generator().manual_seed(0))
>>> x, y = next(ds.batches(ds.train, [order[:4]]))
>>> x.shape, y.shape
(torch.Size([4, 1, 8, 8]), torch.Size([4]))
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, Sized, cast

import numpy as np
import torch

from . import SOURCES
from .augment import augment as augment_batch
from .registry import ArraySplit, Loaded, Request, WindowSplit
from .settings import DataBase

#: training examples of a streamed source read to measure the channels' mean and standard deviation
STATS_SAMPLE = 256
_MASK64 = (1 << 64) - 1


def load_data(cfg: DataBase, seed: int = 0, root: Optional[str] = None,
              input_shape: Optional[tuple] = None, source: str = "<config>"):
    """Load the data ``cfg`` names for a network whose input is ``input_shape`` (the graph's; a token input's shape
    carries ``vocab``): a :class:`Dataset`, :class:`SceneDataset`, :class:`TextDataset` or :class:`Streamed`, on the
    CPU (``.to(device)`` moves it). ``seed`` fixes the carved validation split and streamed examples' draws."""
    req = Request(seed, root, input_shape, source)
    loaded = SOURCES[cfg.name].load(cfg, req)
    if isinstance(loaded.train, WindowSplit):
        return TextDataset.of(loaded)
    if isinstance(loaded.train, ArraySplit):
        return Dataset.of(loaded, input_shape, req)
    return Streamed(loaded, cfg, req)


# ---- in memory ------------------------------------------------------------------------------------------------------

class InMemory:
    """The loop's interface for data held as tensors (see the module docstring)."""
    epoch_size: Optional[int] = None
    train: Sized   # the training split (each subclass's own kind)

    def batch(self, split: Any, index: torch.Tensor, augment=None, gen: Optional[torch.Generator] = None,
              part: Optional[slice] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)`` of the examples ``index`` of ``split`` (each subclass makes its own)."""
        raise NotImplementedError

    def epoch_order(self, gen: torch.Generator) -> torch.Tensor:
        order = torch.randperm(len(self.train), generator=gen)
        return order[:self.epoch_size] if self.epoch_size is not None else order

    def batches(self, split, index_batches: Sequence[torch.Tensor], augment=None, gen=None, part=None,
                epoch: Optional[int] = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(inputs, targets)`` of each index list, made when asked for (so the data generator's draws happen in
        step order, as the checkpoint expects)."""
        for index in index_batches:
            yield self.batch(split, index, augment, gen, part)

    def close(self) -> None:
        """Nothing to release (no worker processes)."""


@dataclass
class Split:
    """Examples of one split: ``x`` raw inputs (``uint8`` or float, ``N, C, H, W`` or ``N, F``), ``y`` labels."""
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Dataset(InMemory):
    """Training, validation and test splits plus how raw inputs become network inputs."""
    name: str
    train: Split
    val: Optional[Split]
    test: Split
    num_classes: int
    scale: float                 # raw value -> [0, 1]
    mean: torch.Tensor           # per channel (or feature), after scaling
    std: torch.Tensor
    input_shape: tuple[int, ...]  # per-sample shape the network takes
    task = "classification"       # what the loss and metrics follow (archgraph/train/tasks.py)

    @classmethod
    def of(cls, loaded: Loaded, input_shape, req: Request) -> "Dataset":
        """Tensors of ``loaded``'s arrays, normalised by the training split's per-channel mean and std."""
        train, test = _tensors(loaded.train), _tensors(loaded.test)
        val = _tensors(loaded.val) if loaded.val is not None else None
        dims = (0, *range(2, train.x.dim()))
        if loaded.normalize and train.x.dim() > 2:
            xs = train.x.float() * loaded.scale
            mean, std = xs.mean(dim=dims), xs.std(dim=dims).clamp_min(1e-6)
        elif loaded.normalize:
            xs = train.x.float() * loaded.scale
            mean, std = xs.mean(dim=0), xs.std(dim=0).clamp_min(1e-6)
        else:
            mean, std = torch.zeros(train.x.shape[1]), torch.ones(train.x.shape[1])
        sample = tuple(train.x.shape[1:])
        shape = tuple(input_shape) if input_shape is not None else sample
        if int(np.prod(shape)) != int(np.prod(sample)):
            raise req.error(f"the seed's input shape {list(shape)} does not fit {loaded.name} samples of shape "
                            f"{list(sample)}", "seed")
        kind = SceneDataset if loaded.task == "segmentation" else cls
        return kind(loaded.name, train, val, test, loaded.classes, loaded.scale, mean, std, shape)

    def to(self, device) -> "Dataset":
        return type(self)(self.name, self.train.to(device), self.val.to(device) if self.val is not None else None,
                          self.test.to(device), self.num_classes, self.scale, self.mean.to(device),
                          self.std.to(device), self.input_shape)

    def inputs(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw inputs -> float network inputs (scaled, normalised, reshaped)."""
        x = raw.float() * self.scale
        view = (1, -1, *([1] * (x.dim() - 2)))
        x = (x - self.mean.view(view)) / self.std.view(view)
        return x.reshape(x.shape[0], *self.input_shape)

    def batch(self, split: Split, index: torch.Tensor, augment=None, gen: Optional[torch.Generator] = None,
              part: Optional[slice] = None):
        """``(inputs, labels)`` of the examples ``index`` of ``split``, augmented when settings are given. ``part``
        keeps a share of the batch after augmenting all of it (a distributed rank's share, with the random draws of
        the whole batch, so every rank's generator stays in step)."""
        index = index.to(split.x.device)
        raw = split.x[index]
        if augment is not None and gen is not None:
            raw = augment_batch(raw, augment, gen)
        y = split.y[index]
        if part is not None:
            raw, y = raw[part], y[part]
        return self.inputs(raw), y


def _tensors(split: object) -> Split:
    """Tensors of an array split (load_data sends here only sources whose splits are arrays)."""
    s = cast(ArraySplit, split)
    return Split(torch.from_numpy(np.ascontiguousarray(s.x)), torch.from_numpy(s.y))


class SceneDataset(Dataset):
    """Images with per-pixel labels: the images go through the usual normalisation, the labels stay class ids;
    augmentation moves image and labels together."""
    task = "segmentation"

    def batch(self, split: Split, index: torch.Tensor, augment=None, gen: Optional[torch.Generator] = None,
              part: Optional[slice] = None):
        index = index.to(split.x.device)
        raw, y = split.x[index], split.y[index]
        if augment is not None and gen is not None:
            # shifted, rotated and flipped as one; the label channel resampled by its nearest pixel
            both = augment_batch(torch.cat([raw, y[:, None].to(raw.dtype)], 1), augment, gen, label_channels=1)
            raw, y = both[:, :-1], both[:, -1]
        if part is not None:
            raw, y = raw[part], y[part]
        return self.inputs(raw), y.long()


@dataclass
class TextSplit:
    """One contiguous part of a corpus as token ids, and the start of each window in it."""
    tokens: torch.Tensor   # long, 1-D
    starts: torch.Tensor   # long: window i is tokens[starts[i] : starts[i] + T + 1]

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def to(self, device) -> "TextSplit":
        return TextSplit(self.tokens.to(device), self.starts.to(device))


@dataclass
class TextDataset(InMemory):
    """Windows of ``window`` tokens with next-token targets; ``symbols[i]`` is the text of id ``i`` (``None`` for
    the unknown id). ``epoch_size`` (a limit) trains each epoch on that many windows drawn afresh."""
    name: str
    train: TextSplit
    val: Optional[TextSplit]
    test: TextSplit
    window: int
    symbols: list
    task: str = "language_model"
    epoch_size: Optional[int] = None

    @classmethod
    def of(cls, loaded: Loaded) -> "TextDataset":
        def tensors(split: object) -> TextSplit:   # load_data sends here only sources whose splits are windows
            s = cast(WindowSplit, split)
            return TextSplit(torch.from_numpy(s.tokens), torch.from_numpy(s.starts))

        assert loaded.window is not None and loaded.symbols is not None, "a text source sets window and symbols"
        val = tensors(loaded.val) if loaded.val is not None else None
        return cls(loaded.name, tensors(loaded.train), val, tensors(loaded.test), loaded.window, loaded.symbols,
                   loaded.task, loaded.epoch_size)

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    @property
    def num_classes(self) -> int:
        return self.vocab_size

    def to(self, device) -> "TextDataset":
        return TextDataset(self.name, self.train.to(device), self.val.to(device) if self.val is not None else None,
                           self.test.to(device), self.window, self.symbols, self.task, self.epoch_size)

    def batch(self, split: TextSplit, index: torch.Tensor, augment=None, gen: Optional[torch.Generator] = None,
              part: Optional[slice] = None):
        """``(tokens [B, T], next tokens [B, T])`` of the windows ``index`` (augmentation does not apply)."""
        starts = split.starts[index.to(split.starts.device)]
        if part is not None:
            starts = starts[part]
        pos = starts[:, None] + torch.arange(self.window + 1, device=starts.device)[None]
        w = split.tokens[pos]
        return w[:, :-1], w[:, 1:]


# ---- streamed -------------------------------------------------------------------------------------------------------

def draw_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of example ``index``'s random choices in ``epoch`` (splitmix64 of the three; 63 bits).

    >>> draw_seed(0, 1, 2) == draw_seed(0, 1, 2) != draw_seed(0, 2, 2)
    True
    """
    z = (seed * 0x9E3779B97F4A7C15 + (epoch + 1) * 0xBF58476D1CE4E5B9 + (index + 1) * 0x94D049BB133111EB) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def default_workers() -> int:
    """The machine's CPU cores less one (at most 8), shared among the processes of a torchrun on this machine."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores // max(1, local) - 1))


class _Keys:
    """The DataLoader's batch sampler: the ``(index, draw)`` lists of the batches to load next (set before each
    pass, so one DataLoader and its persistent workers serve every epoch)."""

    def __init__(self):
        self.keys: list = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class _Examples(torch.utils.data.Dataset):
    """What a worker does for one ``(index, draw)`` key: read the example, then augment it with its own generator
    (per-pixel labels move with the image)."""

    def __init__(self, items, augment, segmentation: bool):
        self.items, self.augment, self.segmentation = items, augment, segmentation

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key):
        i, draw = key
        x, y = self.items.get(i, draw)
        x, y = torch.as_tensor(np.asarray(x)) if not torch.is_tensor(x) else x, torch.as_tensor(y)
        if draw is not None and self.augment is not None and x.dim() == 3:
            gen = torch.Generator().manual_seed(draw ^ 0x5DEECE66D)
            if self.segmentation:
                both = augment_batch(torch.cat([x, y[None].to(x.dtype)])[None], self.augment, gen, label_channels=1)
                x, y = both[0, :-1], both[0, -1].long()
            else:
                x = augment_batch(x[None], self.augment, gen)[0]
        return x, y


class Streamed:
    """Item sets read through DataLoaders (see the module docstring). ``train``, ``val``, ``test`` are the item
    sets; :meth:`batches` loads index lists of them."""

    def __init__(self, loaded: Loaded, cfg: DataBase, req: Request):
        self.name, self.task = loaded.name, loaded.task
        # item sets (len, get(index, draw)): load_data sends here the sources whose splits are neither kind in memory
        self.train, self.val, self.test = cast(Any, (loaded.train, loaded.val, loaded.test))
        self.num_classes = loaded.classes or None
        self.input_shape = tuple(loaded.input_shape)
        self.window, self.symbols, self.scale = loaded.window, loaded.symbols, loaded.scale
        self.seed = req.seed
        self.workers = cfg.workers if cfg.workers is not None else default_workers()
        self.ready = loaded.ready   # a python source's Datasets transform themselves: no augmentation, no scaling
        self.augment = cfg.augment if not self.ready else None
        self.device = torch.device("cpu")
        self._loaders: dict = {}
        x0, _ = self.train.get(0, None)
        x0 = torch.as_tensor(np.asarray(x0)) if not torch.is_tensor(x0) else x0
        if self.input_shape and x0.numel() != math.prod(self.input_shape):
            raise req.error(f"the seed's input shape {list(self.input_shape)} does not fit {self.name} examples of "
                            f"shape {list(x0.shape)}", "seed")
        self.mean: Optional[torch.Tensor] = None
        self.std: Optional[torch.Tensor] = None
        if loaded.normalize and not self.ready and (x0.dtype == torch.uint8 or x0.is_floating_point()):
            n = min(len(self.train), STATS_SAMPLE)
            at = np.random.RandomState(req.seed).choice(len(self.train), n, replace=False) \
                if n < len(self.train) else np.arange(n)
            xs = torch.stack([torch.as_tensor(np.asarray(self.train.get(int(i), None)[0])) for i in at]).float()
            xs = xs * self.scale
            dims = (0, *range(2, xs.dim()))
            self.mean, self.std = xs.mean(dim=dims), xs.std(dim=dims).clamp_min(1e-6)

    @property
    def vocab_size(self) -> Optional[int]:
        return self.num_classes

    def to(self, device) -> "Streamed":
        self.device = torch.device(device)
        if self.mean is not None and self.std is not None:
            self.mean, self.std = self.mean.to(self.device), self.std.to(self.device)
        return self

    def epoch_order(self, gen: torch.Generator) -> torch.Tensor:
        return torch.randperm(len(self.train), generator=gen)

    def inputs(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw examples -> network inputs: ``uint8`` images (and the float examples of a source that is not
        ``ready``) scaled, standardised and shaped as the seed's input; token ids as they are."""
        if raw.dtype == torch.uint8 or (raw.is_floating_point() and not self.ready):
            x = raw.float() * self.scale
            if self.mean is not None and self.std is not None:
                view = (1, -1, *([1] * (x.dim() - 2)))
                x = (x - self.mean.view(view)) / self.std.view(view)
            return x.reshape(x.shape[0], *self.input_shape)
        return raw

    def batches(self, split, index_batches: Sequence[torch.Tensor], augment=None, gen=None, part=None,
                epoch: Optional[int] = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(inputs, targets)`` of each index list (this process's ``part`` of it) on the device. With ``epoch``
        (training) every example gets its draw seed and, given ``augment``, is augmented; ``gen`` is not used."""
        keys = []
        for index in index_batches:
            chosen = index.tolist() if part is None else index[part].tolist()
            keys.append([(i, draw_seed(self.seed, epoch, i) if epoch is not None else None) for i in chosen])
        if keys and not any(keys):   # an empty share (a process with no evaluation examples)
            x, y = self._example(split)
            for _ in keys:
                yield x[:0], y[:0]
            return
        loader, sampler = self._loader(split, augment if epoch is not None else None)
        sampler.keys = keys
        blocking = self.device.type == "cuda"
        for x, y in loader:
            yield self.inputs(x.to(self.device, non_blocking=blocking)), y.to(self.device, non_blocking=blocking)

    def _example(self, split):
        x, y = _Examples(split, None, False)[(0, None)]
        return self.inputs(x[None].to(self.device)), y[None].to(self.device)

    def _loader(self, split, augment):
        key = (id(split), augment is not None)
        if key not in self._loaders:
            sampler = _Keys()
            active = augment if augment is not None and self.augment is not None else None
            loader = torch.utils.data.DataLoader(
                _Examples(split, active, self.task == "segmentation"), batch_sampler=sampler,
                num_workers=self.workers, pin_memory=self.device.type == "cuda",
                persistent_workers=self.workers > 0)
            self._loaders[key] = (loader, sampler)
        return self._loaders[key]

    def close(self) -> None:
        """Stop the worker processes."""
        for loader, _ in self._loaders.values():
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
        self._loaders.clear()
