"""Timing shared by the speed benchmarks: steps timed in interleaved, shuffled rounds in one process, so machine
noise hits every variant alike."""
from __future__ import annotations

import random
import time
from typing import Callable, Optional

import torch


def timed(step: Callable[[], None], n: int, device: Optional[torch.device] = None) -> float:
    """Seconds per call of ``step`` over ``n`` calls (synchronising CUDA before and after)."""
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(n):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / n


def interleaved(steps: dict[str, Callable[[], None]], rounds: int, n: int,
                device: Optional[torch.device] = None) -> dict[str, list[float]]:
    """Per variant, the seconds per step of each round; every round runs all variants in a shuffled order."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    rng = random.Random(0)
    for _ in range(rounds):
        order = list(steps)
        rng.shuffle(order)
        for k in order:
            times[k].append(timed(steps[k], n, device))
    return times
