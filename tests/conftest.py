import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEEDS = sorted((ROOT / "examples" / "seeds").glob("*.yaml"))

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    yield
