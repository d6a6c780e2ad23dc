"""Choosing how to run a built graph fast: memory format, ``torch.compile`` and AMP, measured per graph version.

A training step of an fx-built module runs the same kernels as hand-written eager code; on top of that the engine
can pick channels_last and/or ``torch.compile`` where they pay off on this machine and this graph. The choice is
measured (a few timed training steps on a copy of the module) and cached by graph content hash, device and batch
shape, so a growth event costs one measurement of the new version, never one per step. ``torch.compile`` is only
chosen when its saving over the expected steps until the next rewrite exceeds its compile time.

>>> import archgraph, torch
>>> from archgraph.fx.speed import choose_format, apply_format
>>> g = archgraph.load("examples/seeds/tiny_cnn.yaml")                   # doctest: +SKIP
>>> m = archgraph.build(g)                                               # doctest: +SKIP
>>> x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))     # doctest: +SKIP
>>> fmt = choose_format(g, m, x, y)                                     # doctest: +SKIP
>>> runner = apply_format(m, fmt)                                       # doctest: +SKIP
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional, cast

import torch
from torch import nn

from ..graph import Graph, content_hash
from ..ops.registry import OPS


@dataclass(frozen=True)
class Format:
    """How a module runs: memory format of 4-D tensors, compiled or not, autocast (CUDA only)."""

    channels_last: bool = False
    compile: bool = False
    amp: bool = False

    def describe(self) -> str:
        bits = [name for name, on in asdict(self).items() if on]
        return "+".join(bits) or "eager"

    @property
    def name(self) -> str:
        """The name of the format without AMP, as the run file's ``schedule.format`` spells it."""
        return Format(self.channels_last, self.compile).describe()

    @classmethod
    def from_name(cls, name: str, amp: bool = False) -> "Format":
        """``"eager"``, ``"channels_last"``, ``"compile"`` or ``"channels_last+compile"`` (plus ``amp``).

        >>> Format.from_name("channels_last+compile")
        Format(channels_last=True, compile=True, amp=False)
        """
        bits = set(name.split("+")) - {"eager", "amp"}
        unknown = bits - {"channels_last", "compile"}
        if unknown:
            raise ValueError(f"unknown format part(s) {sorted(unknown)} in {name!r}")
        return cls("channels_last" in bits, "compile" in bits, amp or "amp" in name.split("+"))


@dataclass(frozen=True)
class Measurement:
    format: Format
    step_s: float
    setup_s: float


_CACHE: dict[tuple, tuple[Format, tuple[Measurement, ...]]] = {}


def candidates(device: torch.device, has_conv: bool, allow_compile: bool, amp: Optional[bool] = None) -> list[Format]:
    """The formats worth measuring: eager, channels_last for conv nets, their compiled forms when allowed; AMP on
    CUDA (unless ``amp`` says otherwise), never on the CPU."""
    amp = device.type == "cuda" if amp is None else (amp and device.type == "cuda")
    out = [Format(amp=amp)]
    if has_conv:
        out.append(Format(channels_last=True, amp=amp))
    if allow_compile:
        out += [Format(compile=True, amp=amp)] + ([Format(channels_last=True, compile=True, amp=amp)]
                                                 if has_conv else [])
    return out


def apply_format(module: nn.Module, fmt: Format) -> nn.Module:
    """The module prepared to run in ``fmt`` (parameters are shared, not copied). With ``compile`` the result is
    the compiled wrapper; keep the original module for ``state_dict()``."""
    if fmt.channels_last:
        # Module.to takes memory_format (it forwards to Tensor.to); torch's stubs do not list it
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if fmt.compile:
        return cast(nn.Module, torch.compile(module))   # an OptimizedModule; the stubs say a callable
    return module


def prepare_input(x: torch.Tensor, fmt: Format) -> torch.Tensor:
    if fmt.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def time_steps(module: nn.Module, x: torch.Tensor, y: torch.Tensor, fmt: Format, *, steps: int = 5,
               warmup: int = 2, loss_fn: Optional[Callable] = None) -> Measurement:
    """Seconds per SGD training step of a copy of ``module`` in ``fmt`` (the copy's first steps count as setup)."""
    loss_fn = loss_fn or nn.functional.cross_entropy
    model = copy.deepcopy(module).train()
    start = time.perf_counter()
    runner = apply_format(model, fmt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    xb = prepare_input(x, fmt)

    scaler = torch.amp.GradScaler(x.device.type, enabled=fmt.amp)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=x.device.type, enabled=fmt.amp):
            out = runner(xb)
        scaler.scale(loss_fn(out.float(), y)).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        step()
    _sync(x.device)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(x.device)
    return Measurement(fmt, (time.perf_counter() - start) / steps, setup)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def choose_format(graph: Graph, module: nn.Module, x: torch.Tensor, y: torch.Tensor, *, allow_compile: bool = False,
                  steps_until_rewrite: int = 1000, steps: int = 5, amp: Optional[bool] = None,
                  loss_fn: Optional[Callable] = None) -> Format:
    """Measure the candidate formats for this graph version and return the fastest; cached per version.

    A compiled candidate is charged its compile time spread over ``steps_until_rewrite`` steps; one that fails to
    compile (no C++ compiler, an unsupported op) is left out. The global RNG is left as it was. ``loss_fn(out, y)``
    is the training loss (default: cross entropy over ``[B, K]`` scores).
    """
    key = (content_hash(graph), str(x.device), tuple(x.shape), x.dtype, allow_compile, amp)
    if key in _CACHE:
        return _CACHE[key][0]
    has_conv = any(OPS[n.op].traits.conv for n in graph.nodes.values())
    results = []
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for fmt in candidates(x.device, has_conv, allow_compile, amp):
            try:
                results.append(time_steps(module, x, y, fmt, steps=steps, loss_fn=loss_fn))
            except Exception:   # noqa: BLE001 - a compiler failure only removes the candidate
                if not fmt.compile:
                    raise
    def cost(m: Measurement) -> float:
        return m.step_s + (m.setup_s / max(steps_until_rewrite, 1) if m.format.compile else 0.0)
    best = min(results, key=cost)
    _CACHE[key] = (best.format, tuple(results))
    return best.format


def measurements(graph: Graph, x: torch.Tensor, allow_compile: bool = False,
                 amp: Optional[bool] = None) -> tuple[Measurement, ...]:
    """The timings behind a cached choice (empty when nothing was measured)."""
    key = (content_hash(graph), str(x.device), tuple(x.shape), x.dtype, allow_compile, amp)
    return _CACHE.get(key, (None, ()))[1]
