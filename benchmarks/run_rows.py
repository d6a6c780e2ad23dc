"""The markdown table of single runs shared by gnap_table.py and masks_table.py: one row per run's summary.

>>> s = {"test_acc": 0.9, "nonzero_params": 1200, "params": 2000, "macs": 50000, "wall_s": 3.21,
...      "growth_events": 1, "prune_events": 2, "epochs": 5}
>>> print(row("GNAP digits", 0, s, growth=False))
| GNAP digits | 0 | 90.00% | 1,200 | 2,000 | 50,000 | 50,000 | 3.2 | 2 | 5 |
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path


def header(growth: bool) -> str:
    """The header: with ``growth``, growth and prune event columns, else one prune events column."""
    events = ["growth", "prune"] if growth else ["prune events"]
    titles = ["run", "seed", "test acc", "non-zero params", "params", "MACs", "non-zero MACs", "wall s", *events,
              "epochs"]
    return _line(titles) + "\n" + _line(["---"] + ["---:"] * (len(titles) - 1))


def row(name: str, seed: int, s: dict, growth: bool) -> str:
    """One run's summary ``s`` as a row of :func:`header`."""
    events = [s["growth_events"], s["prune_events"]] if growth else [s["prune_events"]]
    return _line([name, seed, f"{100 * s['test_acc']:.2f}%", f"{s['nonzero_params']:,}", f"{s['params']:,}",
                  f"{s['macs']:,}", f"{s.get('nonzero_macs', s['macs']):,}", f"{s['wall_s']:.1f}", *events,
                  s["epochs"]])


def clear(path: Path) -> None:
    """Remove a previous run's folder."""
    if path.exists():
        shutil.rmtree(path)


def _line(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def write_tables(out, text: str, rows: list) -> None:
    """``out``.md (the tables) and ``out``.json (the rows) of a coverage run (import_zoo, timm_zoo); printed too."""
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(text)
        out.with_suffix(".json").write_text(json.dumps(rows, indent=1, default=str))
    print(text)
