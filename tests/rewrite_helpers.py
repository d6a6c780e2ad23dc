"""Helpers shared by the rewrite tests: float64 modules with non-trivial batchnorm statistics, inputs, outputs."""
from __future__ import annotations

import torch

import archgraph


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every norm non-trivial running statistics and affine parameters (in place), so that a rule that only
    preserves the function for default statistics is caught."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in (*module.named_parameters(), *module.named_buffers()):
            if not t.is_floating_point():
                continue
            short = name.rpartition(".")[2]
            r = torch.rand(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
            n = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
            if short == "running_mean":
                t.copy_(n)
            elif short == "running_var":
                t.copy_(0.5 + 1.5 * r)
            elif short == "weight" and t.dim() == 1:
                t.copy_(0.5 + r)
            elif short == "bias" and t.dim() == 1:
                t.copy_(0.5 * n)
    return module


def build64(graph, seed: int = 0) -> torch.fx.GraphModule:
    return randomise(archgraph.build(graph, dtype=torch.float64, seed=seed), seed).eval()


def inputs_for(graph, batch: int = 3, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *shape, generator=gen, dtype=torch.float64) for shape in graph.inputs.values()]


def outputs(module, xs) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = module(*xs)
    return out if isinstance(out, tuple) else (out,)


def max_error(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def state_copy(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
