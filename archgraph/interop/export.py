"""Graph (+ weights) -> ONNX, or -> a standalone PyTorch source file.

:func:`export_onnx` builds the graph, loads the weights and exports it with the TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``; it needs no onnxscript), checks the file with ``onnx.checker`` and
compares onnxruntime's output with PyTorch's. :func:`export_python` writes an ``nn.Module`` source file that needs
only torch: one attribute per node that holds weights, named by node id, so its ``state_dict()`` keys are
``<node_id>.<param>`` and a weights file of the graph loads into it directly.
"""
from __future__ import annotations

import inspect
import io
import math
import operator
import os
import warnings
from typing import Mapping, Optional, Union

import torch
import torch.fx as fx
from torch import nn

from ..fx import layers as extra
from ..fx.builder import _class_name, build
from ..errors import ConversionError
from ..graph import Graph, is_tokens
from ..format.yaml_io import atomic_write_bytes, atomic_write_text
from ..graph import content_hash
from ..fx.torchnames import resolve
from ..fx.weights import load_into
from ..ops.registry import OPS

PathLike = Union[str, os.PathLike]


def export_onnx(graph: Graph, weights: Mapping[str, torch.Tensor], path: PathLike, *, opset: int = 17,
                check: bool = True, atol: float = 1e-4, seed: int = 0) -> Optional[float]:
    """Write ``graph`` with ``weights`` as an ONNX file (batch axis dynamic) and return the largest absolute
    difference between onnxruntime's and PyTorch's outputs on a random batch of 2 (``None`` with ``check=False``).
    Raises :class:`~archgraph.errors.ConversionError` when the difference exceeds ``atol`` times the largest
    output magnitude (at least 1): float32 rounding grows with the outputs, and a ResNet-50 with random weights
    outputs values in the hundreds.

    >>> import archgraph
    >>> g = archgraph.load("examples/seeds/tiny_cnn.yaml")                         # doctest: +SKIP
    >>> w = archgraph.build(g).state_dict()                                        # doctest: +SKIP
    >>> archgraph.export_onnx(g, w, "/tmp/tiny.onnx") < 1e-4                       # doctest: +SKIP
    True
    """
    import onnx

    module = build(graph)
    load_into(module, weights)
    module.eval()
    _exportable_pooling(module)
    example = _example_inputs(graph, seed)
    names_in, names_out = list(graph.inputs), list(graph.outputs)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "legacy" TorchScript exporter: needs no onnxscript
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes read as constants: the batch is dynamic
            torch.onnx.export(module, example, buffer, dynamo=False, opset_version=opset, input_names=names_in,
                              output_names=names_out, dynamic_axes={n: {0: "batch"} for n in names_in + names_out})
    except Exception as err:  # the exporter raises many kinds of errors for an op it cannot express
        # its messages can end with hundreds of lines of TorchScript graph: the first line says what failed
        lines = str(err).strip().splitlines()
        raise ConversionError(f"torch.onnx.export failed: {type(err).__name__}: {lines[0] if lines else ''}") \
            from None
    data = buffer.getvalue()
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except Exception as err:
        raise ConversionError(f"the exported ONNX model does not pass onnx.checker: {err}") from None
    atomic_write_bytes(path, data)
    if not check:
        return None
    error, scale = onnx_compare(data, module, example)
    if error > atol * max(1.0, scale):
        raise ConversionError(f"onnxruntime's output differs from PyTorch's by {error:.3g} (outputs up to "
                              f"{scale:.3g}; allowed {atol:g} x max(1, that))", file=str(path))
    return error


def _exportable_pooling(module: fx.GraphModule) -> None:
    """Adaptive average pooling whose output does not divide its input becomes fixed averaging matrix products
    (:func:`archgraph.fx.layers.adaptive_avg_pool2d_exportable`), which ONNX expresses."""
    changed = False
    for n in module.graph.nodes:
        if n.op == "call_function" and n.target is torch.nn.functional.adaptive_avg_pool2d:
            n.target = extra.adaptive_avg_pool2d_exportable
            changed = True
    if changed:
        module.recompile()


def onnx_compare(model: Union[bytes, PathLike], module: nn.Module,
                 example: tuple[torch.Tensor, ...]) -> tuple[float, float]:
    """(largest absolute difference between onnxruntime running ``model`` and ``module`` on ``example``, largest
    absolute output of ``module``)."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), example)}
    got = session.run(None, feeds)
    with torch.no_grad():
        want = module(*example)
    want = list(want) if isinstance(want, (tuple, list)) else [want]
    error = max(float((torch.from_numpy(g) - w).abs().max()) for g, w in zip(got, want))
    return error, max(float(w.abs().max()) for w in want)


def _example_inputs(graph: Graph, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randint(0, shape.vocab, (2, *shape), generator=gen) if is_tokens(shape)
                 else torch.randn(2, *shape, generator=gen) for shape in graph.inputs.values())


# ---- standalone Python ------------------------------------------------------------------------------------------

#: constructor source of each module class the registry builds (``m`` is the built module)
_CONSTRUCTORS = {resolve(cls): source for d in OPS.values() for cls, source in d.python.items()}

_OPERATORS = {operator.add: "+", operator.mul: "*"}
_RESERVED = {"self", "torch", "nn", "F"}


def export_python(graph: Graph, path: PathLike) -> str:
    """Write a standalone ``nn.Module`` source file for ``graph`` (it imports only torch) and return its source.

    The class is named after the graph; ``state_dict()`` keys are ``<node_id>.<param>``, so
    ``model.load_state_dict(safetensors.torch.load_file("weights.safetensors"))`` loads the graph's weights.

    >>> import archgraph
    >>> g = archgraph.load("examples/seeds/tiny_cnn.yaml")          # doctest: +SKIP
    >>> print(archgraph.export_python(g, "/tmp/tiny_cnn.py")[:40])  # doctest: +SKIP
    """
    source = python_source(graph)
    atomic_write_text(path, source)
    return source


def python_source(graph: Graph) -> str:
    """The source :func:`export_python` writes."""
    with torch.device("meta"):  # only the structure is needed: no memory, no initialisation cost
        gm = build(graph)
    helpers: dict[str, str] = {}
    names = _local_names(gm, graph)
    init, body = [], []
    for n in gm.graph.nodes:
        if n.op == "call_module":
            module = gm._modules[n.target]  # node ids may shadow Module attributes
            make = _CONSTRUCTORS.get(type(module))
            if make is None:
                raise ConversionError(f"cannot write module type {type(module).__name__} as Python", node=n.target)
            if type(module).__module__ == extra.__name__:
                helpers[type(module).__name__] = inspect.getsource(type(module))
            if not _plain_attribute(n.target):
                raise ConversionError(f"the node id is an attribute of every nn.Module ({n.target!r}), so it cannot "
                                      f"name a submodule; rename the node", node=n.target)
            init.append(f"        self.{n.target} = {make(module)}")
            call = f"self.{n.target}"
            args = ", ".join(_render(a, names) for a in n.args)
            body.append(f"        {names[n.name]} = {call}({args})")
        elif n.op == "call_function":
            body.append(f"        {names[n.name]} = {_call(n, names, helpers)}")
        elif n.op == "output":
            body.append(f"        return {_render(n.args[0], names)}")
    params = ", ".join(names[n.name] for n in gm.graph.nodes if n.op == "placeholder")
    cls = _class_name(graph.name)
    inputs = ", ".join(f"{k} {list(v)}" + (f" (token ids < {v.vocab})" if is_tokens(v) else "")
                       for k, v in graph.inputs.items())
    lines = [
        f'"""{cls}: generated by archgraph from graph {graph.name!r} (sha256 {content_hash(graph)[:16]}).',
        "",
        f"Standalone: needs only torch. Inputs (per sample, batch axis first): {inputs}.",
        "state_dict() keys are <node_id>.<param>, so the graph's weights load directly:",
        "",
        f"    model = {cls}()",
        "    model.load_state_dict(safetensors.torch.load_file('weights.safetensors'))",
        '"""',
        "import torch",
        "import torch.nn.functional as F",
        "from torch import nn",
        "",
    ]
    for src in helpers.values():
        lines += ["", src.rstrip(), ""]
    lines += ["", f"class {cls}(nn.Module):", "    def __init__(self):", "        super().__init__()"]
    lines += init or ["        pass"]
    lines += ["", f"    def forward(self, {params}):"] + body
    source = "\n".join(lines) + "\n"
    compile(source, f"<{cls}>", "exec")
    return source


def _plain_attribute(name: str) -> bool:
    return name.isidentifier() and not hasattr(nn.Module, name) and name not in vars(nn.Module())


def _local_names(gm: fx.GraphModule, graph: Graph) -> dict[str, str]:
    taken = set(_RESERVED) | {"LayerNorm2d", "Scale", "StochasticDepth", "channel_shuffle", "channel_slice", "RMSNorm"}
    names: dict[str, str] = {}
    for n in gm.graph.nodes:
        name = n.name
        while name in taken:
            name += "_"
        taken.add(name)
        names[n.name] = name
    return names


def _render(value, names: dict[str, str]) -> str:
    if isinstance(value, fx.Node):
        return names[value.name]
    if isinstance(value, tuple):
        inner = ", ".join(_render(v, names) for v in value)
        return f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, list):
        return "[" + ", ".join(_render(v, names) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):  # repr gives 'inf', not Python
        return f"float({str(value)!r})"
    return repr(value)


def _call(n: fx.Node, names: dict[str, str], helpers: dict[str, str]) -> str:
    target = n.target
    if target in _OPERATORS and len(n.args) == 2 and not n.kwargs:
        return f"{_render(n.args[0], names)} {_OPERATORS[target]} {_render(n.args[1], names)}"
    if target is operator.getitem and len(n.args) == 2 and not n.kwargs:   # an LSTM's output of (output, state)
        return f"{_render(n.args[0], names)}[{_render(n.args[1], names)}]"
    module = getattr(target, "__module__", None)
    if module == extra.__name__:
        helpers[target.__name__] = inspect.getsource(target)
        func = target.__name__
    else:
        func = fx.node._get_qualified_name(target)
        if func.startswith("torch.nn.functional."):
            func = "F." + func[len("torch.nn.functional."):]
        elif not func.startswith("torch."):
            raise ConversionError(f"cannot write function {func} as Python", node=n.name)
    parts = [_render(a, names) for a in n.args]
    parts += [f"{k}={_render(v, names)}" for k, v in n.kwargs.items()]
    return f"{func}({', '.join(parts)})"
