"""Training: grow a seed graph into a compact network (``archgraph grow``).

>>> import archgraph
>>> summary = archgraph.grow("examples/digits_gnap.yaml", "runs/digits_gnap", quiet=True)   # doctest: +SKIP
>>> summary["test_acc"], summary["nonzero_params"]                                            # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import shown
from ..history.rundir import RunDir
from .config import (
    RunConfig,
    check_budget,
    check_machine,
    config_from_data,
    load_config,
    load_seed,
    method_files,
    seed_weights_path,
    with_overrides,
)


def grow(config_or_path: Union[str, os.PathLike, RunConfig, dict], out_dir: Union[str, os.PathLike], *,
         data_root: Optional[str] = None, device: Optional[str] = None, resume: bool = False, quiet: bool = False,
         settings: Optional[dict[str, Any]] = None) -> dict:
    """Run (or, with ``resume=True``, continue) a training run into ``out_dir``; returns the summary dict
    (``test_acc``, ``params``, ``nonzero_params``, ``macs``, ``versions``, ``growth_events``, ``prune_events``,
    ``wall_s``, ``world_size``, ...).

    ``config_or_path`` is a run file, a :class:`RunConfig` or its plain data (a seed path in it is relative to the
    run file, else to the working directory). ``device`` overrides ``schedule.device``, ``data_root`` the dataset
    root, and ``settings`` any field by dotted name, e.g. ``{"schedule.epochs": 2}``. Under ``torchrun`` every
    process calls this and trains its share (see :mod:`archgraph.train.distributed`); only rank 0 writes ``out_dir``.
    """
    from .loop import Trainer  # torch: importing archgraph.train (run files, schemas) needs none
    if isinstance(config_or_path, (str, os.PathLike)):
        source = str(config_or_path)
        cfg = load_config(config_or_path)
        base = Path(config_or_path).parent
    else:
        source = "<config>"
        cfg = config_or_path if isinstance(config_or_path, RunConfig) else config_from_data(config_or_path)
        base = Path.cwd()
    extra = dict(settings or {})
    if device is not None:
        extra["schedule.device"] = device
    if extra:
        cfg = with_overrides(cfg, extra, source)
    seed = load_seed(cfg, base, source)
    weights = seed_weights_path(cfg, base, source)
    cfg = method_files(cfg, base, source)
    check_machine(cfg, source)
    if os.environ.get("RANK", "0") == "0":
        for warning in check_budget(cfg):
            print(shown(f"archgraph: warning: {source}: {warning}"), file=sys.stderr)
    run_dir = RunDir(out_dir)
    main = os.environ.get("RANK", "0") == "0"
    if main:   # before the lock creates the folder: a mistyped --out stays absent
        run_dir.check_no_links()
        if resume:
            run_dir.check_resumable()
    with run_dir.locked() if main else contextlib.nullcontext():   # one writer per run folder
        if main:
            run_dir.check_no_links()
            if resume:
                run_dir.check_resumable()
        trainer = Trainer(cfg, out_dir, seed_graph=seed, seed_weights=weights, source=source,
                          data_root=data_root, quiet=quiet, resume=resume)
        try:
            summary = trainer.run()
        except BaseException:
            trainer.dist.close()
            raise
        trainer.dist.close(finished=True)
    return summary


__all__ = ["RunConfig", "grow", "load_config"]
