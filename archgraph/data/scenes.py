"""Semantic segmentation scenes made from digit images (``data: {name: digits_scenes}`` or ``mnist_scenes``).

Each scene places 1-3 digits (1 to ``max_digits``) at random positions on an empty canvas: the bundled 8x8 digits
(scaled 2x to 16x16) on 32x32, or MNIST's 28x28 digits on 64x64. The image keeps the brighter pixel where digits
overlap; the label of a pixel is 0 (background) or 1 + the class of the last digit whose stroke covers it (stroke:
at least half the source's maximum intensity). Training scenes are made from the source's training images, test
scenes from its test images, all from one generator seeded by ``seed``, so a seed always gives the same scenes.

>>> loaded = load_scenes(SceneSettings(name="digits_scenes", limit=64, test_limit=16), Request(seed=0))
>>> loaded.train.x.shape, loaded.train.y.shape, loaded.classes
((58, 1, 32, 32), (58, 32, 32), 11)
"""
from __future__ import annotations

from typing import Literal, Optional

import numpy as np
from pydantic import Field

from .builtin import digits_arrays, torchvision_arrays
from .registry import ArraySplit, Loaded, Request, register
from .settings import DataBase

NUM_CLASSES = 11                       # background and ten digits
#: name -> (canvas side, digit scale-up, training scenes, test scenes) by default
LAYOUT = {"digits_scenes": (32, 2, 2000, 500), "mnist_scenes": (64, 1, 20000, 2000)}


class SceneSettings(DataBase):
    """Segmentation scenes of 1-3 digits (archgraph/data/scenes.py)."""
    name: Literal["digits_scenes", "mnist_scenes"] = Field(
        description="digits_scenes / mnist_scenes are segmentation scenes of 1-3 digits on a 32x32 / 64x64 canvas")
    root: Optional[str] = Field(None, description="mnist_scenes: the MNIST root (default: ./data; --data-root "
                                                  "overrides it)")
    download: bool = Field(False, description="let torchvision download a missing MNIST")
    max_digits: int = Field(3, ge=1, le=5, description="each scene holds 1 to max_digits digits (fewer digits "
                                                       "overlap less: an easier task)")


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


def load_scenes(cfg: SceneSettings, req: Request) -> Loaded:
    """The scenes ``cfg`` names (``limit``/``test_limit`` scenes, defaults in :data:`LAYOUT`), a random
    ``val_fraction`` of the training scenes held out."""
    canvas, zoom, n_train, n_test = LAYOUT[cfg.name]
    shape = (1, canvas, canvas)
    if req.input_shape is not None and tuple(req.input_shape) != shape:
        raise req.error(f"the seed's input shape {list(req.input_shape)} does not fit {cfg.name} images of shape "
                        f"{list(shape)}", "seed")
    if cfg.name == "digits_scenes":
        (xtr, ytr), (xte, yte) = digits_arrays()
        scale = 1.0 / 16.0
    else:
        (xtr, ytr), (xte, yte) = torchvision_arrays("mnist", req.root or cfg.root or "data", cfg.download,
                                                    req.source)
        scale = 1.0 / 255.0
    xtr, xte = xtr[:, 0], xte[:, 0]
    if zoom > 1:
        xtr, xte = (a.repeat(zoom, 1).repeat(zoom, 2) for a in (xtr, xte))
    rng = np.random.RandomState(req.seed)
    x, y = compose(xtr, ytr, cfg.limit or n_train, canvas, rng, cfg.max_digits)
    tx, ty = compose(xte, yte, cfg.test_limit or n_test, canvas, rng, cfg.max_digits)
    val = None
    n_val = int(round(cfg.val_fraction * len(x)))
    if n_val > 0:
        perm = rng.permutation(len(x))
        hold, keep = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        val = ArraySplit(x[hold], y[hold])
        x, y = x[keep], y[keep]
    return Loaded(cfg.name, "segmentation", ArraySplit(x, y), val, ArraySplit(tx, ty), NUM_CLASSES, shape, scale,
                  cfg.normalize)


register(SceneSettings, load_scenes)
