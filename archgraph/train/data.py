"""Datasets as whole tensors: scikit-learn's 8x8 digits (bundled, the default) and torchvision's MNIST,
Fashion-MNIST, CIFAR-10/100 and SVHN, with a held-out validation split for the plateau detector.

Images are kept as ``uint8`` on the training device (compact: all of MNIST is 47 MB) and turned into normalised
floats batch by batch, after augmentation, so there are no DataLoader workers and every epoch is one permutation.

MNIST-style files may be gzipped only (``MNIST/raw/train-images-idx3-ubyte.gz``, as in ``../shared/data``):
torchvision's loader wants them unpacked, so they are unpacked into a temporary folder that is deleted after loading;
the dataset root is never written to. CIFAR and SVHN are read by torchvision itself (their files are checked against
torchvision's md5 sums before torchvision unpickles or reads them).

>>> ds = load_dataset(DataConfig(name="digits"), seed=0)    # doctest: +SKIP
>>> ds.train.x.shape, ds.test.x.shape                         # doctest: +SKIP
(torch.Size([1293, 1, 8, 8]), torch.Size([360, 1, 8, 8]))
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..compat import import_torchvision
from ..errors import ConfigError
from .augment import augment as augment_batch
from .config import DataConfig

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100",
               "svhn": "SVHN"}
DIGITS_SPLIT_SEED = 0  # the digits' 80/20 train/test split is fixed, whatever the run's seed


@dataclass
class Split:
    """Examples of one split: ``x`` raw images (``uint8``, ``N, C, H, W``), ``y`` class indices."""
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Dataset:
    """Training, validation and test splits plus how raw images become network inputs."""
    name: str
    train: Split
    val: Optional[Split]
    test: Split
    num_classes: int
    scale: float                 # raw value -> [0, 1]
    mean: torch.Tensor           # per channel, after scaling
    std: torch.Tensor
    input_shape: tuple[int, ...]  # per-sample shape the network takes
    task = "classification"       # what the loss and metrics follow (archgraph/train/tasks.py)

    def to(self, device) -> "Dataset":
        return Dataset(self.name, self.train.to(device), self.val.to(device) if self.val is not None else None,
                       self.test.to(device), self.num_classes, self.scale, self.mean.to(device),
                       self.std.to(device), self.input_shape)

    def inputs(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw ``uint8`` images -> float network inputs (scaled, normalised, reshaped)."""
        x = raw.float() * self.scale
        x = (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
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


def load_dataset(cfg: DataConfig, seed: int = 0, root: Optional[str] = None,
                 input_shape: Optional[tuple[int, ...]] = None, source: str = "<config>") -> Dataset:
    """Load the dataset ``cfg`` names, carve the validation split (stratified, fixed by ``seed``) and compute the
    normalisation from the training split. ``input_shape`` (the graph's) reshapes samples, e.g. to ``[64]``.
    ``text`` and the ``*_scenes`` names are read by :mod:`archgraph.train.text` and :mod:`archgraph.train.scenes`
    (windows of the input's token length; per-pixel labels)."""
    if cfg.name == "text":
        from .text import load_text   # text and scenes import this module
        if input_shape is None or len(input_shape) != 1:
            raise ConfigError(f"data 'text' needs a seed whose input is token ids {{shape: [T], vocab: V}}, not "
                              f"{list(input_shape or [])}", file=source, field="seed")
        return load_text(cfg, int(input_shape[0]), source)
    if cfg.name.endswith("_scenes"):
        from .scenes import load_scenes   # as above
        return load_scenes(cfg, seed, root, input_shape, source)
    root = root or cfg.root or "data"
    if cfg.name == "digits":
        (xtr, ytr), (xte, yte) = digits_arrays()
        scale = 1.0 / 16.0
    else:
        (xtr, ytr), (xte, yte) = torchvision_arrays(cfg.name, root, cfg.download, source)
        scale = 1.0 / 255.0
    num_classes = int(max(ytr.max(), yte.max())) + 1
    rng = np.random.RandomState(seed)
    if cfg.limit is not None and cfg.limit < len(ytr):
        keep = _stratified_subset(ytr, cfg.limit, rng)
        xtr, ytr = xtr[keep], ytr[keep]
    if cfg.test_limit is not None and cfg.test_limit < len(yte):
        keep = _stratified_subset(yte, cfg.test_limit, np.random.RandomState(seed + 1))
        xte, yte = xte[keep], yte[keep]
    val = None
    if cfg.val_fraction > 0:
        n_val = max(1, int(round(cfg.val_fraction * len(ytr))))
        hold = _stratified_subset(ytr, n_val, rng)
        mask = np.ones(len(ytr), dtype=bool)
        mask[hold] = False
        val = Split(torch.from_numpy(xtr[hold]), torch.from_numpy(ytr[hold]))
        xtr, ytr = xtr[mask], ytr[mask]
    train = Split(torch.from_numpy(np.ascontiguousarray(xtr)), torch.from_numpy(ytr))
    test = Split(torch.from_numpy(np.ascontiguousarray(xte)), torch.from_numpy(yte))
    if cfg.normalize:
        xs = train.x.float() * scale
        mean = xs.mean(dim=(0, 2, 3))
        std = xs.std(dim=(0, 2, 3)).clamp_min(1e-6)
    else:
        channels = train.x.shape[1]
        mean, std = torch.zeros(channels), torch.ones(channels)
    sample = tuple(train.x.shape[1:])
    shape = tuple(input_shape) if input_shape is not None else sample
    if int(np.prod(shape)) != int(np.prod(sample)):
        raise ConfigError(f"the seed's input shape {list(shape)} does not fit {cfg.name} samples of shape "
                          f"{list(sample)}", file=source, field="seed")
    return Dataset(cfg.name, train, val, test, num_classes, scale, mean, std, shape)


def _stratified_subset(y: np.ndarray, n: int, rng: np.random.RandomState) -> np.ndarray:
    """``n`` indices with the class proportions of ``y`` (sorted, so the order stays the dataset's)."""
    from sklearn.model_selection import train_test_split
    idx = np.arange(len(y))
    counts = np.bincount(y)
    if n < len(counts[counts > 0]) or n >= len(y) or counts[counts > 0].min() < 2:
        return np.sort(rng.permutation(len(y))[:n])
    _, chosen = train_test_split(idx, test_size=n, stratify=y, random_state=rng.randint(2**31 - 1))
    return np.sort(chosen)


def digits_arrays():
    """scikit-learn's digits: 1,797 images 8x8 with values 0..16, split 80/20 stratified (fixed)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = digits.images.astype(np.uint8)[:, None]
    y = digits.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=DIGITS_SPLIT_SEED)
    return (xtr, ytr), (xte, yte)


def torchvision_arrays(name: str, root: str, download: bool, source: str):
    datasets = import_torchvision().datasets
    cls = getattr(datasets, TORCHVISION[name])
    try:
        if name in ("mnist", "fashion_mnist"):
            return _mnist(cls, root, download)
        if name == "svhn":
            train = cls(root, split="train", download=download)
            test = cls(root, split="test", download=download)
            return (train.data, train.labels.astype(np.int64)), (test.data, test.labels.astype(np.int64))
        train = cls(root, train=True, download=download)
        test = cls(root, train=False, download=download)
        return ((train.data.transpose(0, 3, 1, 2), np.asarray(train.targets, dtype=np.int64)),
                (test.data.transpose(0, 3, 1, 2), np.asarray(test.targets, dtype=np.int64)))
    except (RuntimeError, OSError, ValueError, TypeError) as err:
        hint = "" if download else " (set data.download: true to let torchvision fetch it, or pass --data-root)"
        raise ConfigError(f"cannot load {name} from '{root}': {err}{hint}", file=source, field="data.root") from None


def _mnist(cls, root: str, download: bool):
    raw = Path(root) / cls.__name__ / "raw"
    if download or all((raw / f).exists() for f in MNIST_FILES):
        return _mnist_arrays(cls, root, download)
    if not all((raw / f"{f}.gz").exists() for f in MNIST_FILES):
        missing = [f for f in MNIST_FILES if not (raw / f).exists() and not (raw / f"{f}.gz").exists()]
        raise RuntimeError(f"missing {raw / missing[0]}(.gz)")
    extract = import_torchvision().datasets.utils.extract_archive
    with tempfile.TemporaryDirectory(prefix="archgraph-data-") as tmp:
        unpacked = Path(tmp) / cls.__name__ / "raw"
        unpacked.mkdir(parents=True)
        for f in MNIST_FILES:
            extract(str(raw / f"{f}.gz"), str(unpacked))
        return _mnist_arrays(cls, tmp, False)


def _mnist_arrays(cls, root, download):
    train = cls(root, train=True, download=download)
    test = cls(root, train=False, download=download)
    return ((train.data.numpy()[:, None], train.targets.numpy().astype(np.int64)),
            (test.data.numpy()[:, None], test.targets.numpy().astype(np.int64)))
