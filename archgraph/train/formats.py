"""Which format each graph version runs in, and what each new version cost.

:class:`VersionSpeed` remembers the format (``schedule.format``, or with ``auto`` the one measured fastest) of every
version by content hash, and keeps one record per installed version: its format, ``rewrite_s`` (rule, build, weight
and optimizer transfer, DDP wrapper), ``measure_s`` (the format measurement), ``first_step_s`` and ``step_s`` (the
first step and the median of the next ones, timed synchronised). Both are checkpointed, and
:func:`speed_summary` is the summary's ``speed``.

>>> records = [{"kind": "seed", "rewrite_s": 1.0, "measure_s": 0.0},
...            {"kind": "rewrite", "rewrite_s": 0.5, "measure_s": 0.25, "first_step_s": 2.0, "step_s": 1.0}]
>>> speed_summary(records)["event_s_mean"]
1.75
"""
from __future__ import annotations

import json
import statistics
import time
from typing import Callable, Optional

import torch

TIMED_STEPS = 11   # steps timed (synchronised) after each new version: the first one, then a median of the rest


class VersionSpeed:
    """Formats per version (content hash -> format name) and the per-version cost records."""

    def __init__(self):
        self.formats: dict[str, str] = {}
        self.records: list[dict] = []
        self.measure_s = 0.0           # the last format measurement (0 when the format was known)
        self._timing: Optional[list] = None

    def format_name(self, key: str, setting: str, choose: Callable[[], str]) -> str:
        """The format of the version with content hash ``key``: ``setting`` (``schedule.format``), or with an
        ``auto`` setting what ``choose()`` (timed: ``measure_s``) decides the first time."""
        self.measure_s = 0.0
        if key not in self.formats:
            name = setting
            if setting.startswith("auto"):
                t0 = time.perf_counter()
                name = choose()
                self.measure_s = time.perf_counter() - t0
            self.formats[key] = name
        return self.formats[key]

    def installed(self, version: int, kind: str, fmt: str, t0: float) -> None:
        """A new version runs from now on (``kind``: seed, rewrite or resume; its change began at ``t0``): start its
        record and time its first steps."""
        self.records.append({"version": version, "kind": kind, "format": fmt,
                             "rewrite_s": round(time.perf_counter() - t0 - self.measure_s, 6),
                             "measure_s": round(self.measure_s, 6)})
        self._timing = []

    def timed(self, step: Callable[[], object], device: torch.device):
        """``step()``, timed (synchronised) while the version's first :data:`TIMED_STEPS` steps last: the first one
        carries ``torch.compile``'s compilation and other warm-up."""
        if self._timing is None:
            return step()
        _sync(device)
        t0 = time.perf_counter()
        out = step()
        _sync(device)
        self._timing.append(time.perf_counter() - t0)
        record = self.records[-1]
        record["first_step_s"] = round(self._timing[0], 6)
        if len(self._timing) > 1:
            record["step_s"] = round(statistics.median(self._timing[1:]), 6)
        if len(self._timing) >= TIMED_STEPS:
            self._timing = None
        return out

    def state(self) -> dict:
        """For the checkpoint (JSON strings)."""
        return {"formats": json.dumps(self.formats), "speed": json.dumps(self.records)}

    def load(self, state: dict) -> None:
        self.formats = json.loads(state.get("formats", "{}"))
        self.records = json.loads(state.get("speed", "[]"))

    def summary(self) -> dict:
        return speed_summary(self.records)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def speed_summary(records: list[dict]) -> dict:
    """The per-version timings and the mean cost of a new version: the rewrite (rule, build, weight and optimizer
    transfer, DDP wrapper), the format measurement and the first step's excess over a usual step (compilation)."""
    costs = []
    for r in (r for r in records if r.get("kind") == "rewrite"):
        excess = max(0.0, r.get("first_step_s", 0.0) - r.get("step_s", r.get("first_step_s", 0.0)))
        costs.append(r["rewrite_s"] + r["measure_s"] + excess)
    return {"versions": records,
            "event_s_mean": round(sum(costs) / len(costs), 6) if costs else None}
