"""Write small example data for every data source, so the examples/data_*.yaml run files run as they are:

    python examples/data/make_data.py runs/example_data

writes ``runs/example_data/``: ``shapes/`` (an ImageFolder tree: train/ and test/ of 3 classes of 32x32 PNGs of
various sizes and modes: circles, squares, stripes), ``shapes.npz`` (the same images as arrays, NHWC uint8),
``corpus/`` (nanoGPT's train.bin / val.bin / test.bin / meta.json: CPython's help text in the ids of the tokenizer
below), ``tokenizer.json`` (a byte-level BPE tokenizer of 512 ids trained on that text with Hugging Face
``tokenizers``). Nothing is downloaded. The ``python`` source's example factory is ``examples/data/shapes.py``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

CLASSES = ("circle", "square", "stripes")


def shape_image(kind: int, size: int, rng: np.random.RandomState) -> np.ndarray:
    """An RGB image ``[size, size, 3]`` of one shape on a noisy background."""
    yy, xx = np.mgrid[:size, :size] / size
    cy, cx, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.15, 0.3)
    if kind == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    elif kind == 1:
        mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
    else:
        mask = np.sin(xx * rng.uniform(15, 30)) > 0.3
    colour = rng.randint(100, 256, 3)
    img = rng.randint(0, 60, (size, size, 3))
    img[mask] = colour
    return img.astype(np.uint8)


def shapes(n: int, rng: np.random.RandomState, size: int = 32):
    x = np.stack([shape_image(i % 3, size, rng) for i in range(n)])
    return x, np.arange(n) % 3


def write_folder(root: Path, rng: np.random.RandomState) -> None:
    from PIL import Image
    for split, n in (("train", 450), ("test", 150)):
        for i in range(n):
            kind = i % 3
            size = (32, 40, 48)[i % 3 if kind != 2 else (i // 3) % 3]   # any size: resized to the seed's input
            img = Image.fromarray(shape_image(kind, size, rng))
            if i % 7 == 0:
                img = img.convert("P")                                 # any mode: converted to RGB
            folder = root / split / CLASSES[kind]
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / f"{i:04d}.png")


def write_tokens(out: Path) -> None:
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    text = "\n\n".join(topics[k] for k in sorted(topics))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=512, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(out / "tokenizer.json"))
    ids = np.asarray(tok.encode(text).ids, dtype=np.uint16)
    corpus = out / "corpus"
    corpus.mkdir(exist_ok=True)
    a, b = int(0.9 * len(ids)), int(0.95 * len(ids))
    for name, part in (("train", ids[:a]), ("val", ids[a:b]), ("test", ids[b:])):
        part.tofile(corpus / f"{name}.bin")
    (corpus / "meta.json").write_text(json.dumps({"vocab_size": tok.get_vocab_size()}))


def main(out: str) -> None:
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    write_folder(root / "shapes", rng)
    (xtr, ytr), (xte, yte) = shapes(900, rng), shapes(300, rng)
    np.savez(root / "shapes.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    write_tokens(root)
    print(f"wrote {root}/shapes/, shapes.npz, corpus/, tokenizer.json")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/example_data")
