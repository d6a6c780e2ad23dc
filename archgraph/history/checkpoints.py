"""``checkpoints/last.pt`` as read back from disk, checked before anything uses it: the same strictness as the
inputs. A checkpoint that is a bare tensor, lacks ``config`` or ``loop``, counts ``history_lines: -5`` or carries a
random-generator state of the wrong size is one error naming the file and the field, not a traceback (or, worse, a
resume that silently drops history events).

>>> check_checkpoint({"format": 1}, "last.pt")      # doctest: +ELLIPSIS
Traceback (most recent call last):
...
archgraph.errors.ArchgraphError: last.pt: field 'config': the checkpoint is not one grow writes: Field required
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ..errors import ArchgraphError


def _tensor(value: Any) -> Any:
    import torch
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"expected a tensor, got {type(value).__name__}")
    return value


def _rng_bytes(value: Any) -> Any:
    import torch
    _tensor(value)
    size = torch.get_rng_state().numel()
    if value.dtype != torch.uint8 or value.dim() != 1 or value.numel() != size:
        raise ValueError(f"expected a generator state of {size} bytes, got {value.dtype} {list(value.shape)}")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _inside(value: str) -> str:
    from pathlib import PurePosixPath
    parts = PurePosixPath(value).parts
    if not value or PurePosixPath(value).is_absolute() or ".." in parts or "\\" in value:
        raise ValueError("expected a folder inside the run folder")
    return value


Tensor = Annotated[Any, AfterValidator(_tensor)]
RngBytes = Annotated[Any, AfterValidator(_rng_bytes)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, arbitrary_types_allowed=True)


class NumpyRng(_Strict):
    keys: Tensor
    pos: int = Field(ge=0, le=624)
    has_gauss: int = Field(ge=0, le=1)
    gauss: float


class Rng(_Strict):
    torch: RngBytes
    data: RngBytes
    numpy: NumpyRng
    python: list[int] = Field(min_length=625, max_length=625)
    python_version: int
    cuda: list[Tensor]


class Loop(_Strict):
    phase: Literal["train", "final"]
    epoch: int = Field(ge=0)
    step: int = Field(ge=0)
    history_lines: int = Field(ge=1, description="the start event is written before the first checkpoint")
    growth_events: int = Field(ge=0)
    prune_events: int = Field(ge=0)
    finalized: bool
    pending: list[dict[str, Any]]
    epoch_state: Optional[dict[str, Any]]
    last_metrics: str
    wall_s: Annotated[float, AfterValidator(_finite)] = Field(ge=0)


class Checkpoint(_Strict):
    format: int
    config: str
    graph: str
    version: int = Field(ge=0)
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    strategy: dict[str, Any]
    rng: Rng
    loop: Loop
    amp: dict[str, Any]
    shards: Optional[Annotated[str, AfterValidator(_inside)]] = None   # parallel: fsdp, a folder in the run folder


def check_checkpoint(ckpt: Any, file: str) -> dict:
    """``ckpt`` (what ``torch.load`` returned) checked to be a checkpoint grow writes; returned unchanged."""
    if not isinstance(ckpt, dict):
        raise ArchgraphError(f"the checkpoint is not one grow writes: a {type(ckpt).__name__}, not a mapping",
                             file=file)
    try:
        Checkpoint.model_validate(ckpt)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise ArchgraphError(f"the checkpoint is not one grow writes: {first['msg']}", file=file, field=field) \
            from None
    return ckpt
