"""The events of ``history.jsonl`` as pydantic models: what is read back from disk is checked with the same
strictness as the inputs, so a tampered history (a rewrite's ``args`` that is a string, a start ``config`` that is a
list, an end event without a summary) is one error naming the line and field, never a traceback later.

The models check types only where a field is present (the tools that read a history say what is missing in their
own words); fields they do not know are kept (strategies log their own).

>>> check_event({"event": "rewrite", "rule": "add_filters", "args": "oops"}, 3, "h.jsonl")
Traceback (most recent call last):
...
archgraph.history.run.HistoryError: h.jsonl: field 'args': line 3: rewrite event: Input should be a valid dictionary
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Count = Optional[int]


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


class StartEvent(_Event):
    event: Literal["start"]
    version: int = Field(0, ge=0, le=0)
    hash: Optional[str] = None
    config: dict[str, Any] = Field(default_factory=dict)
    time: Optional[float] = None


class EpochEvent(_Event):
    event: Literal["epoch"]
    epoch: Optional[int] = Field(None, ge=0)
    step: Optional[int] = Field(None, ge=0)
    version: Optional[int] = Field(None, ge=0)
    metrics: dict[str, Any] = Field(default_factory=dict)


class RewriteEvent(_Event):
    event: Literal["rewrite"]
    rule: Optional[str] = None
    args: dict[str, Any] = Field(default_factory=dict)
    version: Optional[int] = Field(None, ge=1)
    parent: Optional[int] = Field(None, ge=0)
    hash: Optional[str] = None
    parent_hash: Optional[str] = None
    epoch: Optional[int] = Field(None, ge=0)
    step: Optional[int] = Field(None, ge=0)
    kind: Optional[str] = None
    metrics: dict[str, Any] = Field(default_factory=dict)


class EndEvent(_Event):
    event: Literal["end"]
    summary: dict[str, Any]


EVENT_MODELS: dict[str, type[_Event]] = {"start": StartEvent, "epoch": EpochEvent, "rewrite": RewriteEvent,
                                         "end": EndEvent}


def check_event(event: dict, line: int, file: str) -> None:
    """Raise :class:`~archgraph.history.run.HistoryError` naming the line and field when ``event`` (a JSON object
    with a known ``event``) does not have the types its kind writes."""
    from .run import HistoryError  # run.py reads its events through this module
    try:
        EVENT_MODELS[event["event"]].model_validate(event)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise HistoryError(f"line {line}: {event['event']} event: {first['msg']}", file=file, field=field) \
            from None
