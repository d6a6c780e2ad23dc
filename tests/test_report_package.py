"""The report template in viz/ ships inside the package: a built wheel, a non-editable install and an editable
install all find it. Builds run offline from a copy of the checkout (no build isolation, nothing downloaded)."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
OFFLINE = ["--no-deps", "--no-build-isolation", "--no-index"]
CHECK = ("from pathlib import Path; import archgraph.history.report as r; d = r.template_dir(); "
         "print(Path(r.__file__).resolve().parents[1]); print(d.resolve()); "
         "page = r.render_report({'run': 'x', 'versions': []}); assert 'report-data' in page and '{{' not in page")


def _copy_checkout(dest: Path) -> Path:
    """The files a fresh clone would have (tracked or new, never ignored), so no build output leaks in."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.split("\n")
        names = [n for n in listed if n and (ROOT / n).is_file()]
    except (OSError, subprocess.CalledProcessError):
        names = [str(p.relative_to(ROOT)) for d in ("archgraph", "viz") for p in (ROOT / d).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts]
        names += ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md"]
    for name in names:
        if name.startswith(("archgraph/", "viz/")) or "/" not in name:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def _run_elsewhere(code: str, cwd: Path, pythonpath: str = "") -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    return _copy_checkout(tmp_path_factory.mktemp("src"))


def test_wheel_ships_viz_and_the_installed_package_finds_it(checkout, tmp_path):
    subprocess.run(PIP + ["wheel", *OFFLINE, "-w", str(tmp_path / "dist"), str(checkout)], check=True,
                   capture_output=True)
    wheel = next((tmp_path / "dist").glob("archgraph-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n: zf.read(n) for n in zf.namelist() if n.startswith("archgraph/viz/")}
    viz = {f"archgraph/viz/{p.name}": p.read_bytes() for p in (ROOT / "viz").iterdir() if p.is_file()}
    assert shipped == viz  # every template file, byte for byte
    target = tmp_path / "site"
    subprocess.run(PIP + ["install", *OFFLINE, "--ignore-installed", "--target", str(target), str(wheel)], check=True,
                   capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    package, folder = _run_elsewhere(CHECK, elsewhere, str(target))[:2]
    assert Path(package) == (target / "archgraph").resolve()
    assert Path(folder) == (target / "archgraph" / "viz").resolve()


def test_editable_install_reads_viz_from_the_checkout(checkout, tmp_path):
    """Installed with ``--prefix`` (``--ignore-installed``: the running venv's own archgraph stays installed) and
    checked from a throwaway venv that sees the prefix as a site directory and this venv's packages as plain paths
    (so this venv's own editable archgraph is not on the path)."""
    prefix = tmp_path / "prefix"
    subprocess.run(PIP + ["install", *OFFLINE, "--ignore-installed", "--prefix", str(prefix), "-e", str(checkout)],
                   check=True, capture_output=True)
    assert_still_installed()
    site_dir = next(prefix.glob("lib/python*/site-packages"))
    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    deps = [p for p in sys.path if p.endswith("site-packages")]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (f"import site, sys; site.addsitedir({str(site_dir)!r}); sys.path.extend({deps!r}); " + CHECK)
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=elsewhere, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr
    package, folder = out.stdout.split("\n")[:2]
    assert Path(package) == (checkout / "archgraph").resolve()
    assert Path(folder) == (checkout / "viz").resolve()


def test_running_these_tests_leaves_the_environment_installed():
    """pip's ``--prefix`` install used to uninstall this venv's archgraph first; the suite must not change it."""
    assert_still_installed()


def assert_still_installed():
    out = subprocess.run([sys.executable, "-c", "import archgraph, sys; print(archgraph.__file__)"],
                         cwd=Path("/"), capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, "archgraph is no longer importable outside the checkout: " + out.stderr
