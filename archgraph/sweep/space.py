"""The search space of a sweep: ``--param KEY=DIST:ARGS`` specs, checked against the run file before any trial.

>>> parse_param("method.param_cost=loguniform:0.0005:0.05")
Param(key='method.param_cost', kind='loguniform', low=0.0005, high=0.05, choices=())
>>> parse_param("method.grow_init=choice:preserve,random").choices
('preserve', 'random')
>>> parse_param("method.patience=int:2:6").high
6

This module imports neither torch nor optuna (only :meth:`Param.suggest` takes an Optuna trial).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import yaml

from ..errors import ConfigError
from ..train.config import RunConfig, with_overrides

KINDS = ("loguniform", "uniform", "int", "choice")
#: keys a sweep sets itself (``--seeds``), so neither ``--param`` nor ``--set`` may
RESERVED = ("schedule.seed",)


@dataclass(frozen=True)
class Param:
    """One searched run-file field: ``loguniform``/``uniform`` floats and ``int`` integers in [low, high], or one of
    ``choices``."""
    key: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    choices: tuple = ()

    @property
    def spec(self) -> str:
        """The spec text, normalised (``loguniform:0.0005:0.05``)."""
        if self.kind == "choice":
            return "choice:" + ",".join(_scalar_text(c) for c in self.choices)
        return f"{self.kind}:{_scalar_text(self.low)}:{_scalar_text(self.high)}"

    def _bounds(self) -> tuple[float, float]:
        """``(low, high)`` of a range (every kind but ``choice``)."""
        if self.low is None or self.high is None:
            raise ValueError(f"{self.key}: a {self.kind} parameter without bounds")
        return self.low, self.high

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial samples for this field."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        low, high = self._bounds()
        if self.kind == "loguniform":
            return trial.suggest_float(self.key, low, high, log=True)
        if self.kind == "uniform":
            return trial.suggest_float(self.key, low, high)
        return trial.suggest_int(self.key, int(low), int(high))

    def probes(self) -> list:
        """Values that must all validate in the run file: both ends and one value strictly inside (so a float range
        on an integer field is caught before a trial samples 2.27 for it), or every choice."""
        if self.kind == "choice":
            return list(self.choices)
        low, high = self._bounds()
        if self.kind == "int":
            return [int(low), int(high)]
        inside = math.exp(math.log(low) + 0.318 * (math.log(high) - math.log(low))) \
            if self.kind == "loguniform" else low + 0.318 * (high - low)
        return [low, float(f"{inside:.6g}"), high]


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _bad(text: str, why: str) -> ConfigError:
    return ConfigError(f"--param {text}: {why}")


def _number(word: str, spec: str, integer: bool) -> float:
    try:
        value = int(word) if integer else float(word)
    except ValueError:
        raise _bad(spec, f"{word!r} is not {'an integer' if integer else 'a number'}") from None
    if not math.isfinite(value):
        raise _bad(spec, f"{word!r} is not a finite number")
    return value


def _scalar(word: str, spec: str) -> Any:
    try:
        value = yaml.safe_load(word) if word.strip() else None
    except yaml.YAMLError:
        raise _bad(spec, f"choice {word!r} is not a YAML scalar") from None
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise _bad(spec, f"choice {word!r} is not a scalar (a string, a number, true/false or null)")
    return value


def parse_param(text: str) -> Param:
    """Parse ``KEY=DIST:ARGS``: ``loguniform:LO:HI`` (LO > 0), ``uniform:LO:HI``, ``int:LO:HI`` (inclusive) or
    ``choice:A,B,...`` (values read as YAML scalars, safely). Raises :class:`ConfigError` on a malformed spec."""
    key, sep, spec = text.partition("=")
    key = key.strip()
    if not sep or not key or not spec.strip():
        raise _bad(text, "wants KEY=DIST:ARGS, e.g. method.param_cost=loguniform:0.0005:0.05")
    if any(not part for part in key.split(".")):
        raise _bad(text, f"'{key}' is not a dotted field name")
    if key in RESERVED:
        raise _bad(text, f"'{key}' is set by --seeds")
    kind, _, args = spec.strip().partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise _bad(text, f"unknown distribution '{kind}'; known: {', '.join(KINDS)}")
    if kind == "choice":
        words = args.split(",")
        if not args.strip() or len(words) < 2:
            raise _bad(text, "choice wants two or more values, choice:A,B[,...] (use --set for one fixed value)")
        choices = tuple(_scalar(w, text) for w in words)
        if len({repr(c) for c in choices}) < len(choices):
            raise _bad(text, "a choice is repeated")
        return Param(key, kind, choices=choices)
    words = args.split(":")
    if len(words) != 2:
        raise _bad(text, f"{kind} wants {kind}:LO:HI")
    low, high = (_number(w.strip(), text, kind == "int") for w in words)
    if low >= high:
        raise _bad(text, f"LO ({words[0].strip()}) must be below HI ({words[1].strip()})")
    if kind == "loguniform" and low <= 0:
        raise _bad(text, "loguniform wants LO > 0")
    return Param(key, kind, low=low, high=high)


def parse_params(items: list[str]) -> list[Param]:
    """Parse every ``--param``; a key given twice is an error."""
    params = [parse_param(item) for item in items]
    seen: set[str] = set()
    for p in params:
        if p.key in seen:
            raise ConfigError(f"--param {p.key} is given twice")
        seen.add(p.key)
    return params


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` -> ``[0, 1, 2]`` (distinct non-negative integers)."""
    try:
        seeds = [int(w) for w in text.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds wants comma-separated integers, e.g. 0,1,2; got {text!r}") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise ConfigError(f"--seeds wants distinct non-negative integers; got {text!r}")
    return seeds


def check_space(cfg: RunConfig, params: list[Param], settings: dict, source: str) -> None:
    """Every probe value of every param must give a valid run file (with ``settings`` applied): an unknown key or
    a value the field rejects is an error now, not in the middle of the sweep."""
    for key in settings:
        if key in RESERVED:
            raise ConfigError(f"--set {key}: '{key}' is set by --seeds")
        if any(p.key == key for p in params):
            raise ConfigError(f"'{key}' is given by both --set and --param")
    for p in params:
        for value in p.probes():
            try:
                with_overrides(cfg, {**settings, p.key: value}, source)
            except ConfigError as err:
                hint = " (use int:LO:HI for an integer field)" if p.kind in ("uniform", "loguniform") \
                    and "integer" in err.message else ""
                shown = f" at {_scalar_text(value)}" \
                    if "(got" not in err.message and "unknown field" not in err.message else ""
                raise ConfigError(f"--param {p.key}={p.spec}{shown}: {err.message}{hint}", file=err.file,
                                  field=err.field) from None
