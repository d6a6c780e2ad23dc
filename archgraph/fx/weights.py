"""Weights on disk: safetensors files keyed ``<node_id>.<param>`` (never pickles)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from ..format.yaml_io import atomic_replace, read_limited
from ..errors import ArchgraphError


def save_weights(state: Mapping[str, torch.Tensor], path: Union[str, os.PathLike],
                 metadata: Optional[dict[str, str]] = None) -> None:
    """Write a state dict as safetensors, atomically. The tensors are written straight from their memory to a
    temporary file (no copy of the whole file in memory, so a network that fits in memory can be saved), whose
    header is then made canonical in place and which is renamed over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # name the file the caller asked for
        raise OSError(err.errno, f"cannot write it ({err.strerror})", str(path)) from None
    atomic_replace(path, weights_writer(state, metadata))


def weights_writer(state: Mapping[str, torch.Tensor], metadata: Optional[dict[str, str]] = None):
    """``fill(tmp)`` writing ``state`` as canonical safetensors to ``tmp`` (for :func:`atomic_replace_all`, which
    writes a graph and its weights as one unit)."""
    from safetensors.torch import save_file
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}

    def fill(tmp: str) -> None:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "r+b") as fh:
            size = int.from_bytes(fh.read(8), "little")
            head = fh.read(size)
            canonical = _canonical(size.to_bytes(8, "little") + head)
            if len(canonical) == 8 + size:  # always, as sorting keys keeps the length; else keep safetensors' own
                fh.seek(0)
                fh.write(canonical)
            fh.flush()
            os.fsync(fh.fileno())
    return fill


def _canonical(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted, so equal tensors and metadata give equal bytes
    (safetensors writes the metadata from a hash map, in an order that changes from one process to the next)."""
    import json
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned, as safetensors does
    return len(text).to_bytes(8, "little") + text + data[8 + size:]


NON_REGULAR_LIMIT = 1 << 30


def load_weights(path: Union[str, os.PathLike]) -> dict[str, torch.Tensor]:
    """Read a safetensors file into a dict of CPU tensors."""
    from safetensors.torch import load
    import stat

    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ArchgraphError("no such weights file", file=str(path)) from None
    except OSError as err:
        raise ArchgraphError(f"cannot read: {err.strerror}", file=str(path)) from None
    # a regular file is read whole; a pipe or device at most NON_REGULAR_LIMIT bytes (/dev/urandom never ends)
    data = read_limited(path, info.st_size if stat.S_ISREG(info.st_mode) else NON_REGULAR_LIMIT)
    try:
        return load(data)
    except Exception as err:  # safetensors raises its own error types for bad headers
        raise ArchgraphError(f"not a valid safetensors file ({err})", file=str(path)) from None


def check_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "<weights>") -> None:
    """Raise an error naming the node and tensor when ``state`` does not fit ``module`` exactly."""
    own = module.state_dict()
    for key, tensor in own.items():
        node, _, field = key.partition(".")
        if key not in state:
            raise ArchgraphError(f"missing tensor '{key}'", file=source, node=node, field=field)
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ArchgraphError(f"tensor '{key}' has shape {list(state[key].shape)} but the graph needs "
                                 f"{list(tensor.shape)}", file=source, node=node, field=field)
    for key in state:
        if key not in own:
            node, _, field = key.partition(".")
            raise ArchgraphError(f"tensor '{key}' does not belong to any node of the graph", file=source,
                                 node=node, field=field)


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "<weights>") -> None:
    """Load ``state`` into ``module`` after checking it fits. Weights stored in one floating dtype (float16,
    bfloat16, float64) keep it: the module is converted to that dtype first, instead of the weights being silently
    converted to float32."""
    check_weights(module, state, source)
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        module.to(next(iter(dtypes)))
    module.load_state_dict(dict(state), strict=True)
