"""The run directory a training run writes (the format the history tools read).

::

    DIR/versions/0000.yaml ...   every graph version (0000 = the seed)
    DIR/history.jsonl            start / epoch / rewrite / end events, one JSON object per line, append-only
    DIR/weights/final.safetensors
    DIR/checkpoints/last.pt      resume state (tensors and plain data; loaded with torch.load(weights_only=True))
    DIR/summary.json

Every file is replaced atomically (write to a temporary file, fsync, rename) and history lines are appended whole
with one ``write`` and an ``fsync``, so a process killed at any moment leaves each file either as it was or complete.
On resume, the history is cut back to the lines the last checkpoint knew about and versions written after it are
removed; the run then redoes the same work deterministically.

Safety: ``--resume`` continues only a folder that is a run (its history starts with a start event, or it holds no
more than what a run writes before that event), so a mistyped ``--out`` is an error and nothing a run did not
write is deleted. No file is written or deleted through a symbolic link inside the folder (links there are
refused), and one process at a time writes a run folder: :meth:`RunDir.locked` holds ``DIR/.lock`` (the holder's
pid and host; a lock whose process is gone is stale and taken over).

>>> run = RunDir("runs/example")                    # doctest: +SKIP
>>> run.append({"event": "epoch", "epoch": 1})      # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any, Iterator, NoReturn, Optional, Union

from ..errors import ArchgraphError, ConfigError
from ..format.yaml_io import atomic_write_bytes, atomic_write_text, load, read_limited, save
from ..graph import Graph, content_hash
from .checkpoints import check_checkpoint
from .events import EVENT_MODELS, check_event

CHECKPOINT = "checkpoints/last.pt"
LOCK = ".lock"
#: the largest history a run folder may hold (every reader of ``history.jsonl`` reads through this bound)
MAX_LOG_BYTES = 256 * 1024 * 1024
#: the sub-folders a run creates before its start event
SKELETON = ("versions", "weights", "checkpoints")
#: a lock file that cannot be parsed is taken for one being written until it is this old (seconds)
UNREADABLE_LOCK_S = 10.0


class RunDir:
    """Reads and writes one run directory."""

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = Path(path)

    # ---- layout -----------------------------------------------------------------------------------------------
    @property
    def history_path(self) -> Path:
        return self.path / "history.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def final_weights_path(self) -> Path:
        return self.path / "weights" / "final.safetensors"

    def version_path(self, version: int) -> Path:
        return self.path / "versions" / f"{version:04d}.yaml"

    def has_run(self) -> bool:
        """Whether a run has started here (its history exists)."""
        return self.history_path.exists()

    def is_empty(self) -> bool:
        """Whether the directory holds no file (empty folders do not count)."""
        return not self.path.exists() or not any(p.is_file() and p != self.path / LOCK for p in self.path.rglob("*"))

    # ---- safety: what may be resumed, links, one writer ----------------------------------------------------------
    def started(self) -> bool:
        """Whether the history's first line is a run's start event (only that line is read)."""
        try:
            with open(self.history_path, "rb") as fh:
                first = fh.readline(1 << 20)
        except OSError:
            return False
        try:
            event = json.loads(first)
        except ValueError:
            return False
        return isinstance(event, dict) and event.get("event") == "start"

    def check_resumable(self) -> None:
        """Refuse ``--resume`` on a folder that is not a run: one that does not exist, or holds anything but a run
        (a start event in ``history.jsonl``) or what a run writes before its start event (its empty sub-folders,
        ``versions/0000.yaml``, an empty history)."""
        def refuse(why: str) -> NoReturn:
            raise ConfigError(f"is not a run folder ({why}); --resume continues a run that grow started there: "
                              "check --out, or leave out --resume to start a new run in a new or empty folder",
                              file=str(self.path))
        if not self.path.is_dir():
            refuse("it does not exist" if not self.path.exists() else "it is not a folder")
        if self.started():
            return
        before_start = {self.path / LOCK, self.version_path(0), self.history_path}
        for p in self.path.rglob("*"):
            if p.is_dir() and not p.is_symlink() and p.relative_to(self.path).parts[0] in SKELETON \
                    and len(p.relative_to(self.path).parts) == 1:
                continue
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                continue
            if p in before_start and not p.is_symlink() and (p != self.history_path or p.stat().st_size == 0):
                continue
            refuse(f"no start event in {self.history_path.name}, and it holds {p.relative_to(self.path)}")
        if not (self.path / "versions").is_dir():
            refuse(f"no start event in {self.history_path.name}")

    def check_no_links(self) -> None:
        """Refuse a run folder with a symbolic link anywhere inside it: the run would write or delete through it,
        outside the folder. (The folder itself may be a link.)"""
        if not self.path.exists():
            return
        for root, dirs, files in os.walk(self.path):
            for name in dirs + files:
                p = Path(root) / name
                if p.is_symlink():
                    raise ConfigError("is a symbolic link inside the run folder; a run never writes or deletes "
                                      "through links (it could reach outside the folder): remove it",
                                      file=str(p))

    def _own(self, path: Path) -> Path:
        """``path`` (inside the run folder) checked to be reached through no symbolic link below the folder."""
        part = self.path
        for name in path.relative_to(self.path).parts:
            part = part / name
            if part.is_symlink():
                raise ArchgraphError("is a symbolic link inside the run folder; a run never writes or deletes "
                                     "through links: remove it", file=str(part))
        return path

    @contextlib.contextmanager
    def locked(self) -> Iterator[RunDir]:
        """Hold ``DIR/.lock`` while the block runs: a second process that asks for it is refused with the holder's
        pid; a lock left by a process that is gone (same host, pid not running) is taken over.

        >>> with RunDir(tmp).locked():      # doctest: +SKIP
        ...     pass
        """
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / LOCK
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(3):
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except FileExistsError:
                holder = _lock_holder(lock)
                if holder is None:        # stale: take it over (O_EXCL again, so one taker wins)
                    with contextlib.suppress(FileNotFoundError):
                        lock.unlink()
                    continue
                raise ConfigError(f"another archgraph process ({holder}) is writing this run folder; wait for it to "
                                  f"finish, or, if no such process runs, delete {lock}", file=str(self.path)) \
                    from None
            try:
                os.write(fd, me.encode())
            finally:
                os.close(fd)
            break
        else:
            raise ConfigError(f"cannot take the lock {lock}", file=str(self.path))
        try:
            yield self
        finally:
            try:
                if lock.read_text() == me:
                    lock.unlink()
            except OSError:
                pass

    # ---- writing ----------------------------------------------------------------------------------------------
    def create(self) -> None:
        for sub in SKELETON:
            self._own(self.path / sub).mkdir(parents=True, exist_ok=True)

    def write_version(self, version: int, graph: Graph) -> Path:
        path = self._own(self.version_path(version))
        save(graph, path)
        return path

    def append(self, event: dict) -> None:
        """Append one event as a whole line (one write, then fsync)."""
        line = (json.dumps(event, separators=(",", ":"), allow_nan=False, default=_plain) + "\n").encode()
        fd = os.open(self._own(self.history_path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_summary(self, summary: dict) -> None:
        text = json.dumps(summary, indent=2, allow_nan=False, default=_plain) + "\n"
        atomic_write_text(self._own(self.summary_path), text)

    def write_final_weights(self, state: dict, metadata: Optional[dict[str, str]] = None) -> None:
        from ..fx.weights import save_weights  # torch: only a finished training run writes weights
        save_weights(state, self._own(self.final_weights_path), metadata)

    def save_checkpoint(self, state: dict) -> None:
        import torch
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self._own(self.checkpoint_path), buffer.getvalue())

    # ---- reading ----------------------------------------------------------------------------------------------
    def load_checkpoint(self) -> Optional[dict]:
        """The last checkpoint (``None`` when there is none); nothing is unpickled beyond tensors and plain data."""
        import torch
        if not self.checkpoint_path.exists():
            return None
        self._own(self.checkpoint_path)
        try:
            ckpt = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as err:  # a checkpoint is replaced atomically, so this is a foreign or damaged file
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise ArchgraphError(f"cannot read the checkpoint ({first})", file=str(self.checkpoint_path)) from None
        return check_checkpoint(ckpt, str(self.checkpoint_path))

    def events(self) -> list[dict]:
        """All history events, in order."""
        if not self.history_path.exists():
            return []
        events = []
        for n, line in enumerate(read_limited(self.history_path, MAX_LOG_BYTES).split(b"\n"), 1):
            if line.strip():
                try:
                    event = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise ArchgraphError(f"line {n} is not JSON ({err})", file=str(self.history_path)) from None
                if not isinstance(event, dict) or event.get("event") not in EVENT_MODELS:
                    raise ArchgraphError(f"line {n} is not an event (an object with \"event\" one of "
                                         f"{', '.join(EVENT_MODELS)})", file=str(self.history_path))
                check_event(event, n, str(self.history_path))
                events.append(event)
        return events

    # ---- resuming ---------------------------------------------------------------------------------------------
    def rewind(self, history_lines: int, version: int) -> None:
        """Go back to a checkpoint: keep the first ``history_lines`` events, drop versions after ``version`` and
        leftovers of interrupted atomic writes."""
        if self.path.is_file():
            raise ArchgraphError("is a file, not a run directory", file=str(self.path))
        self.check_no_links()
        data = read_limited(self.history_path, MAX_LOG_BYTES) if self.history_path.exists() else b""
        lines = data.split(b"\n")
        lines = [line for line in lines if line.strip()]
        if len(lines) < history_lines:
            raise ArchgraphError(f"the history has {len(lines)} events but the checkpoint expects at least "
                                 f"{history_lines}", file=str(self.history_path))
        self._check_versions(lines[:history_lines], version)
        if len(lines) != history_lines:
            atomic_write_bytes(self._own(self.history_path), b"".join(line + b"\n" for line in lines[:history_lines]))
        self.create()
        for path in sorted((self.path / "versions").glob("*.yaml")):
            if path.stem.isdigit() and int(path.stem) > version:
                self._own(path).unlink()
        for sub in ("", *SKELETON):
            for tmp in (self.path / sub).glob(".*.tmp"):
                self._own(tmp).unlink()
        for done in (self.summary_path, self.final_weights_path):
            if done.exists():
                self._own(done).unlink()


    def _check_versions(self, lines: list[bytes], version: int) -> None:
        """Before resuming at ``version``: every version file up to it is the graph the history recorded (its
        content hash), so swapped or edited version files are refused now, not when a replay fails later."""
        recorded: dict[int, str] = {}
        for n, raw in enumerate(lines, 1):
            try:
                event = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as err:
                raise ArchgraphError(f"line {n} is not JSON ({err})", file=str(self.history_path)) from None
            if not isinstance(event, dict) or event.get("event") not in ("start", "epoch", "rewrite", "end"):
                raise ArchgraphError(f"line {n} is not an event", file=str(self.history_path))
            check_event(event, n, str(self.history_path))
            if event["event"] in ("start", "rewrite") and isinstance(event.get("hash"), str):
                recorded[int(event.get("version", 0))] = event["hash"]
        for k in range(version + 1):
            path = self._own(self.version_path(k))
            if k not in recorded:
                raise ArchgraphError(f"the checkpoint is at version {version} but the history records no version "
                                     f"{k}", file=str(self.history_path))
            if not path.is_file():
                raise ArchgraphError(f"version {k} is missing; the run cannot resume", file=str(path))
            if content_hash(load(path)) != recorded[k]:
                raise ArchgraphError(f"version {k} is not the graph the history recorded (its content hash "
                                     "differs: the file was edited or swapped); the run cannot resume",
                                     file=str(path))


class ReadOnlyRunDir(RunDir):
    """The run directory as processes other than rank 0 of a distributed run see it: they read it (to resume) and
    never write it."""

    def create(self) -> None:
        pass

    def write_version(self, version: int, graph: Graph) -> Path:
        return self.version_path(version)

    def append(self, event: dict) -> None:
        pass

    def write_summary(self, summary: dict) -> None:
        pass

    def write_final_weights(self, state: dict, metadata: Optional[dict[str, str]] = None) -> None:
        pass

    def save_checkpoint(self, state: dict) -> None:
        pass

    def rewind(self, history_lines: int, version: int) -> None:
        pass


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _lock_holder(lock: Path) -> Optional[str]:
    """Who holds ``lock`` ("pid N on HOST"), or ``None`` when the lock is stale: its process is gone (same host),
    or it cannot be read and is older than :data:`UNREADABLE_LOCK_S`."""
    try:
        st = os.lstat(lock)
        if stat.S_ISLNK(st.st_mode):
            raise ConfigError("the lock is a symbolic link; remove it", file=str(lock))
        text = lock.read_text(errors="replace")[:200]
    except FileNotFoundError:
        return None
    parts = text.split()
    if len(parts) != 2 or not parts[0].isdigit():
        return None if time.time() - st.st_mtime > UNREADABLE_LOCK_S else "a process starting now"
    pid, host = int(parts[0]), parts[1]
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except (PermissionError, OverflowError):
            pass
        if _is_zombie(pid):       # killed, not yet reaped by its parent: it will never write again
            return None
    return f"pid {pid} on {host}"


def _is_zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits to be reaped (Linux's ``/proc``; elsewhere always False)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rpartition(")")[2].split()[:1] == ["Z"]


def _plain(value: Any) -> Any:
    """JSON fallback for numpy/torch scalars."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
