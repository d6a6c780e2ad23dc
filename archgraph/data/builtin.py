"""The built-in image datasets: scikit-learn's 8x8 digits (bundled, the default) and torchvision's MNIST,
Fashion-MNIST, CIFAR-10/100 and SVHN, held whole in memory with a stratified validation split.

Images stay ``uint8`` (on the training device: all of MNIST is 47 MB) and become normalised floats batch by batch,
after augmentation: for data this small the in-memory path is faster than a DataLoader (see
``benchmarks/data_memory.py``).

MNIST-style files may be gzipped only (``MNIST/raw/train-images-idx3-ubyte.gz``, as in ``../shared/data``):
torchvision's loader wants them unpacked, so they are unpacked into a temporary folder that is deleted after loading;
the dataset root is never written to. CIFAR and SVHN are read by torchvision itself (their files are checked against
torchvision's md5 sums before torchvision unpickles or reads them).

>>> loaded = load_builtin(ImageSettings(name="digits"), Request(seed=0))
>>> loaded.train.x.shape, loaded.test.x.shape, loaded.classes
((1293, 1, 8, 8), (360, 1, 8, 8), 10)
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import Field

from ..compat import import_torchvision
from ..errors import ConfigError
from .registry import ArraySplit, Loaded, Request, carve, register, stratified_subset
from .settings import DataBase

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100",
               "svhn": "SVHN"}
DIGITS_SPLIT_SEED = 0  # the digits' 80/20 train/test split is fixed, whatever the run's seed


class ImageSettings(DataBase):
    """A built-in image dataset (archgraph/data/builtin.py)."""
    name: Literal["digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn"] = Field(
        "digits", description="digits is scikit-learn's bundled 8x8 handwritten digits (no download); the others "
                              "are read by torchvision from data.root")
    root: Optional[str] = Field(None, description="dataset root for torchvision datasets (default: ./data; "
                                                  "--data-root overrides it)")
    download: bool = Field(False, description="let torchvision download a missing dataset")


def load_builtin(cfg: ImageSettings, req: Request) -> Loaded:
    """The dataset ``cfg`` names, ``limit``/``test_limit`` stratified subsets and a stratified ``val_fraction`` of
    the training split held out (fixed by the run's seed)."""
    if cfg.name == "digits":
        (xtr, ytr), (xte, yte) = digits_arrays()
        scale = 1.0 / 16.0
    else:
        (xtr, ytr), (xte, yte) = torchvision_arrays(cfg.name, req.root or cfg.root or "data", cfg.download,
                                                    req.source)
        scale = 1.0 / 255.0
    classes = int(max(ytr.max(), yte.max())) + 1
    rng = np.random.RandomState(req.seed)
    if cfg.limit is not None and cfg.limit < len(ytr):
        keep = stratified_subset(ytr, cfg.limit, rng)
        xtr, ytr = xtr[keep], ytr[keep]
    if cfg.test_limit is not None and cfg.test_limit < len(yte):
        keep = stratified_subset(yte, cfg.test_limit, np.random.RandomState(req.seed + 1))
        xte, yte = xte[keep], yte[keep]
    val = None
    if cfg.val_fraction > 0:
        kept, held = carve(ytr, cfg.val_fraction, rng)
        val = ArraySplit(xtr[held], ytr[held])
        xtr, ytr = xtr[kept], ytr[kept]
    train = ArraySplit(np.ascontiguousarray(xtr), ytr)
    test = ArraySplit(np.ascontiguousarray(xte), yte)
    return Loaded(cfg.name, "classification", train, val, test, classes, tuple(xtr.shape[1:]), scale,
                  cfg.normalize)


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


register(ImageSettings, load_builtin)
