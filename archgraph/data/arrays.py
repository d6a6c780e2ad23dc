"""Arrays in one file (``data: {name: arrays, path: FILE.npz}`` or ``FILE.safetensors``): ``x_train``,
``y_train``, ``x_test``, ``y_test`` and optionally ``x_val``, ``y_val`` (else ``val_fraction`` of the training
examples is held out, stratified for class labels), streamed through the DataLoader like ``folder``.

Inputs are images ``[N, C, H, W]`` or ``[N, H, W, C]`` (``uint8``, scaled by 1/255, or float; the layout is the one
that matches the seed's input), greyscale ``[N, H, W]``, or vectors ``[N, F]``; labels are class ids ``[N]``
(classification) or per-pixel class ids ``[N, H, W]`` (segmentation). An ``.npz`` is read without pickles, so a
file can hold arrays only, never code.

The inputs are never read whole: a member of an uncompressed ``.npz`` (``np.savez``) is memory-mapped where it lies
in the zip file, a ``.safetensors`` tensor is read one example at a time through ``safe_open`` slices, so memory
follows the batch, not the file. A compressed ``.npz`` (``np.savez_compressed``) cannot be mapped: its members are
decompressed into memory when first read (in each worker process), so prefer ``np.savez`` for large data. Class
labels ``[N]`` are read whole (to carve the validation split and count the classes); per-pixel labels, like inputs,
an example at a time.

>>> import tempfile, numpy as np, os
>>> f = os.path.join(tempfile.mkdtemp(), "d.npz")
>>> x = np.zeros((10, 6, 6, 3), np.uint8); y = np.arange(10) % 2
>>> np.savez(f, x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
>>> loaded = load_arrays(ArraySettings(name="arrays", path=f, val_fraction=0.2), Request(input_shape=(3, 6, 6)))
>>> len(loaded.train), len(loaded.val), loaded.task, loaded.classes, loaded.train.get(0, None)[0].shape
(8, 2, 'classification', 2, (3, 6, 6))
"""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
from pydantic import Field

from .registry import Loaded, Request, carve, register, stratified_subset
from .settings import DataBase

KEYS = ("x_train", "y_train", "x_test", "y_test")
#: safetensors dtype names numpy reads (bfloat16 has no numpy dtype)
SAFETENSORS_DTYPES = {"U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16, "U32": np.uint32,
                      "I32": np.int32, "U64": np.uint64, "I64": np.int64, "F16": np.float16, "F32": np.float32,
                      "F64": np.float64, "BOOL": np.bool_}
#: examples read at once when scanning per-pixel labels for their classes
CHUNK = 256


class ArraySettings(DataBase):
    """Arrays in an .npz or .safetensors file, streamed through a DataLoader (archgraph/data/arrays.py)."""
    name: Literal["arrays"] = "arrays"
    path: str = Field(description="an .npz or .safetensors file holding x_train, y_train, x_test, y_test (and "
                                  "optionally x_val, y_val); an uncompressed .npz (np.savez) is memory-mapped, a "
                                  "compressed one read into memory")


class Column:
    """One array of the file, its shape and dtype known without reading it; its rows are read when asked for, through
    a handle opened on first use in each process (a memory map of an uncompressed ``.npz`` member, the decompressed
    member of a compressed one, or a ``safetensors`` slice). The handle is not pickled: a DataLoader worker opens its
    own."""

    def __init__(self, path: str, key: str, how: str, shape: tuple, dtype: np.dtype, offset: int = 0,
                 fortran: bool = False):
        self.path, self.key, self.how = path, key, how
        self.shape, self.dtype, self.offset, self.fortran = tuple(shape), np.dtype(dtype), offset, fortran
        self._handle: Any = None

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None}

    def _open(self) -> Any:
        if self._handle is None:
            if self.how == "mmap":
                self._handle = np.memmap(self.path, self.dtype, "r", self.offset, self.shape,
                                         "F" if self.fortran else "C")
            elif self.how == "npz":
                with np.load(self.path, allow_pickle=False) as npz:
                    self._handle = npz[self.key]
            else:
                from safetensors import safe_open  # an optional reader, needed only for .safetensors files
                with safe_open(self.path, framework="numpy") as f:
                    self._handle = f.get_slice(self.key)
        return self._handle

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as an array of their own (a copy, writable)."""
        return np.array(self._open()[start:stop], dtype=self.dtype)

    def row(self, i: int) -> np.ndarray:
        return self.rows(i, i + 1)[0]

    def whole(self) -> np.ndarray:
        return self.rows(0, len(self))


def open_arrays(path: str, req: Request) -> dict[str, Column]:
    """The arrays of an ``.npz`` (no pickles) or ``.safetensors`` file, as :class:`Column` s (nothing read yet but
    their headers)."""
    p = req.path(path)
    if not p.is_file():
        raise req.error(f"arrays file '{path}' does not exist")
    try:
        if p.suffix == ".safetensors":
            return _safetensors_columns(p)
        if p.suffix == ".npz":
            return _npz_columns(p)
    except (OSError, ValueError, zipfile.BadZipFile, struct.error) as err:
        raise req.error(f"cannot read arrays file '{path}': {err}") from None
    raise req.error(f"arrays file '{path}' must end in .npz or .safetensors")


def _npz_columns(p: Path) -> dict[str, Column]:
    out = {}
    with zipfile.ZipFile(p) as zf, open(p, "rb") as raw:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[:-4]
            with zf.open(info) as member:   # the .npy header: shape, dtype, order
                shape, fortran, dtype = _npy_header(member)
            if dtype.hasobject:
                raise ValueError(f"{key} holds Python objects, and pickles are never loaded")
            if info.compress_type == zipfile.ZIP_STORED:
                raw.seek(info.header_offset)   # the local header: 30 bytes, then the name and the extra field
                name_len, extra_len = struct.unpack("<HH", raw.read(30)[26:30])
                raw.seek(info.header_offset + 30 + name_len + extra_len)
                _npy_header(raw)
                out[key] = Column(str(p), key, "mmap", shape, dtype, raw.tell(), fortran)
            else:
                out[key] = Column(str(p), key, "npz", shape, dtype)
    return out


def _npy_header(f) -> tuple[tuple, bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    return tuple(shape), bool(fortran), np.dtype(dtype)


def _safetensors_columns(p: Path) -> dict[str, Column]:
    from safetensors import safe_open  # an optional reader, needed only for .safetensors files
    out = {}
    with safe_open(str(p), framework="numpy") as f:
        for key in f.keys():
            part = f.get_slice(key)
            kind = part.get_dtype()
            if kind not in SAFETENSORS_DTYPES:
                raise ValueError(f"{key} has dtype {kind}, which numpy cannot read")
            out[key] = Column(str(p), key, "safetensors", tuple(part.get_shape()), np.dtype(SAFETENSORS_DTYPES[kind]))
    return out


class ArrayItems:
    """An item set over the columns ``x`` and ``y`` of the file: ``get(i, draw)`` reads example ``index[i]`` as
    ``[C, H, W]`` (or ``[F]``) and its label. ``layout`` says how the stored example becomes that: ``nchw`` or
    ``vector`` as stored, ``nhwc`` transposed, ``hw`` given one channel. Class labels are held whole (``labels``),
    per-pixel labels read with their example."""

    def __init__(self, x: Column, y: Union[np.ndarray, Column], index: np.ndarray, layout: str):
        self.x, self.y, self.index, self.layout = x, y, index, layout

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def subset(self, keep: np.ndarray) -> "ArrayItems":
        return ArrayItems(self.x, self.y, self.index[keep], self.layout)

    @property
    def labels(self) -> Optional[np.ndarray]:
        """The class labels of the examples, in order (``None`` for per-pixel labels)."""
        return self.y[self.index] if isinstance(self.y, np.ndarray) else None

    def get(self, i: int, draw: Optional[int]):
        j = int(self.index[i])
        x = self.x.row(j)
        if self.layout == "nhwc":
            x = np.ascontiguousarray(x.transpose(2, 0, 1))
        elif self.layout == "hw":
            x = x[None]
        y = self.y[j] if isinstance(self.y, np.ndarray) else self.y.row(j).astype(np.int64)
        return x, y


def _layout(x: Column, name: str, shape, req: Request) -> tuple[str, tuple]:
    """How ``x``'s examples become ``[C, H, W]`` (images) or ``[F]`` (vectors), and that shape."""
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise req.error(f"{name} has dtype {x.dtype}; inputs must be uint8 or float")
    dims = x.shape[1:]
    if len(dims) == 2:
        return "hw", (1, *dims)
    if len(dims) == 3:
        want = tuple(shape) if shape is not None and len(shape) == 3 else None
        nhwc = (want is not None and dims != want and dims == (want[1], want[2], want[0])) or \
            (want is None and dims[-1] in (1, 3, 4) and dims[0] not in (1, 3, 4))
        return ("nhwc", (dims[2], dims[0], dims[1])) if nhwc else ("nchw", dims)
    if len(dims) != 1:
        raise req.error(f"{name} has shape {list(x.shape)}; inputs are [N, C, H, W], [N, H, W, C], [N, H, W] or "
                        "[N, F]")
    return "vector", dims


def _labels(y: Column, name: str, n: int, req: Request) -> tuple[Union[np.ndarray, Column], int]:
    """The labels (class ids held whole, per-pixel ids as their column) and the largest class id."""
    if not np.issubdtype(y.dtype, np.integer):
        raise req.error(f"{name} has dtype {y.dtype}; labels must be integer class ids")
    if len(y.shape) not in (1, 3) or y.shape[0] != n:
        raise req.error(f"{name} has shape {list(y.shape)}; labels are [N] class ids or [N, H, W] per-pixel class "
                        f"ids, with N = {n} as in its inputs")
    held = y.whole().astype(np.int64) if len(y.shape) == 1 else None
    chunks = [held] if held is not None else (y.rows(i, i + CHUNK) for i in range(0, n, CHUNK))
    low, high = 0, -1
    for chunk in chunks:
        if chunk.size:
            low, high = min(low, int(chunk.min())), max(high, int(chunk.max()))
    if low < 0:
        raise req.error(f"{name} holds a negative class id ({low})")
    return (held if held is not None else y), high


def load_arrays(cfg: ArraySettings, req: Request) -> Loaded:
    columns = open_arrays(cfg.path, req)
    missing = [k for k in KEYS if k not in columns]
    if missing:
        raise req.error(f"arrays file '{cfg.path}' lacks {', '.join(missing)} (it has {', '.join(columns) or 'none'})")
    if ("x_val" in columns) != ("y_val" in columns):
        raise req.error(f"arrays file '{cfg.path}' has only one of x_val and y_val")
    splits: dict[str, ArrayItems] = {}
    shapes, label_shapes, classes = {}, {}, 0
    for part in ("train", "val", "test"):
        if f"x_{part}" in columns:
            x = columns[f"x_{part}"]
            layout, shapes[part] = _layout(x, f"x_{part}", req.input_shape, req)
            y, high = _labels(columns[f"y_{part}"], f"y_{part}", len(x), req)
            label_shapes[part], classes = columns[f"y_{part}"].shape[1:], max(classes, high + 1)
            splits[part] = ArrayItems(x, y, np.arange(len(x)), layout)
    if shapes["train"] != shapes["test"] or label_shapes["train"] != label_shapes["test"]:
        raise req.error(f"x_test/y_test have examples of shapes {list(shapes['test'])}/{list(label_shapes['test'])}, "
                        f"unlike x_train/y_train's {list(shapes['train'])}/{list(label_shapes['train'])}")
    train, test = splits["train"], splits["test"]
    segmentation = len(label_shapes["train"]) == 2
    if segmentation and (len(shapes["train"]) != 3 or label_shapes["train"] != shapes["train"][1:]):
        raise req.error(f"per-pixel labels y_train {list(columns['y_train'].shape)} need images [N, C, H, W] of the "
                        f"same H, W, not {list(columns['x_train'].shape)}")
    rng = np.random.RandomState(req.seed)

    def strata(items: ArrayItems) -> np.ndarray:
        labels = items.labels
        return labels if labels is not None else np.zeros(len(items), np.int64)
    if cfg.limit is not None and cfg.limit < len(train):
        train = train.subset(stratified_subset(strata(train), cfg.limit, rng))
    val = splits.get("val")
    if val is None and cfg.val_fraction > 0:
        kept, held = carve(strata(train), cfg.val_fraction, rng)
        train, val = train.subset(kept), train.subset(held)
    if cfg.test_limit is not None and cfg.test_limit < len(test):
        test = test.subset(stratified_subset(strata(test), cfg.test_limit, np.random.RandomState(req.seed + 1)))
    scale = 1.0 / 255.0 if columns["x_train"].dtype == np.uint8 else 1.0
    shape = tuple(req.input_shape) if req.input_shape is not None else shapes["train"]
    return Loaded("arrays", "segmentation" if segmentation else "classification", train, val, test, classes,
                  shape, scale, cfg.normalize)


register(ArraySettings, load_arrays)
