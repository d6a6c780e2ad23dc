"""Images in an ImageFolder tree (``data: {name: folder, path: DIR}``), streamed: ``DIR/train/<class>/*`` and
optionally ``DIR/val/<class>/*`` and ``DIR/test/<class>/*``.

Classes are the folders of ``train/`` in sorted order (as torchvision's ``ImageFolder``); ``val/`` and ``test/`` may
hold fewer of them, never others. Images of any size and mode are read with PIL in the DataLoader's workers,
converted to the seed's channels (``L`` for one, ``RGB`` for three), and resized to the seed's input ``[C, H, W]``:
directly, or with ``image_size: S`` first so that the shorter side is ``S`` and then cropped to ``H x W`` (at a
random position when training, in the centre when evaluating). A missing ``val/`` is carved from ``train/``
(stratified ``val_fraction``, fixed by the run's seed); a missing ``test/`` is an error unless ``test: none``, when
the final evaluation is on the validation split.

Only the file list is held in memory: a batch is read when it is needed, so memory follows the batch, not the
dataset (``benchmarks/data_memory.py``).

>>> import tempfile, numpy as np; from PIL import Image; from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> for split in ("train", "test"):
...     for c in ("cat", "dog"):
...         (root / split / c).mkdir(parents=True)
...         for i in range(3):
...             Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(root / split / c / f"{i}.png")
>>> loaded = load_folder(FolderSettings(name="folder", path=str(root), val_fraction=0.0),
...                      Request(input_shape=(3, 8, 8)))
>>> loaded.classes, len(loaded.train), loaded.train.get(0, None)[0].shape, loaded.notes["classes"]
(2, 6, (3, 8, 8), ['cat', 'dog'])
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import Field, PositiveInt

from .registry import Loaded, Request, carve, register, stratified_subset
from .settings import DataBase

#: the file endings read as images (torchvision's ImageFolder list)
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class FolderSettings(DataBase):
    """An ImageFolder tree of images, streamed through a DataLoader (archgraph/data/folder.py)."""
    name: Literal["folder"] = "folder"
    path: str = Field(description="the folder holding train/<class>/*, and optionally val/<class>/* and "
                                  "test/<class>/* (relative to the working directory, else to the run file)")
    image_size: Optional[PositiveInt] = Field(
        None, description="resize the shorter side to this first, then crop to the seed's input (random position "
                          "when training, centre when evaluating); default: resize straight to the seed's input")
    test: Literal["dir", "none"] = Field(
        "dir", description="dir: test/ must exist; none: there is no test set and the final evaluation is on the "
                           "validation split")


class FolderImages:
    """An item set of image files: ``get(i, draw)`` reads file ``i`` as ``uint8 [C, H, W]`` with its class."""

    def __init__(self, files: list, labels: np.ndarray, shape: tuple, image_size: Optional[int]):
        self.files, self.labels = files, labels
        self.channels, self.height, self.width = shape
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, index: np.ndarray) -> "FolderImages":
        return FolderImages([self.files[i] for i in index], self.labels[index],
                            (self.channels, self.height, self.width), self.image_size)

    def get(self, i: int, draw: Optional[int]):
        from PIL import Image
        with Image.open(self.files[i]) as img:
            img = img.convert("RGB" if self.channels == 3 else "L")
            if self.image_size is None:
                img = img.resize((self.width, self.height), Image.Resampling.BILINEAR)
            else:
                img = _shorter_side(img, self.image_size)
                img = _crop(img, self.height, self.width, draw)
            x = np.array(img, dtype=np.uint8)   # a copy: PIL's buffer is read-only
        x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
        return np.ascontiguousarray(x), np.int64(self.labels[i])


def _shorter_side(img, size: int):
    w, h = img.size
    if min(w, h) == size:
        return img
    if w <= h:
        return img.resize((size, max(size, round(h * size / w))), 2)   # 2: bilinear
    return img.resize((max(size, round(w * size / h)), size), 2)


def _crop(img, height: int, width: int, draw: Optional[int]):
    w, h = img.size
    if draw is None:
        left, top = (w - width) // 2, (h - height) // 2
    else:
        rng = np.random.Generator(np.random.PCG64(draw))
        left, top = int(rng.integers(0, w - width + 1)), int(rng.integers(0, h - height + 1))
    return img.crop((left, top, left + width, top + height))


def list_images(split_dir: Path, classes: list, req: Request) -> tuple[list, np.ndarray]:
    """The image files of ``split_dir/<class>/`` (sorted) and their class indices in ``classes``."""
    files, labels = [], []
    for sub in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if sub.name not in classes:
            raise req.error(f"'{sub}' is a class that train/ does not have (classes: {', '.join(classes)})")
        found = sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
        files += [str(f) for f in found]   # strings: a million paths stay small
        labels += [classes.index(sub.name)] * len(found)
    if not files:
        raise req.error(f"'{split_dir}' holds no images ({', '.join(EXTENSIONS)}) in class folders")
    return files, np.asarray(labels, dtype=np.int64)


def load_folder(cfg: FolderSettings, req: Request) -> Loaded:
    root = req.path(cfg.path)
    shape = tuple(req.input_shape) if req.input_shape is not None else None
    if shape is None or len(shape) != 3 or shape[0] not in (1, 3):
        raise req.error(f"data 'folder' needs a seed whose input is an image [C, H, W] with 1 or 3 channels, not "
                        f"{list(shape or [])}", "seed")
    if cfg.image_size is not None and cfg.image_size < max(shape[1:]):
        raise req.error(f"data.image_size {cfg.image_size} is smaller than the seed's input {list(shape[1:])}: the "
                        "crop would not fit", "data.image_size")
    if not (root / "train").is_dir():
        raise req.error(f"'{root / 'train'}' does not exist: data.path must hold train/<class>/* (and optionally "
                        "val/ and test/)")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    files, labels = list_images(root / "train", classes, req)
    train = FolderImages(files, labels, shape, cfg.image_size)
    rng = np.random.RandomState(req.seed)
    if cfg.limit is not None and cfg.limit < len(train):
        train = train.subset(stratified_subset(train.labels, cfg.limit, rng))
    val = None
    if (root / "val").is_dir():
        val = FolderImages(*list_images(root / "val", classes, req), shape, cfg.image_size)
    elif cfg.val_fraction > 0:
        kept, held = carve(train.labels, cfg.val_fraction, rng)
        train, val = train.subset(kept), train.subset(held)
    if (root / "test").is_dir():
        test = FolderImages(*list_images(root / "test", classes, req), shape, cfg.image_size)
    elif cfg.test == "none":
        if val is None:
            raise req.error("data.test: none evaluates on the validation split, but there is none (no val/ and "
                            "data.val_fraction 0)", "data.test")
        test = val
    else:
        raise req.error(f"'{root / 'test'}' does not exist: add test/<class>/* or set data.test: none (the final "
                        "evaluation is then on the validation split)", "data.test")
    if cfg.test_limit is not None and cfg.test_limit < len(test):
        test = test.subset(stratified_subset(test.labels, cfg.test_limit, np.random.RandomState(req.seed + 1)))
    return Loaded("folder", "classification", train, val, test, len(classes), shape, 1.0 / 255.0, cfg.normalize,
                  notes={"classes": classes})


register(FolderSettings, load_folder)
