"""Weights on disk: safetensors files keyed ``<node_id>.<param>`` (never pickles)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable, Mapping, Optional, Union

import torch

from ..errors import ArchgraphError
from ..format.yaml_io import atomic_replace, read_limited
from ..graph import Graph, tied_parameters


def save_weights(state: Mapping[str, torch.Tensor], path: Union[str, os.PathLike],
                 metadata: Optional[dict[str, str]] = None) -> None:
    """Write a state dict as safetensors, atomically. The tensors are written straight from their memory to a
    temporary file (:func:`write_safetensors`: no copy of the whole file in memory, so a network that fits in
    memory can be saved), which is renamed over ``path``. Keys naming one tensor (tied weights) store it once; the
    metadata's ``tied_tensors`` lists the others, which :func:`load_weights` names again."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # name the file the caller asked for
        raise OSError(err.errno, f"cannot write it ({err.strerror})", str(path)) from None
    atomic_replace(path, weights_writer(state, metadata))


def weights_writer(state: Mapping[str, torch.Tensor],
                   metadata: Optional[dict[str, str]] = None) -> Callable[[str], None]:
    """``fill(tmp)`` writing ``state`` as canonical safetensors to ``tmp`` (for :func:`atomic_replace_all`, which
    writes a graph and its weights as one unit)."""
    tensors, aliases = _stored_once(state)
    if aliases:
        import json
        metadata = {**(metadata or {}), TIED_KEY: json.dumps(aliases, sort_keys=True)}

    def fill(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            write_safetensors(tensors, fh, metadata)
            fh.flush()
            os.fsync(fh.fileno())
    return fill


#: torch dtype -> safetensors' name
DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
          torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}


def write_safetensors(tensors: Mapping[str, torch.Tensor], fh: BinaryIO,
                      metadata: Optional[dict[str, str]] = None) -> None:
    """Write ``tensors`` to the open binary file ``fh`` in the safetensors format, one tensor at a time straight
    from its memory (``safetensors.torch.save_file`` first turns every tensor into bytes: a second copy of the
    whole model). The header is canonical: keys sorted, no spaces, padded to 8 bytes, so equal tensors and
    metadata give equal bytes; the data follow in key order."""
    import json
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    order = sorted(tensors)
    for key in order:
        t = tensors[key]
        if t.dtype not in DTYPES:
            raise ArchgraphError(f"tensor '{key}' has dtype {t.dtype}, which safetensors cannot store")
        size = t.numel() * t.element_size()
        header[key] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    fh.write(len(text).to_bytes(8, "little"))
    fh.write(text)
    for key in order:
        t = tensors[key].detach().to("cpu").contiguous()
        if t.numel():
            # an ndarray is a buffer; numpy's stubs say so only from Python 3.12 (``__buffer__``)
            fh.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))  # type: ignore[arg-type]


#: the metadata entry listing the keys a weights file stores once (``{key: the key it is}``: tied weights)
TIED_KEY = "tied_tensors"


def _stored_once(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors to write, each tensor once (a tied weight's keys name one tensor: safetensors refuses to write
    shared memory twice), and ``{left-out key: the key written}``."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for key, value in state.items():
        value = value.detach()
        ident = (value.device, value.data_ptr(), value.dtype, tuple(value.shape), value.stride()) \
            if value.numel() else None
        if ident is not None and ident in seen:
            aliases[key] = seen[ident]
            continue
        if ident is not None:
            seen[ident] = key
        tensors[key] = value.to("cpu").contiguous()
    return tensors, aliases


def carried_metadata(path: Union[str, os.PathLike, None]) -> dict[str, str]:
    """The metadata of a weights file that every edit carries to the weights it writes: the ``hf_*`` entries an
    import from Hugging Face records (the model's config and source folder, for ``archgraph export --hf``)."""
    if not path:
        return {}
    from safetensors import safe_open
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
    except Exception:   # an unreadable file is reported by the loader itself
        return {}
    return {k: v for k, v in meta.items() if k.startswith("hf_")}


def read_metadata(path: Union[str, os.PathLike]) -> dict[str, str]:
    """A safetensors file's metadata (its header's ``__metadata__``), read without loading a tensor."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), "pt") as fh:
            return dict(fh.metadata() or {})
    except FileNotFoundError:
        raise ArchgraphError("no such weights file", file=str(path)) from None
    except Exception as err:
        raise ArchgraphError(f"not a valid safetensors file ({err})", file=str(path)) from None


NON_REGULAR_LIMIT = 1 << 30
#: the floating dtypes a module can be converted to and run in (float8 kinds are storage formats only)
LOADABLE_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def load_weights(path: Union[str, os.PathLike]) -> dict[str, torch.Tensor]:
    """Read a safetensors file into a dict of CPU tensors (a regular file memory-mapped, tensor by tensor: no copy
    of the whole file in memory besides the tensors themselves)."""
    import stat

    from safetensors.torch import load

    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ArchgraphError("no such weights file", file=str(path)) from None
    except OSError as err:
        raise ArchgraphError(f"cannot read: {err.strerror}", file=str(path)) from None
    if stat.S_ISREG(info.st_mode) and info.st_size >= 8:
        return _load_mapped(path)
    # a pipe or device is read whole, at most NON_REGULAR_LIMIT bytes (/dev/urandom never ends)
    data = read_limited(path, info.st_size if stat.S_ISREG(info.st_mode) else NON_REGULAR_LIMIT)
    try:
        state = load(data)
    except Exception as err:  # safetensors raises its own error types for bad headers
        raise ArchgraphError(f"not a valid safetensors file ({err})", file=str(path)) from None
    return _with_aliases(state, data)


def _load_mapped(path: Path) -> dict[str, torch.Tensor]:
    """A regular safetensors file read tensor by tensor straight into each tensor's memory (``readinto``): the
    tensors are the only copy (a memory map would add the file's pages to the process's resident memory)."""
    import json
    names = {v: k for k, v in DTYPES.items()}
    try:
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if size > MAX_HEADER_BYTES:
                raise ValueError(f"header of {size} bytes")
            header = json.loads(fh.read(size))
            meta = header.pop("__metadata__", None) or {}
            start = 8 + size
            state: dict[str, torch.Tensor] = {}
            for key, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
                begin, end = info["data_offsets"]
                t = torch.empty(info["shape"], dtype=names[info["dtype"]])
                if t.numel() * t.element_size() != end - begin:
                    raise ValueError(f"tensor '{key}' has {end - begin} bytes for shape {info['shape']}")
                if t.numel():
                    fh.seek(start + begin)
                    buffer = t.reshape(-1).view(torch.uint8).numpy()   # an ndarray is a buffer (see above)
                    if fh.readinto(memoryview(buffer)) != end - begin:  # type: ignore[arg-type]
                        raise ValueError(f"the file ends inside tensor '{key}'")
                state[key] = t
    except (ValueError, KeyError, TypeError) as err:
        raise ArchgraphError(f"not a valid safetensors file ({err})", file=str(path)) from None
    try:
        aliases = json.loads(meta.get(TIED_KEY, "{}"))
    except ValueError:
        aliases = {}
    for key, source in aliases.items():
        if source in state and key not in state:
            state[key] = state[source]
    return state


#: the most bytes a safetensors header may take (safetensors' own limit is 100 MB)
MAX_HEADER_BYTES = 100_000_000


def _with_aliases(state: dict[str, torch.Tensor], data: bytes) -> dict[str, torch.Tensor]:
    """``state`` with the keys the file stored once (its ``tied_tensors`` metadata) naming their tensor again."""
    import json
    size = int.from_bytes(data[:8], "little")
    try:
        meta = json.loads(data[8:8 + size]).get("__metadata__") or {}
        aliases = json.loads(meta.get(TIED_KEY, "{}"))
    except ValueError:
        return state
    for key, source in aliases.items():
        if source in state and key not in state:
            state[key] = state[source]
    return state


def parameter_aliases(module: torch.nn.Module) -> dict[str, str]:
    """``{key: the key of the same parameter}`` for a module whose parameters are shared (tied weights)."""
    seen: dict[int, str] = {}
    aliases = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            aliases[name] = seen[id(p)]
        else:
            seen[id(p)] = name
    return aliases


def tie_state(graph: Graph, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with each tied key of ``graph`` naming its source's tensor (so a weights file stores it once);
    an error where the two hold different values."""
    state = dict(state)
    for key, source in tied_parameters(graph).items():
        if key in state and source in state and state[key] is not state[source] \
                and not torch.equal(state[key], state[source]):
            node, _, field = key.partition(".")
            raise ArchgraphError(f"tensor '{key}' is tied to '{source}' but holds different values", node=node,
                                 field=field)
        if source in state:
            state[key] = state[source]
    return state


def check_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "<weights>") -> None:
    """Raise an error naming the node and tensor when ``state`` does not fit ``module`` exactly."""
    own = module.state_dict()
    aliases = parameter_aliases(module)
    for key, tensor in own.items():
        node, _, field = key.partition(".")
        if key not in state and aliases.get(key) in state:   # a tied weight, stored once
            continue
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
    aliases = parameter_aliases(module)
    state = {**state, **{k: state[s] for k, s in aliases.items() if k not in state and s in state}}
    check_weights(module, state, source)
    for key, t in state.items():
        if t.is_floating_point() and t.dtype not in LOADABLE_FLOATS:
            node, _, field = key.partition(".")
            raise ArchgraphError(f"tensor '{key}' is {str(t.dtype).replace('torch.', '')}; weights are read in "
                                 "float16, bfloat16, float32 or float64 (convert them first)", file=source,
                                 node=node, field=field)
    for key, other in aliases.items():
        if state[key] is not state[other] and not torch.equal(state[key], state[other]):
            node, _, field = key.partition(".")
            raise ArchgraphError(f"tensor '{key}' is tied to '{other}' (one tensor in the module) but the weights "
                                 f"give them different values", file=source, node=node, field=field)
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        module.to(next(iter(dtypes)))
    module.load_state_dict(dict(state), strict=True)
