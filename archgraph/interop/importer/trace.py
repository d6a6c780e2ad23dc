"""Tracing a module for the converter, and running the trace once so that every fx node has a concrete value.

torch.fx's symbolic trace keeps every module class the handler table reads whole (one call); where fx cannot trace
(control flow on shapes or values), ``torch.export`` (non-strict) does, and the converter reads its ATen graph too.
The run records each node's value on a seeded example: tensors by their shapes, and tensors that do not depend on
the input whole (:class:`Constant`), so the converter can fold them.
"""
from __future__ import annotations

import inspect
import re
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.fx as fx
from torch import nn

from ...errors import ArchgraphError, ConversionError
from .table import handlers


class Root(nn.Module):
    """A module the tracer keeps whole (an ``nn.TransformerEncoderLayer``) given as the model itself: fx traces the
    root's forward, so it is wrapped as the child ``layer``."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


def as_root(module: nn.Module) -> nn.Module:
    """``module`` as fx's root: refused when it returns a tuple, wrapped when fx would keep it whole."""
    if isinstance(module, (nn.LSTM, nn.GRU, nn.MultiheadAttention)):
        raise ConversionError(f"a bare {type(module).__name__} returns a tuple (output, state or weights), which a "
                              f"graph does not hold: import a module whose forward returns the output tensor "
                              f"(out, _ = self.rnn(x); return out)")
    if type(module) not in (nn.TransformerEncoderLayer, nn.TransformerEncoder):
        return module
    return Root(module).train(module.training)   # from_module restores the root's mode


def _optional_arguments(module: nn.Module) -> dict[str, Any]:
    """The arguments of ``module.forward`` after the first that have defaults, bound to them (timm's ViTs take
    ``attn_mask=None`` and the like)."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params[1:]
            if p.default is not inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def trace(module: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """torch.fx's symbolic trace (optional arguments bound to their defaults); where it fails (control flow on
    shapes or values), ``torch.export`` (non-strict) on ``example``, whose ATen graph the converter reads too."""
    try:
        tracer = Tracer(autowrap_functions=handlers().wrapped_functions())
        graph = tracer.trace(module, concrete_args=_optional_arguments(module) or None)
        return fx.GraphModule(tracer.root, graph, type(module).__name__)
    except Exception as err:  # fx raises TraceError, TypeError, ... on data-dependent control flow
        fx_error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(module, (example,), strict=False).module()
    except Exception as err:
        lines = str(err).strip().splitlines()
        raise ConversionError(f"torch.fx cannot trace {type(module).__name__} ({fx_error}), nor can torch.export "
                              f"({type(err).__name__}: {lines[0] if lines else ''})") from None


class Tracer(fx.Tracer):
    """torch.fx's tracer that also keeps the module classes the handler table reads whole (archgraph's own
    ``Attention``, ``RMSNorm``, ... are not in ``torch.nn``, so fx would trace into them). Buffers read as
    attributes are proxies, as parameters are, so ``self.mask[:t, :t]`` traces (nanoGPT's causal mask)."""

    proxy_buffer_attributes = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return handlers().module_handler(m) is not None or super().is_leaf_module(m, qualname)


# ---- concrete run -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Traced:
    """A traced tensor's shape and dtype (its values are not kept)."""
    shape: tuple[int, ...]
    dtype: Optional[torch.dtype] = None


def _describe(value):
    if isinstance(value, torch.Tensor):
        return Traced(tuple(value.shape), value.dtype)
    if isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
        return type(value)(_describe(v) for v in value)
    return value


@dataclass(frozen=True)
class Constant:
    """The value of an fx node computed from parameters and constants only (never from the input): in eval mode
    it is a constant, so the converter may fold it (a standardised conv weight, a reshaped layer scale)."""
    tensor: torch.Tensor


def concrete_values(gm: fx.GraphModule, example: torch.Tensor) -> dict[str, Any]:
    """fx node name -> its value on ``example`` (tensors replaced by their shapes, so nothing big is kept; a tensor
    that does not depend on the input is kept whole, as a :class:`Constant`)."""
    values: dict[str, Any] = {}
    dependent: set[str] = set()

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            if (n.op == "placeholder" and not n.args) or \
                    (not shape_query(n) and any(a.name in dependent for a in n.all_input_nodes)):
                dependent.add(n.name)
                values[n.name] = _describe(result)
            elif isinstance(result, torch.Tensor) and n.op != "get_attr":
                values[n.name] = Constant(result.detach().clone())
            else:
                values[n.name] = _describe(result)
            return result

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder" and not n.args]  # args: a bound default
    if len(placeholders) != 1:
        raise ConversionError(f"the module's forward takes {len(placeholders)} inputs; only one tensor input "
                              f"is supported", field="input_shape")
    try:
        with torch.no_grad():
            Recorder(gm).run(example)
    except ArchgraphError:
        raise
    except Exception as err:
        raise ConversionError(f"running the traced module on a {list(example.shape[1:])} input failed: "
                              f"{_first_line(err)}", field="input_shape", fx_node=_fx_node(err)) from None
    return values


def shape_query(n: fx.Node) -> bool:
    """``x.size()``, ``x.shape``, ``x.dim()``, ``x.device``: their values depend on the input's shape (and where it
    lives) only, which the graph fixes, so what is computed from them alone (``torch.arange(x.size(1),
    device=x.device)``, a causal mask) is a constant."""
    if n.op == "call_method":
        return n.target in ("size", "dim", "numel")
    if n.op == "call_function" and n.target is getattr:
        return len(n.args) > 1 and n.args[1] in ("shape", "ndim", "device", "dtype")
    return n.op == "call_function" and n.target in (torch.ops.aten.sym_size.int, torch.ops.aten.sym_numel.default)


def _first_line(err: Exception) -> str:
    """torch's own message without the tracing notes fx appends ("While executing %conv1 ...", "Original
    traceback", "Use tlparse ...")."""
    text = str(err).split("While executing")[0].strip().splitlines()
    return text[0] if text else type(err).__name__


def _fx_node(err: Exception):
    found = re.search(r"While executing %(\w+)", str(err))
    return found.group(1) if found else None
