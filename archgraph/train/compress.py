"""Prune, then recover, in rounds: ``archgraph compress RUN.yaml --target params=0.5 --out DIR``.

The run file's starting network (its ``seed`` and ``weights:``) is the teacher and the first student. Each of
``rounds`` rounds prunes the student by a calibrated criterion (batches of the run's ``data:``) so that its size
reaches the round's share of the target, a geometric step (``target ** (r / rounds)`` of the start after round
``r``), then trains it ``steps`` steps by distillation from the starting network (the ``distill`` method:
``T^2 * KL`` of temperature-softened logits, plus ``alpha`` of the task loss). The target is a fraction of the
start's ``params``, ``macs`` or ``latency`` (the built module's median forward time on this device at the run's
``data.batch_size``); the MACs and parameters depend on the widths only, so the pruning ratio of a round is found
by bisection on the sizes, and a latency target takes MAC steps and measures after each round, going on (up to
twice ``rounds``) until the measured latency is at the target.

``DIR`` is a run folder as ``archgraph grow`` writes it: every pruning rule a version in ``history.jsonl`` (so
``archgraph replay``, ``report`` and ``render`` read it), one epoch event per round with its metrics, the final
weights, and ``summary.json`` with ``params``, ``macs``, the test metrics (``test_acc``, or the task's), the start's
values (``start_*``), the ``target`` and the ``reached`` fraction.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..data.feed import load_data
from ..data.settings import DataBase
from ..errors import ConfigError
from ..fx.latency import measure
from ..fx.magnitude import prune
from ..fx.network import Network
from ..history.rundir import RunDir
from ..methods.driver import Method
from ..ops.registry import OPS
from .config import load_config, load_seed, seed_weights_path
from .optim import make_optimizer
from .strategies.distill import DistillSettings, DistillStrategy
from .tasks import task_of
from .teacher import Teacher

#: what a target may name: fractions of the starting network's
TARGET_KINDS = ("params", "macs", "latency")
#: the criteria compress prunes by (the calibrated two and the magnitudes)
CRITERIA = ("taylor", "activation", "l2", "l1")


@dataclass(frozen=True)
class Target:
    """``kind=fraction``: reach ``fraction`` of the starting network's ``kind``."""
    kind: str
    fraction: float

    def __str__(self) -> str:
        return f"{self.kind}={self.fraction:g}"


def parse_target(spec: str) -> Target:
    """``params=0.5``, ``macs=0.3`` or ``latency=0.6`` (a fraction in (0, 1)); anything else is a
    :class:`ConfigError` naming ``--target``."""
    kind, sep, value = str(spec).partition("=")
    kind = kind.strip()
    if not sep or kind not in TARGET_KINDS:
        raise ConfigError(f"target {spec!r} must be KIND=FRACTION with KIND one of {', '.join(TARGET_KINDS)} "
                          "(e.g. params=0.5)", field="--target")
    try:
        fraction = float(value)
    except ValueError:
        raise ConfigError(f"target {spec!r}: {value.strip()!r} is not a number", field="--target") from None
    if not (math.isfinite(fraction) and 0.0 < fraction < 1.0):
        raise ConfigError(f"target {spec!r}: the fraction must be above 0 and below 1", field="--target")
    return Target(kind, fraction)


def _has_heads(graph) -> bool:
    return any(OPS[n.op].coupling.heads(n, graph.input_shapes(nid)) is not None for nid, n in graph.nodes.items())


def ratio_for(graph, state, size: float, kind: str, heads: bool, round_to: int) -> float:
    """The smallest pruning ratio of ``graph`` whose result has at most ``size`` ``kind`` (params or macs); the
    sizes depend on the widths alone, so the magnitude criterion finds it. 0 when nothing smaller exists."""
    def measure_at(r: float) -> int:
        return getattr(prune(graph, state, r, "l2", heads=heads, round_to=round_to).graph, kind)
    lo, hi = 0.0, 0.95
    if measure_at(hi) > size:
        return hi
    for _ in range(14):
        mid = (lo + hi) / 2
        if measure_at(mid) > size:
            lo = mid
        else:
            hi = mid
    return hi


class _Evaluator:
    """The task's metrics of a module on a split (eval mode, no gradients)."""

    def __init__(self, ds, task, device, batch: int):
        self.ds, self.task, self.device, self.batch = ds, task, device, batch

    @torch.no_grad()
    def __call__(self, module, split) -> dict:
        was = module.training
        module.eval()
        stats = None
        index = [torch.arange(i, min(i + self.batch, len(split))) for i in range(0, len(split), self.batch)]
        for x, y in self.ds.batches(split, index):
            s = self.task.stats(module(x.to(self.device)), y.to(self.device))
            stats = s if stats is None else stats + s
        module.train(was)
        return self.task.metrics(stats.tolist()) if stats is not None else {}


def _latency_ms(module, graph, batch: int, device) -> float:
    return measure(module, graph, batch_sizes=(batch,), warmup=3, rounds=10,
                   device=str(device))["batches"][str(batch)]["median_ms"]


def compress(run: Union[str, os.PathLike], out_dir: Union[str, os.PathLike], target: Union[str, Target], *,
             steps: int = 200, rounds: int = 3, criterion: str = "taylor", calib_batches: int = 8,
             round_to: int = 1, temperature: float = 2.0, alpha: float = 0.0, lr: Optional[float] = None,
             data_root: Optional[str] = None, device: Optional[str] = None, say=print) -> dict:
    """Compress the run file's starting network to ``target`` (see the module docstring); returns the summary."""
    target = target if isinstance(target, Target) else parse_target(target)
    source = str(run)
    if steps < 0:
        raise ConfigError(f"--steps {steps} must be at least 0", field="--steps")
    if rounds < 1:
        raise ConfigError(f"--rounds {rounds} must be at least 1", field="--rounds")
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}",
                          field="--criterion")
    if round_to < 1:
        raise ConfigError(f"--round-to {round_to} must be at least 1", field="--round-to")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"--temperature {temperature} must be above 0", field="--temperature")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"--alpha {alpha} must be in [0, 1]", field="--alpha")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"--lr {lr} must be above 0", field="--lr")
    if calib_batches < 1:
        raise ConfigError(f"--calib-batches {calib_batches} must be at least 1", field="--calib-batches")
    out = RunDir(out_dir)
    if out.path.exists() and not out.is_empty():
        raise ConfigError(f"'{out.path}' is not empty; choose a new folder for the compressed run", field="--out")
    cfg = load_config(run)
    base = Path(run).parent
    graph = load_seed(cfg, base, source)
    weights = seed_weights_path(cfg, base, source)
    if weights is None:
        raise ConfigError("compress starts from a trained network: the run file needs weights: (a safetensors file "
                          "of the seed's weights)", file=source, field="weights")
    if len(graph.inputs) != 1:
        raise ConfigError(f"compress needs a graph with one input, not {len(graph.inputs)}", file=source,
                          field="seed")
    want = device or cfg.schedule.device
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if want == "auto" else want)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda asked for, but torch sees no CUDA device here", file=source,
                          field="--device" if device else "schedule.device")
    if cfg.schedule.threads:
        torch.set_num_threads(cfg.schedule.threads)
    torch.manual_seed(cfg.schedule.seed)
    t0 = time.perf_counter()

    shape = next(iter(graph.inputs.values()))
    data: DataBase = cfg.data
    ds = load_data(data, seed=cfg.schedule.seed, root=data_root or getattr(data, "root", None),
                   input_shape=shape, source=source)
    task = task_of(ds)
    batch = data.batch_size
    evaluate = _Evaluator(ds, task, dev, data.eval_batch_size)
    net = Network(graph, weights, device=dev, seed=cfg.schedule.seed)
    teacher = Teacher(graph, weights, device=dev)
    heads = _has_heads(graph)

    start = {"params": graph.params, "macs": graph.macs}
    start.update({f"test_{k}": v for k, v in evaluate(net.module, ds.test).items()})
    if target.kind == "latency":
        start["latency_ms"] = _latency_ms(net.module, graph, batch, dev)
    say(f"start: {start['params']:,} params, {start['macs']:,} MACs"
        + (f", {start['latency_ms']:.3g} ms at batch {batch}" if "latency_ms" in start else "")
        + "".join(f", test {k[5:]} {v:.4f}" for k, v in start.items() if k.startswith("test_")))

    settings = DistillSettings(teacher=str(Path(cfg.seed).name if isinstance(cfg.seed, str) else "<inline seed>"),
                               teacher_weights=str(weights), temperature=temperature, alpha=alpha)
    gen = torch.Generator().manual_seed(cfg.schedule.seed)
    reached = 1.0
    max_rounds = rounds if target.kind != "latency" else 2 * rounds
    done = total_steps = 0
    for r in range(1, max_rounds + 1):
        # the round's size: a geometric step towards the target (latency: MACs, corrected by the measured ratio)
        if target.kind == "latency" and r > rounds:
            kind, goal = "macs", net.graph.macs * min(0.95, max(0.5, target.fraction / max(reached, 1e-9)))
        else:
            kind = "macs" if target.kind == "latency" else target.kind
            goal = start[kind] * target.fraction ** (r / rounds)
        state = net.state_dict()
        ratio = ratio_for(net.graph, state, goal, kind, heads, round_to)
        calib = [(x.to(dev), y.to(dev)) for x, y in
                 ds.batches(ds.train, [torch.randint(0, len(ds.train), (batch,), generator=gen)
                                       for _ in range(calib_batches)])]
        net.step, net.epoch = total_steps, r - 1
        applied = net.prune(ratio, criterion=criterion, heads=heads, calib=calib, round_to=round_to) \
            if ratio > 0 else []
        loss = _distill(net, teacher, settings, cfg, ds, steps, batch, dev, gen, lr)
        total_steps += steps
        net.step = total_steps
        metrics: dict[str, Any] = {"round": r, "ratio": ratio, "rules": len(applied), **net.size_metrics()}
        if loss is not None:
            metrics["distill_loss"] = loss
        if ds.val is not None:
            metrics.update({f"val_{k}": v for k, v in evaluate(net.module, ds.val).items()})
        metrics.update({f"test_{k}": v for k, v in evaluate(net.module, ds.test).items()})
        if target.kind == "latency":
            metrics["latency_ms"] = _latency_ms(net.module, net.graph, batch, dev)
            reached = metrics["latency_ms"] / start["latency_ms"]
        else:
            reached = getattr(net.graph, target.kind) / start[target.kind]
        metrics["reached"] = reached
        net.epoch = r
        net.log({"event": "epoch", "epoch": r, "metrics": metrics})
        done = r
        say(f"round {r}: ratio {ratio:.3f}, {len(applied)} rule(s), {net.graph.params:,} params, "
            f"{net.graph.macs:,} MACs, {target.kind} at {reached:.3f} of the start"
            + "".join(f", test {k[5:]} {v:.4f}" for k, v in metrics.items() if k.startswith("test_")))
        if target.kind == "latency" and reached <= target.fraction:
            break

    final = {f"test_{k}": v for k, v in evaluate(net.module, ds.test).items()}
    summary = {**final, "target": str(target), "target_kind": target.kind, "target_fraction": target.fraction,
               "reached": reached, "reached_target": reached <= target.fraction + 1e-9, "rounds": done,
               "steps_per_round": steps, "criterion": criterion, "round_to": round_to, "temperature": temperature,
               "alpha": alpha, "calib_batches": calib_batches, "device": str(dev), "threads": torch.get_num_threads(),
               "batch_size": batch, "dataset": data.name, "method": "compress",
               **{f"start_{k}": v for k, v in start.items()}, "wall_s": round(time.perf_counter() - t0, 3)}
    if target.kind == "latency":   # the last round's measurement, the one ``reached`` is of
        summary["latency_ms"] = reached * start["latency_ms"]
    net.save(out_dir, summary=summary)
    return json.loads(RunDir(out_dir).summary_path.read_text())


def _distill(net: Network, teacher: Teacher, settings: DistillSettings, cfg, ds, steps: int, batch: int, dev,
             gen: torch.Generator, lr: Optional[float]) -> Optional[float]:
    """``steps`` optimizer steps of the ``distill`` method on random training batches (no augmentation); the mean
    objective of the last tenth of them."""
    if steps == 0:
        return None
    strategy = DistillStrategy(settings)
    strategy.teacher = teacher   # the starting network, already built on the device
    schedule = cfg.schedule if lr is None else cfg.schedule.model_copy(update={"lr": lr})
    optimizer = make_optimizer(net.module, schedule)
    method = Method(strategy, net, optimizer, epochs=1, steps_per_epoch=steps)
    net.module.train()
    tail: list[float] = []
    try:
        for i in range(steps):
            index = torch.randint(0, len(ds.train), (batch,), generator=gen)
            x, y = next(iter(ds.batches(ds.train, [index])))
            x, y = x.to(dev), y.to(dev)
            out = net.module(x)
            loss = method.loss(task_of(ds).loss(out, y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            method.step()
            if i >= steps - max(1, steps // 10):
                tail.append(float(loss.detach()))
    finally:
        method.detach()
    return sum(tail) / len(tail)
