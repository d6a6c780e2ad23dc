"""Arrays in one file (``data: {name: arrays, path: FILE.npz}`` or ``FILE.safetensors``): ``x_train``,
``y_train``, ``x_test``, ``y_test`` and optionally ``x_val``, ``y_val`` (else ``val_fraction`` of the training
examples is held out, stratified for class labels).

Inputs are images ``[N, C, H, W]`` or ``[N, H, W, C]`` (``uint8``, scaled by 1/255, or float; the layout is the one
that matches the seed's input), greyscale ``[N, H, W]``, or vectors ``[N, F]``; labels are class ids ``[N]``
(classification) or per-pixel class ids ``[N, H, W]`` (segmentation). An ``.npz`` is read with
``allow_pickle=False``, so a file can hold arrays only, never code. The arrays are read whole, so the in-memory
path serves them (shuffled indices on the device, no worker processes).

>>> import tempfile, numpy as np, os
>>> f = os.path.join(tempfile.mkdtemp(), "d.npz")
>>> x = np.zeros((10, 6, 6, 3), np.uint8); y = np.arange(10) % 2
>>> np.savez(f, x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
>>> loaded = load_arrays(ArraySettings(name="arrays", path=f, val_fraction=0.2), Request(input_shape=(3, 6, 6)))
>>> loaded.train.x.shape, len(loaded.val), loaded.task, loaded.classes
((8, 3, 6, 6), 2, 'classification', 2)
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from .registry import ArraySplit, Loaded, Request, carve, register, stratified_subset
from .settings import DataBase

KEYS = ("x_train", "y_train", "x_test", "y_test")


class ArraySettings(DataBase):
    """Arrays in an .npz or .safetensors file (archgraph/data/arrays.py)."""
    name: Literal["arrays"] = "arrays"
    path: str = Field(description="an .npz or .safetensors file holding x_train, y_train, x_test, y_test (and "
                                  "optionally x_val, y_val)")


def read_arrays(path: str, req: Request) -> dict:
    """The arrays of an ``.npz`` (no pickles) or ``.safetensors`` file."""
    p = req.path(path)
    if not p.is_file():
        raise req.error(f"arrays file '{path}' does not exist")
    try:
        if p.suffix == ".safetensors":
            from safetensors.numpy import load_file
            return dict(load_file(str(p)))
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as err:
        raise req.error(f"cannot read arrays file '{path}': {err}") from None
    raise req.error(f"arrays file '{path}' must end in .npz or .safetensors")


def _layout(x: np.ndarray, name: str, shape, req: Request) -> np.ndarray:
    """``x`` as ``[N, C, H, W]`` (images) or ``[N, F]`` (vectors)."""
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise req.error(f"{name} has dtype {x.dtype}; inputs must be uint8 or float")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim == 4:
        want = tuple(shape) if shape is not None and len(shape) == 3 else None
        nhwc = (want is not None and x.shape[1:] != want and x.shape[1:] == (want[1], want[2], want[0])) or \
            (want is None and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4))
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if nhwc else x
    if x.ndim != 2:
        raise req.error(f"{name} has shape {list(x.shape)}; inputs are [N, C, H, W], [N, H, W, C], [N, H, W] or "
                        "[N, F]")
    return x


def _labels(y: np.ndarray, name: str, n: int, req: Request) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise req.error(f"{name} has dtype {y.dtype}; labels must be integer class ids")
    if y.ndim not in (1, 3) or y.shape[0] != n:
        raise req.error(f"{name} has shape {list(y.shape)}; labels are [N] class ids or [N, H, W] per-pixel class "
                        f"ids, with N = {n} as in its inputs")
    if y.size and y.min() < 0:
        raise req.error(f"{name} holds a negative class id ({int(y.min())})")
    return y.astype(np.int64)


def load_arrays(cfg: ArraySettings, req: Request) -> Loaded:
    arrays = read_arrays(cfg.path, req)
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise req.error(f"arrays file '{cfg.path}' lacks {', '.join(missing)} (it has {', '.join(arrays) or 'none'})")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise req.error(f"arrays file '{cfg.path}' has only one of x_val and y_val")
    splits = {}
    for part in ("train", "val", "test"):
        if f"x_{part}" in arrays:
            x = _layout(arrays[f"x_{part}"], f"x_{part}", req.input_shape, req)
            splits[part] = ArraySplit(x, _labels(arrays[f"y_{part}"], f"y_{part}", len(x), req))
    train, test = splits["train"], splits["test"]
    if train.x.shape[1:] != test.x.shape[1:] or train.y.shape[1:] != test.y.shape[1:]:
        raise req.error(f"x_test/y_test have shapes {list(test.x.shape)}/{list(test.y.shape)}, unlike x_train/"
                        f"y_train's {list(train.x.shape)}/{list(train.y.shape)}")
    segmentation = train.y.ndim == 3
    if segmentation and (train.x.ndim != 4 or train.y.shape[1:] != train.x.shape[2:]):
        raise req.error(f"per-pixel labels y_train {list(train.y.shape)} need images [N, C, H, W] of the same H, W, "
                        f"not {list(train.x.shape)}")
    rng = np.random.RandomState(req.seed)
    strata = train.y if not segmentation else np.zeros(len(train), np.int64)
    if cfg.limit is not None and cfg.limit < len(train):
        keep = stratified_subset(strata, cfg.limit, rng)
        train, strata = ArraySplit(train.x[keep], train.y[keep]), strata[keep]
    val = splits.get("val")
    if val is None and cfg.val_fraction > 0:
        kept, held = carve(strata, cfg.val_fraction, rng)
        train, val = ArraySplit(train.x[kept], train.y[kept]), ArraySplit(train.x[held], train.y[held])
    if cfg.test_limit is not None and cfg.test_limit < len(test):
        keep = stratified_subset(test.y if not segmentation else np.zeros(len(test), np.int64), cfg.test_limit,
                                 np.random.RandomState(req.seed + 1))
        test = ArraySplit(test.x[keep], test.y[keep])
    classes = int(max(int(s.y.max()) for s in (train, val, test) if s is not None and len(s))) + 1
    scale = 1.0 / 255.0 if train.x.dtype == np.uint8 else 1.0
    return Loaded("arrays", "segmentation" if segmentation else "classification", train, val, test, classes,
                  tuple(train.x.shape[1:]), scale, cfg.normalize)


register(ArraySettings, load_arrays)
