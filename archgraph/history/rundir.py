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

>>> run = RunDir("runs/example")                    # doctest: +SKIP
>>> run.append({"event": "epoch", "epoch": 1})      # doctest: +SKIP
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import ArchgraphError
from ..format.yaml_io import atomic_write_bytes, atomic_write_text, save

CHECKPOINT = "checkpoints/last.pt"


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
        return not self.path.exists() or not any(p.is_file() for p in self.path.rglob("*"))

    # ---- writing ----------------------------------------------------------------------------------------------
    def create(self) -> None:
        for sub in ("versions", "weights", "checkpoints"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)

    def write_version(self, version: int, graph) -> Path:
        path = self.version_path(version)
        save(graph, path)
        return path

    def append(self, event: dict) -> None:
        """Append one event as a whole line (one write, then fsync)."""
        line = (json.dumps(event, separators=(",", ":"), allow_nan=False, default=_plain) + "\n").encode()
        fd = os.open(self.history_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.summary_path, json.dumps(summary, indent=2, allow_nan=False, default=_plain) + "\n")

    def write_final_weights(self, state: dict, metadata: Optional[dict[str, str]] = None) -> None:
        from ..fx.weights import save_weights  # torch: only a finished training run writes weights
        save_weights(state, self.final_weights_path, metadata)

    def save_checkpoint(self, state: dict) -> None:
        import torch
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.checkpoint_path, buffer.getvalue())

    # ---- reading ----------------------------------------------------------------------------------------------
    def load_checkpoint(self) -> Optional[dict]:
        """The last checkpoint (``None`` when there is none); nothing is unpickled beyond tensors and plain data."""
        import torch
        if not self.checkpoint_path.exists():
            return None
        try:
            return torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as err:  # a checkpoint is replaced atomically, so this is a foreign or damaged file
            raise ArchgraphError(f"cannot read the checkpoint ({err})", file=str(self.checkpoint_path)) from None

    def events(self) -> list[dict]:
        """All history events, in order."""
        if not self.history_path.exists():
            return []
        events = []
        for n, line in enumerate(self.history_path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ArchgraphError(f"line {n} is not JSON ({err.msg})", file=str(self.history_path)) from None
        return events

    # ---- resuming ---------------------------------------------------------------------------------------------
    def rewind(self, history_lines: int, version: int) -> None:
        """Go back to a checkpoint: keep the first ``history_lines`` events, drop versions after ``version`` and
        leftovers of interrupted atomic writes."""
        if self.path.is_file():
            raise ArchgraphError("is a file, not a run directory", file=str(self.path))
        lines = self.history_path.read_bytes().split(b"\n") if self.history_path.exists() else []
        lines = [line for line in lines if line.strip()]
        if len(lines) < history_lines:
            raise ArchgraphError(f"the history has {len(lines)} events but the checkpoint expects at least "
                                 f"{history_lines}", file=str(self.history_path))
        if len(lines) != history_lines:
            atomic_write_bytes(self.history_path, b"".join(line + b"\n" for line in lines[:history_lines]))
        self.create()
        for path in sorted((self.path / "versions").glob("*.yaml")):
            if path.stem.isdigit() and int(path.stem) > version:
                path.unlink()
        for sub in ("", "versions", "weights", "checkpoints"):
            for tmp in (self.path / sub).glob(".*.tmp"):
                tmp.unlink()
        for done in (self.summary_path, self.final_weights_path):
            if done.exists():
                done.unlink()


class ReadOnlyRunDir(RunDir):
    """The run directory as processes other than rank 0 of a distributed run see it: they read it (to resume) and
    never write it."""

    def create(self) -> None:
        pass

    def write_version(self, version: int, graph) -> Path:
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


def _plain(value: Any):
    """JSON fallback for numpy/torch scalars."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
