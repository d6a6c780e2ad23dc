"""Weights on disk: safetensors files keyed ``<node_id>.<param>`` (never pickles)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from ..errors import ArchgraphError
from ..format.yaml_io import atomic_write_bytes


def save_weights(state: Mapping[str, torch.Tensor], path: Union[str, os.PathLike],
                 metadata: Optional[dict[str, str]] = None) -> None:
    """Write a state dict as safetensors, atomically."""
    from safetensors.torch import save
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write_bytes(path, _canonical(save(tensors, metadata=metadata)))


def _canonical(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted, so equal tensors and metadata give equal bytes
    (safetensors writes the metadata from a hash map, in an order that changes from one process to the next)."""
    import json
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned, as safetensors does
    return len(text).to_bytes(8, "little") + text + data[8 + size:]


def load_weights(path: Union[str, os.PathLike]) -> dict[str, torch.Tensor]:
    """Read a safetensors file into a dict of CPU tensors."""
    from safetensors.torch import load
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArchgraphError("no such weights file", file=str(path)) from None
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
    check_weights(module, state, source)
    module.load_state_dict(dict(state), strict=True)
