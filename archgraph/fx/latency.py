"""Measured inference latency of a built graph on this machine: what pruning is for, beside the MACs it counts.

A forward pass in eval mode under ``torch.inference_mode`` on random inputs of the graph's shapes (token inputs:
random ids below their vocabulary), ``warmup`` passes first, then ``rounds`` timed passes; the median is reported,
with the device and the CPU threads torch used. Pruning that lowers the MACs does not always lower the latency
(odd widths, memory-bound layers): this is the number to look at.

>>> import archgraph
>>> g = archgraph.load("examples/seeds/tiny_cnn.yaml")
>>> lat = measure(archgraph.build(g), g, batch_sizes=(1,), warmup=1, rounds=3)
>>> sorted(lat), sorted(lat["batches"]["1"])
(['batches', 'device', 'rounds', 'threads', 'warmup'], ['median_ms', 'min_ms'])
"""
from __future__ import annotations

import statistics
import time
from typing import Optional, Sequence

import torch

from ..graph import Graph

BATCH_SIZES = (1, 32)


def example_inputs(graph: Graph, batch: int, device="cpu", seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs for every graph input: normal floats of its shape, or token ids below its vocabulary."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for shape in graph.inputs.values():
        vocab = getattr(shape, "vocab", None)
        if vocab is not None:
            out.append(torch.randint(0, vocab, (batch, *shape), generator=gen).to(device))
        else:
            out.append(torch.randn(batch, *shape, generator=gen).to(device))
    return tuple(out)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(module: torch.nn.Module, inputs: Sequence[torch.Tensor], warmup: int = 3,
                 rounds: int = 10) -> list[float]:
    """Seconds of each of ``rounds`` forward passes (after ``warmup`` untimed ones), eval mode, no autograd."""
    device = inputs[0].device
    was_training = module.training
    module.eval()
    times = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                module(*inputs)
            _sync(device)
            for _ in range(rounds):
                start = time.perf_counter()
                module(*inputs)
                _sync(device)
                times.append(time.perf_counter() - start)
    finally:
        module.train(was_training)
    return times


def measure(module: torch.nn.Module, graph: Graph, batch_sizes: Sequence[int] = BATCH_SIZES, warmup: int = 3,
            rounds: int = 10, device: Optional[str] = None, threads: Optional[int] = None) -> dict:
    """Median forward latency of ``module`` (built from ``graph``) at each batch size: ``{"device", "threads",
    "warmup", "rounds", "batches": {"1": {"median_ms", "min_ms"}, ...}}``. ``threads`` sets torch's CPU threads
    for the measurement (default: as they are)."""
    dev = torch.device(device or next((p.device for p in module.parameters()), torch.device("cpu")))
    module = module.to(dev)
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        batches = {}
        for b in batch_sizes:
            times = time_forward(module, example_inputs(graph, b, dev), warmup, rounds)
            batches[str(b)] = {"median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times)}
        return {"device": str(dev) if dev.type != "cpu" else "cpu", "threads": torch.get_num_threads(),
                "warmup": warmup, "rounds": rounds, "batches": batches}
    finally:
        torch.set_num_threads(old)


def measure_pair(before: torch.nn.Module, graph_before: Graph, after: torch.nn.Module, graph_after: Graph,
                 batch_sizes: Sequence[int] = BATCH_SIZES, warmup: int = 3, rounds: int = 10,
                 threads: Optional[int] = None) -> tuple[dict, dict]:
    """:func:`measure` of two modules (a network before and after pruning) timed in alternation, one pass of each
    per round, so that the load of a shared machine falls on both alike; on the CPU."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        out: tuple[dict, dict] = ({}, {})
        for b in batch_sizes:
            xs = (example_inputs(graph_before, b), example_inputs(graph_after, b))
            for m, x in zip((before, after), xs):
                time_forward(m, x, warmup, 0)
            times: tuple[list, list] = ([], [])
            for _ in range(rounds):
                for i, (m, x) in enumerate(zip((before, after), xs)):
                    times[i].extend(time_forward(m, x, 0, 1))
            for i in range(2):
                out[i][str(b)] = {"median_ms": 1000 * statistics.median(times[i]), "min_ms": 1000 * min(times[i])}
        info = {"device": "cpu", "threads": torch.get_num_threads(), "warmup": warmup, "rounds": rounds}
        return {**info, "batches": out[0]}, {**info, "batches": out[1]}
    finally:
        torch.set_num_threads(old)


def describe(lat: dict) -> str:
    """One line: ``batch 1: 0.41 ms, batch 32: 3.2 ms (cpu, 2 threads, median of 10 after 3 warm-up)``."""
    parts = ", ".join(f"batch {b}: {_ms(v['median_ms'])}" for b, v in lat["batches"].items())
    return (f"{parts} ({lat['device']}, {lat['threads']} thread{'s' if lat['threads'] != 1 else ''}, median of "
            f"{lat['rounds']} after {lat['warmup']} warm-up)")


def _ms(v: float) -> str:
    return f"{v:.3g} ms"


def compare(before: dict, after: dict) -> str:
    """``batch 1: 2.1 ms -> 1.2 ms (1.75x faster), ...``: the same batch sizes measured before and after."""
    parts = []
    for b, v in before["batches"].items():
        a = after["batches"][b]["median_ms"]
        parts.append(f"batch {b}: {_ms(v['median_ms'])} -> {_ms(a)} ({v['median_ms'] / max(a, 1e-9):.2f}x)")
    return ", ".join(parts)
