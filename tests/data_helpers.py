"""Small data the data-source tests make themselves: ImageFolder trees of PNGs, token .bin files, a tokenizer, seeds
and run configs that fit them."""
import copy
from pathlib import Path

import numpy as np

IMAGE_SEED = {"archgraph": 1, "name": "tiny-rgb", "inputs": {"image": [3, 8, 8]}, "nodes": {
    "c1": {"op": "conv2d", "in": "image", "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False},
    "bn1": {"op": "batchnorm2d", "in": "c1"},
    "r1": {"op": "relu", "in": "bn1"},
    "c2": {"op": "conv2d", "in": "r1", "out_channels": 6, "kernel_size": 3, "padding": 1, "bias": False},
    "bn2": {"op": "batchnorm2d", "in": "c2"},
    "r2": {"op": "relu", "in": "bn2"},
    "gap": {"op": "global_avg_pool", "in": "r2"},
    "fc": {"op": "linear", "in": "gap", "out_features": 3}}, "outputs": ["fc"]}

TOKEN_SEED = {"archgraph": 1, "name": "tiny-lm", "inputs": {"tokens": {"shape": [8], "vocab": 40}}, "nodes": {
    "embed": {"op": "embedding", "in": "tokens", "embedding_dim": 8},
    "fc": {"op": "linear", "in": "embed", "out_features": 16},
    "act": {"op": "relu", "in": "fc"},
    "head": {"op": "linear", "in": "act", "out_features": 40}}, "outputs": ["head"]}

CLASSES = ("ant", "bee", "cat")


def write_folder(root, per_class=(12, 0, 4), seed: int = 0, sizes=((10, 14), (9, 9), (16, 12))) -> Path:
    """A tree ``root/{train,val,test}/<class>/*.png`` with ``per_class`` images per class and split (0: no such
    folder), of varied sizes and modes (RGB, greyscale, RGBA, palette); each class has its own mean colour."""
    from PIL import Image
    rng = np.random.RandomState(seed)
    modes = ("RGB", "L", "RGBA", "P")
    for split, n in zip(("train", "val", "test"), per_class):
        for c, name in enumerate(CLASSES):
            if not n:
                continue
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = sizes[(i + c) % len(sizes)]
                pixels = np.clip(rng.normal(60 + 70 * c, 30, (h, w, 3)), 0, 255).astype(np.uint8)
                img = Image.fromarray(pixels).convert(modes[i % len(modes)])
                img.save(folder / f"{i:03d}.png")
    return Path(root)


def write_tokens(root, n_train=2000, n_val=400, n_test=400, vocab=40, dtype=np.uint16, seed=0) -> Path:
    """train.bin / val.bin / test.bin of a token stream with structure (each id mostly follows its predecessor + 1)."""
    rng = np.random.RandomState(seed)
    Path(root).mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if not n:
            continue
        steps = np.where(rng.rand(n) < 0.8, 1, rng.randint(0, vocab, n))
        ids = np.cumsum(steps) % vocab
        ids.astype(dtype).tofile(Path(root) / f"{part}.bin")
    return Path(root)


def write_arrays(path, n_train=30, n_test=9, seed=0) -> Path:
    """An uncompressed .npz (np.savez) of ``[N, H, W, C]`` uint8 images of the three classes of IMAGE_SEED, each
    class with its own mean colour."""
    rng = np.random.RandomState(seed)
    parts = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % len(CLASSES)
        parts[f"x_{split}"] = np.clip(rng.normal(60 + 70 * y[:, None, None, None], 30, (n, 8, 8, 3)), 0,
                                      255).astype(np.uint8)
        parts[f"y_{split}"] = y
    np.savez(path, **parts)
    return Path(path)


def run_config(seed: dict, data: dict, epochs: int = 2, method: str = "dense") -> dict:
    return {"seed": copy.deepcopy(seed), "data": data, "method": {"name": method},
            "schedule": {"optimizer": "adamw", "lr": 0.01, "epochs": epochs, "seed": 0, "device": "cpu",
                         "threads": 1}}
