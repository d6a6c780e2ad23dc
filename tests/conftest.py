import os
from pathlib import Path

import pytest
from hypothesis import settings

# The property tests draw the same examples on every run (hypothesis's advice for CI: a red build names a change,
# not a lucky draw) and keep no example database in the checkout. HYPOTHESIS_PROFILE=explore draws fresh examples
# each run, to hunt for new failures.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

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


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A folder of generated MNIST files (train_helpers.write_mnist), one per test module."""
    from train_helpers import write_mnist
    return write_mnist(tmp_path_factory.mktemp("data"))
