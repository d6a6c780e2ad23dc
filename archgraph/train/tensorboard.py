"""TensorBoard event files beside the history (``schedule.log: [tensorboard]``; optional extra ``tensorboard``).

The run's numbers as the viewer people already use shows them, written to ``DIR/tensorboard/``: every step's
training loss and learning rate (``step/loss``, ``step/lr``; rank 0's share of the batch under ``torchrun``), every
epoch's metrics (``epoch/<name>``), the parameters and MACs of every graph version (``version/params``,
``version/nonzero_params``, ``version/macs``, ``version/nonzero_macs``, at the step the version began), and each
rewrite as text (``rewrites``: the rule with its arguments, growth or prune, exact or not). The x axis is the
optimizer step. The history stays the source of truth: these files are written from the same events and a resumed
run first drops the events past its checkpoint (``purge_step``), so the viewer shows one run.

>>> log = TensorBoardLog("runs/x", start_step=0)       # doctest: +SKIP
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Union

from ..errors import ConfigError


class TensorBoardLog:
    """Writes one run's TensorBoard events under ``run_dir/tensorboard``."""

    def __init__(self, run_dir: Union[str, os.PathLike], start_step: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("schedule.log: [tensorboard] needs the tensorboard package "
                              "(pip install 'archgraph[tensorboard]')", field="schedule.log") from None
        # a resumed run replaces what the killed one wrote after its checkpoint
        self.writer = SummaryWriter(os.path.join(os.fspath(run_dir), "tensorboard"),
                                    purge_step=start_step if start_step > 0 else None)

    def step(self, step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("step/loss", loss, step)
        self.writer.add_scalar("step/lr", lr, step)

    def epoch(self, step: int, metrics: Mapping) -> None:
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"epoch/{name}", value, step)

    def version(self, step: int, sizes: Mapping) -> None:
        for name in ("params", "nonzero_params", "macs", "nonzero_macs"):
            if name in sizes:
                self.writer.add_scalar(f"version/{name}", sizes[name], step)

    def rewrite(self, step: int, event: Mapping) -> None:
        args = ", ".join(f"{k}={v}" for k, v in (event.get("args") or {}).items())
        exact = "exact" if event.get("exact") else "not exact"
        self.writer.add_text("rewrites", f"version {event['version']}: {event['rule']}({args}), "
                                         f"{event.get('kind')}, {exact}", step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
