"""Semantic segmentation scenes made from digit images (``data: {name: digits_scenes}`` or ``mnist_scenes``).

Each scene places 1-3 digits at random positions on an empty canvas: the bundled 8x8 digits (scaled 2x to 16x16)
on 32x32, or MNIST's 28x28 digits on 64x64. The image keeps the brighter pixel where digits overlap; the label of
a pixel is 0 (background) or 1 + the class of the last digit whose stroke covers it (stroke: at least half the
source's maximum intensity). Training scenes are made from the source's training images, test scenes from its
test images, all from one generator seeded by ``seed``, so a seed always gives the same scenes.

>>> from archgraph.train.config import DataConfig
>>> ds = load_scenes(DataConfig(name="digits_scenes", limit=64, test_limit=16), seed=0)    # doctest: +SKIP
>>> ds.train.x.shape, ds.train.y.shape, ds.num_classes                                    # doctest: +SKIP
(torch.Size([58, 1, 32, 32]), torch.Size([58, 32, 32]), 11)
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..errors import ConfigError
from .augment import augment as augment_batch
from .config import DataConfig
from .data import Dataset, Split, digits_arrays, torchvision_arrays

NUM_CLASSES = 11                       # background and ten digits
#: name -> (canvas side, digit scale-up, training scenes, test scenes) by default
LAYOUT = {"digits_scenes": (32, 2, 2000, 500), "mnist_scenes": (64, 1, 20000, 2000)}


def compose(images: np.ndarray, labels: np.ndarray, n: int, canvas: int, rng: np.random.RandomState,
            max_digits: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``n`` scenes ``(uint8 [n, 1, canvas, canvas], uint8 labels [n, canvas, canvas])`` of 1-``max_digits``
    digits drawn from ``images`` (``[N, h, w]``) with classes ``labels``.

    >>> imgs = np.zeros((2, 4, 4), np.uint8); imgs[:, 1:3, 1:3] = 9
    >>> x, y = compose(imgs, np.array([3, 7]), 5, 8, np.random.RandomState(0))
    >>> x.shape, y.shape, sorted(set(np.unique(y)) - {0}) <= [4, 8]
    ((5, 1, 8, 8), (5, 8, 8), True)
    """
    h, w = images.shape[1:]
    strokes = images >= (images.reshape(len(images), -1).max(1) / 2)[:, None, None]
    strokes &= images > 0
    x = np.zeros((n, 1, canvas, canvas), np.uint8)
    y = np.zeros((n, canvas, canvas), np.uint8)
    for i in range(n):
        for _ in range(rng.randint(1, max_digits + 1)):
            j = rng.randint(len(images))
            r, c = rng.randint(canvas - h + 1), rng.randint(canvas - w + 1)
            win = x[i, 0, r:r + h, c:c + w]
            np.maximum(win, images[j], out=win)
            y[i, r:r + h, c:c + w][strokes[j]] = labels[j] + 1
    return x, y


class SceneDataset(Dataset):
    """Scenes with per-pixel labels: the images go through the usual normalisation, the labels stay class ids;
    augmentation moves image and labels together."""
    task = "segmentation"

    def to(self, device) -> "SceneDataset":
        return SceneDataset(self.name, self.train.to(device), self.val.to(device) if self.val is not None else None,
                            self.test.to(device), self.num_classes, self.scale, self.mean.to(device),
                            self.std.to(device), self.input_shape)

    def batch(self, split: Split, index: torch.Tensor, augment=None, gen: Optional[torch.Generator] = None,
              part: Optional[slice] = None):
        index = index.to(split.x.device)
        raw, y = split.x[index], split.y[index]
        if augment is not None and gen is not None:
            # shifted, rotated and flipped as one; the label channel resampled by its nearest pixel
            both = augment_batch(torch.cat([raw, y[:, None]], 1), augment, gen, label_channels=1)
            raw, y = both[:, :-1], both[:, -1]
        if part is not None:
            raw, y = raw[part], y[part]
        return self.inputs(raw), y.long()


def load_scenes(cfg: DataConfig, seed: int = 0, root: Optional[str] = None,
                input_shape: Optional[tuple[int, ...]] = None, source: str = "<config>") -> SceneDataset:
    """The scenes ``cfg`` names (``limit``/``test_limit`` scenes, defaults in :data:`LAYOUT`), a random
    ``val_fraction`` of the training scenes held out, normalised by the training images."""
    canvas, zoom, n_train, n_test = LAYOUT[cfg.name]
    if cfg.name == "digits_scenes":
        (xtr, ytr), (xte, yte) = digits_arrays()
        scale = 1.0 / 16.0
    else:
        (xtr, ytr), (xte, yte) = torchvision_arrays("mnist", root or cfg.root or "data", cfg.download, source)
        scale = 1.0 / 255.0
    xtr, xte = xtr[:, 0], xte[:, 0]
    if zoom > 1:
        xtr, xte = (a.repeat(zoom, 1).repeat(zoom, 2) for a in (xtr, xte))
    rng = np.random.RandomState(seed)
    x, y = compose(xtr, ytr, cfg.limit or n_train, canvas, rng)
    tx, ty = compose(xte, yte, cfg.test_limit or n_test, canvas, rng)
    val = None
    n_val = int(round(cfg.val_fraction * len(x)))
    if n_val > 0:
        perm = rng.permutation(len(x))
        hold, keep = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        val = Split(torch.from_numpy(x[hold]), torch.from_numpy(y[hold]))
        x, y = x[keep], y[keep]
    train, test = Split(torch.from_numpy(x), torch.from_numpy(y)), Split(torch.from_numpy(tx), torch.from_numpy(ty))
    if cfg.normalize:
        xs = train.x.float() * scale
        mean, std = xs.mean(dim=(0, 2, 3)), xs.std(dim=(0, 2, 3)).clamp_min(1e-6)
    else:
        mean, std = torch.zeros(1), torch.ones(1)
    shape = (1, canvas, canvas)
    if input_shape is not None and tuple(input_shape) != shape:
        raise ConfigError(f"the seed's input shape {list(input_shape)} does not fit {cfg.name} images of shape "
                          f"{list(shape)}", file=source, field="seed")
    return SceneDataset(cfg.name, train, val, test, NUM_CLASSES, scale, mean, std, shape)
