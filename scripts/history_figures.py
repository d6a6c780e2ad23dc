"""Make the figures of docs/history.md from one run directory: the history timeline, the training curves, a diff
and a screenshot of the HTML report taken in headless Chromium.

    python scripts/history_figures.py RUN_DIR --out docs/img [--version K]

Without RUN_DIR, ``--fixture DIR`` first writes a made-up run with tests/rundir_fixture.py (real rules on the tiny
CNN seed, synthetic metrics), for when no real run is at hand.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fixture_run(path: Path) -> Path:
    """A made-up run: real rules applied to the tiny CNN seed (so it replays), synthetic metrics."""
    sys.path.insert(0, str(ROOT / "tests"))
    from rundir_fixture import steps_from_rules, write_run

    import archgraph
    from archgraph import rules
    seed = archgraph.load(ROOT / "examples" / "seeds" / "tiny_cnn.yaml")
    steps = steps_from_rules(seed, [
        rules.AddFilters(node="c1", count=4),
        rules.AddFilters(node="c2", count=8, init="net2net"),
        rules.InsertLayer(after="r3", norm="batchnorm", activation="relu"),
        rules.PruneChannels(node="c2", indices=(0, 3, 5, 7, 9, 11)),
        rules.SplitFilters(node="c3", indices=(0, 1)),
        rules.InsertBlock(after="r2"),
        rules.DeleteNode(node="r2_relu"),
    ])
    return write_run(path, seed, steps, config={"seed": 0, "strategy": "fixture (synthetic metrics)"})


def screenshot(page: Path, out: Path, fragment: str = "", width: int = 1400, height: int = 1300) -> Path:
    """PNG of ``page`` in headless Chromium (the browser test's flags)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix="archgraph-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                              options=opts)
    try:
        driver.get(page.resolve().as_uri() + fragment)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", type=Path)
    p.add_argument("--fixture", type=Path, metavar="DIR", help="write a made-up run here first and use it")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    p.add_argument("--version", type=int, help="version the report screenshot shows (default: the last)")
    args = p.parse_args()
    from archgraph.history.diff import render_diff
    from archgraph.history.plots import plot_history
    from archgraph.history.report import write_report
    from archgraph.history.run import Run
    from archgraph.history.timeline import render_history
    run_dir = fixture_run(args.fixture) if args.fixture else args.run_dir
    if run_dir is None:
        p.error("give a RUN_DIR or --fixture DIR")
    run = Run(run_dir)
    k = run.latest if args.version is None else args.version
    print(render_history(run_dir, args.out / "history.svg"))
    print(plot_history(run_dir, args.out / "curves.png"))
    if k > 0:
        print(render_diff(run.graph(k - 1), run.graph(k), args.out / "diff.svg",
                          title=f"version {k - 1} -> {k}"))
    page = write_report(run_dir)
    print(page)
    print(screenshot(page, args.out / "report.png", f"#v={k}"))


if __name__ == "__main__":
    main()
