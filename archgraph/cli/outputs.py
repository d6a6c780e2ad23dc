"""One policy for what the commands write.

* An output **file** (``-o picture.svg``, ``--onnx m.onnx``) goes into a folder that must already exist: a typo in
  the folder name is an error, not a new folder somewhere. An existing file is replaced (atomically).
* An output **folder** (``apply``, ``prune``, ``import``, ``grow``) is created when missing; one that already holds
  files is refused unless ``--force`` is given (``grow`` continues a run there with ``--resume`` instead).
* ``graph.yaml`` and ``weights.safetensors`` of an output folder are written as one unit
  (:func:`write_graph_folder`): both are complete before either replaces an old one, so a full disk leaves the old
  pair, never a graph beside weights that do not fit it.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError


def output_file(path: str, option: str = "-o") -> Path:
    """``path`` checked as a file to write: not empty, not a folder, in a folder that exists."""
    if not str(path).strip():
        raise ConfigError(f"{option} needs a file name", field=option)
    out = Path(path)
    if out.is_dir():
        raise ConfigError("is a folder; give a file name", file=str(out), field=option)
    parent = out.parent
    if not parent.is_dir():
        what = "is a file, not a folder" if parent.exists() else "does not exist"
        raise ConfigError(f"its folder '{parent}' {what}; create the folder first", file=str(out), field=option)
    return out


def output_folder(path: str, force: bool = False, option: str = "-o") -> Path:
    """``path`` checked as a folder to write into: new, empty, or (with ``force``) one whose files may be
    replaced."""
    if not str(path).strip():
        raise ConfigError(f"{option} needs a folder name", field=option)
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError("is a file; the output must be a folder", file=str(out), field=option)
    if out.is_dir() and not force and any(out.iterdir()):
        raise ConfigError("the output folder is not empty; pass --force to write into it anyway (files of the "
                          "same name are replaced)", file=str(out), field=option)
    return out


def write_graph_folder(out, graph, state, metadata: dict) -> tuple[Path, Path]:
    """Write ``OUT/graph.yaml`` and ``OUT/weights.safetensors`` (``state``, a state dict, with ``metadata`` and the
    graph's hash) as one unit; returns both paths."""
    from ..format.yaml_io import atomic_replace_all, dumps
    from ..fx.weights import weights_writer
    from ..graph import content_hash
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    gpath, wpath = folder / "graph.yaml", folder / "weights.safetensors"
    text = dumps(graph).encode("utf-8")

    def write_graph(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    meta = {"graph_sha256": content_hash(graph), **{k: str(v) for k, v in metadata.items()}}
    atomic_replace_all([(gpath, write_graph), (wpath, weights_writer(state, meta))])
    return gpath, wpath
