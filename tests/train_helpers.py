"""Small generated datasets in torchvision's raw layout, and tiny run configs, for the training tests."""
from __future__ import annotations

import copy
import gzip
import json
import struct
from pathlib import Path

import numpy as np

TINY_SEED = {
    "archgraph": 1,
    "name": "tiny",
    "inputs": {"image": [1, 28, 28]},
    "nodes": {
        "c1": {"op": "conv2d", "in": "image", "out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 1,
               "bias": False},
        "bn1": {"op": "batchnorm2d", "in": "c1"},
        "r1": {"op": "relu", "in": "bn1"},
        "p1": {"op": "maxpool2d", "in": "r1", "kernel_size": 2},
        "c2": {"op": "conv2d", "in": "p1", "out_channels": 3, "kernel_size": 3, "padding": 1, "bias": False},
        "bn2": {"op": "batchnorm2d", "in": "c2"},
        "r2": {"op": "relu", "in": "bn2"},
        "p2": {"op": "maxpool2d", "in": "r2", "kernel_size": 2},
        "flat": {"op": "flatten", "in": "p2"},
        "fc": {"op": "linear", "in": "flat", "out_features": 10},
    },
    "outputs": ["fc"],
}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (the MNIST format) holding a uint8 array."""
    dims = array.shape
    magic = 0x0800 | len(dims)
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + array.astype(np.uint8).tobytes()


def synthetic_digits(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Learnable images: class k is a bright 6x6 block at one of ten places, plus noise."""
    rng = np.random.RandomState(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.randint(0, 60, size=(n, size, size)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = 3 + (k // 5) * 12, 2 + (k % 5) * 5
        images[i, r:r + 6, c:c + 4] = 255
    return images, labels.astype(np.uint8)


def write_mnist(root, n_train: int = 300, n_test: int = 100, name: str = "MNIST", gz: bool = True,
                seed: int = 0) -> Path:
    """Write ``root/<name>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``; returns ``root``."""
    raw = Path(root) / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        images, labels = synthetic_digits(n, s)
        for kind, array, ndim in (("images", images, 3), ("labels", labels, 1)):
            data = idx_bytes(array)
            path = raw / f"{split}-{kind}-idx{ndim}-ubyte"
            if gz:
                Path(f"{path}.gz").write_bytes(gzip.compress(data))
            else:
                path.write_bytes(data)
    return Path(root)


def tiny_config(root, method: str = "gnap", epochs: int = 5, **method_settings) -> dict:
    """A run that takes a second or two: the tiny seed on 300 generated MNIST images."""
    methods = {
        "gnap": {"name": "gnap", "patience": 1, "min_delta": 100.0, "min_phase_epochs": 2, "max_growths": 1,
                 "param_cost": 20.0, "mask_lr": 0.05, "finetune_epochs": 1},
        "dense": {"name": "dense"},
    }
    settings = {**methods[method], **method_settings}
    return {
        "seed": copy.deepcopy(TINY_SEED),
        "data": {"name": "mnist", "root": str(root), "val_fraction": 0.2, "batch_size": 32,
                 "augment": {"translate": 1}},
        "method": settings,
        "schedule": {"optimizer": "adamw", "lr": 0.01, "epochs": epochs, "seed": 0, "device": "cpu", "threads": 1},
    }


def events(run) -> list[dict]:
    """The events of a run directory's history.jsonl."""
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
