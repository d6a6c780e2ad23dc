"""A run directory read back: graph versions, the event log, metrics, rewrite records, and replay.

A run directory (written by training, see docs/history.md) holds ``versions/NNNN.yaml`` (every graph version,
``0000`` being the seed), ``history.jsonl`` (one JSON event per line: ``start``, ``epoch``, ``rewrite``, ``end``),
``weights/`` and ``summary.json``. :func:`replay` rebuilds any version from the seed and the rule log alone and checks
each step against the stored content hashes, so a run is a proof of how its final network came to be.

>>> run = load_run("runs/gnap")                   # doctest: +SKIP
>>> [v.version for v in run.versions]             # doctest: +SKIP
[0, 1, 2]
>>> replay("runs/gnap", 2) == run.graph(2)        # doctest: +SKIP
True

Reading never imports torch: only the graph, the rules and the JSON log are needed.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Union, cast

from ..errors import ArchgraphError, HistoryError
from ..format.yaml_io import MAX_FILE_BYTES, load, read_limited
from ..graph import Graph, content_hash
from ..rules.base import apply, decode
from .events import check_event
from .rundir import MAX_LOG_BYTES

PathLike = Union[str, os.PathLike]
EVENT_KINDS = ("start", "epoch", "rewrite", "end")


def version_file(run_dir: PathLike, version: int) -> Path:
    """Path of one version's graph: ``DIR/versions/0007.yaml``."""
    return Path(run_dir) / "versions" / f"{version:04d}.yaml"


@dataclass(frozen=True)
class Version:
    """One graph version as the log describes it (the graph itself is read on demand by :meth:`Run.graph`).

    ``rule``/``args``/``kind``/``epoch``/``step``/``metrics`` come from the rewrite event that made it (``None``
    and empty for the seed); ``hash`` is the content hash the log recorded for it.
    """
    version: int
    hash: Optional[str]
    parent: Optional[int] = None
    parent_hash: Optional[str] = None
    rule: Optional[str] = None
    args: Mapping[str, Any] = field(default_factory=dict)
    kind: Optional[str] = None
    epoch: Optional[int] = None
    step: Optional[int] = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    line: Optional[int] = None  # line of history.jsonl with its event
    #: whether the rewrite kept the network's function (None: the seed, or a log from before it was recorded)
    exact: Optional[bool] = None
    #: why it did not (``reason`` of the event)
    reason: Optional[str] = None

    def rule_label(self, width: int = 40) -> str:
        """``add_filters(node=c1, count=4)``: arguments that are ``None`` left out, long values shortened."""
        if not self.rule:
            return "seed"
        bits = []
        for key, value in self.args.items():
            if value is None:
                continue
            text = json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value
            if len(text) > width:
                text = text[:width - 3] + "..."
            bits.append(f"{key}={text}")
        return f"{self.rule}({', '.join(bits)})"


class Run:
    """A run directory opened for reading. Files are read lazily and cached; nothing is written.

    >>> run = Run("runs/gnap")                                   # doctest: +SKIP
    >>> run.latest, run.graph(run.latest).params                 # doctest: +SKIP
    (3, 12345)
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise HistoryError("is not a run directory (no such directory)", file=str(self.path))
        if not (self.path / "history.jsonl").is_file():
            raise HistoryError("is not a run directory: history.jsonl is missing", file=str(self.path))
        self._graphs: dict[int, Any] = {}

    # ---- the event log ------------------------------------------------------------------------------------------
    @cached_property
    def events(self) -> list[dict]:
        """Every event of ``history.jsonl`` in order, each with ``_line`` (its 1-based line number) added."""
        return read_events(self.path / "history.jsonl")

    @cached_property
    def start(self) -> Optional[dict]:
        return next((e for e in self.events if e["event"] == "start"), None)

    @cached_property
    def end(self) -> Optional[dict]:
        return next((e for e in reversed(self.events) if e["event"] == "end"), None)

    @cached_property
    def epochs(self) -> list[dict]:
        """The ``epoch`` events, in order."""
        return [e for e in self.events if e["event"] == "epoch"]

    @cached_property
    def rewrites(self) -> list[dict]:
        """The ``rewrite`` events, in order."""
        return [e for e in self.events if e["event"] == "rewrite"]

    @property
    def config(self) -> dict:
        return dict((self.start or {}).get("config") or {})

    @property
    def name(self) -> str:
        """The run's name: the run file's ``name``, else the seed graph's, else the folder's."""
        seed = self.config.get("seed")
        return str(self.config.get("name") or (seed.get("name") if isinstance(seed, dict) else None)
                   or self.path.name)

    @cached_property
    def summary(self) -> Optional[dict]:
        """``summary.json`` (written when the run ended), or ``None``."""
        path = self.path / "summary.json"
        if not path.is_file():
            return None
        return _read_json(path)

    # ---- versions -----------------------------------------------------------------------------------------------
    @cached_property
    def versions(self) -> list[Version]:
        """The seed and one :class:`Version` per rewrite event, checked to form one unbroken chain 0, 1, 2, ..."""
        start = self.start
        seed_hash = start.get("hash") if start else None
        chain = [Version(0, seed_hash, line=start["_line"] if start else None)]
        for e in self.rewrites:
            where = f"line {e['_line']}"
            for key in ("rule", "version"):
                if key not in e:
                    raise HistoryError(f"{where}: rewrite event without '{key}'",
                                       file=str(self.path / "history.jsonl"), field=key)
            expected = chain[-1].version + 1
            if e["version"] != expected or e.get("parent", expected - 1) != expected - 1:
                raise HistoryError(f"{where}: rewrite makes version {e['version']} from {e.get('parent')}, but "
                                   f"the next version should be {expected} from {expected - 1}",
                                   file=str(self.path / "history.jsonl"), rule=str(e["rule"]))
            chain.append(Version(
                version=e["version"], hash=e.get("hash"), parent=e.get("parent", expected - 1),
                parent_hash=e.get("parent_hash"), rule=str(e["rule"]), args=dict(e.get("args") or {}),
                kind=e.get("kind"), epoch=e.get("epoch"), step=e.get("step"), metrics=dict(e.get("metrics") or {}),
                line=e["_line"], exact=e.get("exact"), reason=e.get("reason")))
        return chain

    @property
    def latest(self) -> int:
        """Number of the last version the log records."""
        return self.versions[-1].version

    def stored_versions(self) -> list[int]:
        """Version numbers that have a file in ``versions/``."""
        folder = self.path / "versions"
        found = []
        for p in folder.glob("*.yaml") if folder.is_dir() else []:
            if p.stem.isdigit():
                found.append(int(p.stem))
        return sorted(found)

    def version(self, k: int) -> Version:
        """The log's record of version ``k``."""
        if not isinstance(k, int) or k < 0 or k > self.latest:
            raise HistoryError(f"version {k} does not exist; this run has versions 0 to {self.latest}",
                               file=str(self.path), field="version")
        return self.versions[k]

    def graph(self, k: int) -> Graph:
        """Graph of version ``k`` as stored in ``versions/NNNN.yaml``."""
        self.version(k)
        if k not in self._graphs:
            path = version_file(self.path, k)
            if not path.is_file():
                raise HistoryError(f"version {k} has no stored graph", file=str(path))
            self._graphs[k] = load(path)
        return self._graphs[k]

    # ---- metrics ------------------------------------------------------------------------------------------------
    def epochs_of(self, k: int) -> list[dict]:
        """The epoch events trained while version ``k`` was the current graph."""
        return [e for e in self.epochs if e.get("version") == k]

    def metrics_at(self, k: int) -> dict:
        """Metrics at the moment version ``k`` was made: the rewrite event's own metrics over the last epoch's."""
        out: dict = {}
        v = self.version(k)
        before = [e for e in self.epochs if v.line is None or e["_line"] < v.line]
        if before:
            out.update(before[-1].get("metrics") or {})
        out.update(v.metrics)
        return out

    def metrics_end(self, k: int) -> dict:
        """Metrics at the last epoch trained with version ``k`` (empty if it was never trained)."""
        trained = self.epochs_of(k)
        return dict(trained[-1].get("metrics") or {}) if trained else {}

    def series(self, name: str, with_rewrites: bool = False) -> tuple[list[float], list[float]]:
        """(x, y) of one metric over the epoch events (and the rewrite events' own metrics, when
        ``with_rewrites``: sizes change at a rewrite, not at the next epoch); x is :attr:`x_axis`."""
        xs, ys = [], []
        for e in self.events:
            if e["event"] != "epoch" and not (with_rewrites and e["event"] == "rewrite"):
                continue
            value, x = (e.get("metrics") or {}).get(name), self.x_of(e)
            if isinstance(value, (int, float)) and math.isfinite(value) and x is not None:
                xs.append(x)
                ys.append(float(value))
        return xs, ys

    @cached_property
    def x_axis(self) -> str:
        """``"step"`` when every epoch and rewrite event carries a step, else ``"epoch"``."""
        timed = self.epochs + self.rewrites
        if timed and all(isinstance(e.get("step"), (int, float)) for e in timed):
            return "step"
        return "epoch"

    def x_of(self, event: Mapping) -> Optional[float]:
        value = event.get(self.x_axis)
        return float(value) if isinstance(value, (int, float)) else None


def load_run(path: PathLike) -> Run:
    """Open a run directory for reading (see :class:`Run`)."""
    return Run(path)


def read_events(path: PathLike) -> list[dict]:
    """Parse ``history.jsonl``: every line a JSON object with a known ``event``. Anything else, including a last
    line cut short (a file truncated, or a crash in the middle of a write), is an error naming the file and the
    line: the tools that read a run (replay, report, plot) claim to show all of it. (Resuming a run cuts a torn
    last line off itself, see :meth:`RunDir.rewind`.)"""
    path = Path(path)
    data = read_limited(path, MAX_LOG_BYTES, HistoryError)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    events = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        cut = number == len(lines) and not data.endswith(b"\n")
        try:
            event = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            if cut:
                raise HistoryError(f"line {number} is cut short (the file ends in the middle of a line: it was "
                                   "truncated, or a write was interrupted)", file=str(path)) from None
            raise HistoryError(f"line {number} is not valid JSON ({err})", file=str(path)) from None
        if not isinstance(event, dict) or event.get("event") not in EVENT_KINDS:
            raise HistoryError(f"line {number} is not an event: expected an object with \"event\" one of "
                               f"{', '.join(EVENT_KINDS)}", file=str(path))
        check_event(event, number, str(path))
        event["_line"] = number
        events.append(event)
    return events


def _read_json(path: Path) -> Any:
    data = read_limited(path, MAX_FILE_BYTES, HistoryError)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as err:
        raise HistoryError(f"is not valid JSON ({err})", file=str(path)) from None


# ---- replay -------------------------------------------------------------------------------------------------------
def replay_steps(run_dir: PathLike, version: Optional[int] = None, *, check_files: bool = True,
                 registry: Optional[Mapping[str, type]] = None) -> Iterator[tuple[Version, Any]]:
    """Yield ``(version record, replayed graph)`` for versions 0..``version`` (default: the last one).

    Each graph is made from the previous one by the logged rule alone (``archgraph.apply``) and checked against the
    hash the log recorded and, when ``check_files``, against the content hash of ``versions/NNNN.yaml``. The first
    mismatch raises :class:`HistoryError` naming the version and the rule.
    """
    run = Run(run_dir)
    target = run.latest if version is None else version
    run.version(target)
    seed_path = version_file(run.path, 0)
    if not seed_path.is_file():
        raise HistoryError("the seed (version 0) is missing; replay starts from it", file=str(seed_path))
    graph = load(seed_path)
    current = content_hash(graph)
    seed = run.versions[0]
    if seed.hash is not None and seed.hash != current:
        raise HistoryError(f"version 0 (the seed) has hash {current[:12]} but the log's start event recorded "
                           f"{seed.hash[:12]}", file=str(seed_path), field="hash")
    yield seed, graph
    for record in run.versions[1:target + 1]:
        if record.parent_hash is not None and record.parent_hash != current:
            raise HistoryError(f"version {record.version}: its parent's recorded hash {record.parent_hash[:12]} "
                               f"is not the hash of version {record.version - 1} ({current[:12]})",
                               file=str(run.path / "history.jsonl"), rule=record.rule, field="parent_hash")
        try:
            graph = apply(graph, decode({"rule": record.rule, "args": record.args}, registry)).graph
        except ArchgraphError as err:
            raise HistoryError(f"version {record.version} does not replay: {err.message}", rule=record.rule,
                               node=err.node, field=err.field, file=str(run.path / "history.jsonl")) from None
        current = content_hash(graph)
        if record.hash is not None and record.hash != current:
            raise HistoryError(
                f"version {record.version} replays to hash {current[:12]} but the log recorded "
                f"{record.hash[:12]} ({record.rule_label()}){_difference(run, record.version, graph)}",
                file=str(run.path / "history.jsonl"), rule=record.rule)
        stored = version_file(run.path, record.version)
        if check_files and not stored.is_file():
            raise HistoryError(f"version {record.version} ({record.rule_label()}) has no stored file; the history "
                               f"(line {record.line}) says the run wrote it", file=str(stored), rule=record.rule)
        if check_files:
            stored_graph = run.graph(record.version)
            if content_hash(stored_graph) != current:
                raise HistoryError(
                    f"version {record.version} replays to hash {current[:12]} but the stored file has "
                    f"{content_hash(stored_graph)[:12]} ({record.rule_label()})"
                    f"{_difference(run, record.version, graph)}", file=str(stored), rule=record.rule)
        yield record, graph


def replay(run_dir: PathLike, version: Optional[int] = None, *, check_files: bool = True,
           registry: Optional[Mapping[str, type]] = None) -> Graph:
    """Rebuild version ``version`` (default: the last) of a run from its seed and rule log alone.

    Every intermediate version is checked against its recorded hash; a mismatch raises :class:`HistoryError`
    naming the version and the rule.

    >>> import archgraph
    >>> g = archgraph.replay("runs/gnap", 3)        # doctest: +SKIP
    >>> g == archgraph.load("runs/gnap/versions/0003.yaml")   # doctest: +SKIP
    True
    """
    graph = None
    for _, graph in replay_steps(run_dir, version, check_files=check_files, registry=registry):
        pass
    return cast(Graph, graph)   # the seed, version 0, is always a step


def _difference(run: Run, k: int, replayed: Graph) -> str:
    """A short note on which nodes differ between the replayed graph and the stored one, when it is readable."""
    try:
        stored = run.graph(k)
    except ArchgraphError:
        return ""
    a, b = replayed.to_dict()["nodes"], stored.to_dict()["nodes"]
    differ = [n for n in dict.fromkeys([*a, *b]) if a.get(n) != b.get(n)]
    if not differ:
        return ""
    shown = ", ".join(differ[:5]) + (", ..." if len(differ) > 5 else "")
    return f"; nodes that differ from the stored graph: {shown}"
