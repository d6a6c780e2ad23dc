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


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    """The device a CUDA path is checked on: the CPU always, CUDA when this machine has it (the CUDA case skips
    cleanly otherwise). Tests taking it are marked ``cuda``, so ``pytest -m cuda`` (scripts/gpu_check.sh) runs both:
    the CPU case checks the test itself, the CUDA case the device."""
    if request.param == "cuda" and not _cuda_available():
        pytest.skip("CUDA is not available here")
    return request.param
