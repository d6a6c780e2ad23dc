"""Lint and types in the suite: ruff (pyflakes, pycodestyle, import order) and mypy, configured in pyproject.toml,
find nothing. Their baselines (files and modules that had findings when the checks came in) are listed there and
only shrink: a new finding anywhere else fails here."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> list[str]:
    exe = Path(sys.executable).with_name(name)
    if exe.exists():
        return [str(exe)]
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return [found]


def test_ruff_finds_nothing():
    out = subprocess.run([*_tool("ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
def test_mypy_finds_nothing(tmp_path):
    cache = ROOT / ".mypy_cache"
    out = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache)], cwd=ROOT, capture_output=True,
                         text=True)
    if "No module named mypy" in out.stderr:
        pytest.skip("mypy is not installed (pip install -e '.[dev]')")
    assert out.returncode == 0, out.stdout + out.stderr
