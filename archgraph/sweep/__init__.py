"""Multi-objective sweeps of ``grow`` runs (``archgraph sweep``): Optuna searches the run-file fields given as
``--param`` specs for the Pareto front of validation accuracy (maximised) against non-zero parameters (minimised).

>>> from archgraph.sweep import sweep                                              # doctest: +SKIP
>>> front = sweep("examples/digits_gnap.yaml", "runs/sweep",
...               ["method.param_cost=loguniform:0.0005:0.05"], trials=20, seeds=[0, 1, 2], jobs=2)
>>> [(m["trial"], m["val_acc"], m["nonzero_params"], m["test_acc"]) for m in front["front"]]  # doctest: +SKIP

Each trial runs the run file once per seed (``schedule.seed``) into ``DIR/trials/NNNN/seed-S``; its objectives
are the medians over seeds, and each seed's numbers are the trial's user attrs ``seed-S``. The study lives in
``DIR/study.db`` (SQLite) unless ``storage`` names an Optuna RDB URL, so a killed sweep continues when the same
command runs again. Needs optuna (``pip install 'archgraph[sweep]'``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from ..data.settings import DataBase
from ..errors import ConfigError
from ..train.config import MAX_SEED, load_config, with_overrides
from .runner import SweepSpec, run_sweep
from .space import KINDS, Param, check_space, parse_param, parse_params, parse_seeds


def plan(run_file: Union[str, os.PathLike], out_dir: Union[str, os.PathLike], params: Iterable[Union[str, Param]],
         *, trials: int, seeds: Iterable[int] = (0,), jobs: int = 1, storage: Optional[str] = None,
         study_name: Optional[str] = None, settings: Optional[dict[str, Any]] = None,
         data_root: Optional[str] = None, device: Optional[str] = None,
         launcher: Optional[str] = None) -> SweepSpec:
    """Check everything that can be checked before a trial runs and return the :class:`~.runner.SweepSpec`
    (raises :class:`~archgraph.errors.ConfigError`)."""
    space = [p if isinstance(p, Param) else parse_param(p) for p in params]
    seed_list = [int(s) for s in seeds]
    _check_counts(space, seed_list, trials, jobs)
    source = str(run_file)
    settings = dict(settings or {})
    cfg = load_config(run_file)
    check_space(cfg, space, settings, source)
    if device is not None:
        settings_all = {**settings, "schedule.device": device}
    else:
        settings_all = settings
    fixed = with_overrides(cfg, settings_all, source) if settings_all else cfg
    data: DataBase = fixed.data   # one source's settings (the type checker sees their base)
    if data.val_fraction == 0:
        raise ConfigError("the sweep maximises validation accuracy: data.val_fraction must be above 0",
                          file=source, field="data.val_fraction")
    _check_storage(storage)
    return SweepSpec(run_file=str(Path(run_file).resolve()), out_dir=str(Path(out_dir).resolve()),
                     params=tuple(space), trials=int(trials), seeds=tuple(seed_list), jobs=int(jobs), storage=storage,
                     study_name=study_name or Path(run_file).stem, settings=settings, data_root=data_root,
                     device=device, launcher=launcher or None)


def _check_counts(params: list[Param], seeds: list[int], trials: int, jobs: int) -> None:
    if not params:
        raise ConfigError("a sweep needs at least one --param KEY=DIST:ARGS")
    keys = [p.key for p in params]
    if len(set(keys)) < len(keys):
        raise ConfigError("a --param key is given twice")
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise ConfigError("--seeds must be distinct non-negative integers")
    if max(seeds) > MAX_SEED:
        raise ConfigError(f"--seeds must be below 2**32 ({MAX_SEED + 1:,}), got {max(seeds)}", field="--seeds")
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")


def _check_storage(storage: Optional[str]) -> None:
    if storage is not None and not storage.strip():
        raise ConfigError("--storage wants an Optuna RDB URL, e.g. sqlite:///sweep.db")
    if storage is not None and (":memory:" in storage or storage.strip() in ("sqlite://", "sqlite:///")):
        raise ConfigError("--storage names an in-memory database, which each worker (and the front) would see "
                          "empty; give a file, e.g. sqlite:///sweep.db", field="--storage")


def sweep(run_file: Union[str, os.PathLike], out_dir: Union[str, os.PathLike], params: Iterable[Union[str, Param]],
          *, trials: int, seeds: Iterable[int] = (0,), jobs: int = 1, storage: Optional[str] = None,
          study_name: Optional[str] = None, settings: Optional[dict[str, Any]] = None,
          data_root: Optional[str] = None, device: Optional[str] = None, progress: bool = True) -> dict:
    """Run (or continue) a sweep to ``trials`` complete trials and write DIR/pareto.{json,md,png}; returns the
    content of pareto.json (``front``: the non-dominated trials, fewest non-zero parameters first, each with
    ``params``, ``val_acc``, ``nonzero_params``, ``test_acc`` and its per-seed ``seeds``)."""
    spec = plan(run_file, out_dir, params, trials=trials, seeds=seeds, jobs=jobs, storage=storage,
                study_name=study_name, settings=settings, data_root=data_root, device=device)
    return run_sweep(spec, progress=progress)


__all__ = ["KINDS", "Param", "parse_param", "parse_params", "parse_seeds", "plan", "sweep"]
