"""The ``python`` data source's example factory: ``data: {name: python, factory: "examples.data.shapes:make"}``
(run from the repository root, so ``examples`` is importable). Returns torch Datasets of float images ``[3, 32, 32]``
in [-1, 1] (circles, squares, stripes; made here, nothing read) and the task."""
import numpy as np
import torch
from torch.utils.data import TensorDataset

from examples.data.make_data import shapes


def make():
    rng = np.random.RandomState(0)
    (xtr, ytr), (xte, yte) = shapes(900, rng), shapes(300, rng)

    def tensors(x, y):
        return TensorDataset(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1, torch.from_numpy(y))
    return {"train": tensors(xtr, ytr), "test": tensors(xte, yte), "task": "classification"}
