"""Graph (+ weights) -> ONNX, or -> a standalone PyTorch source file.

:func:`export_onnx` builds the graph, loads the weights and exports it with the TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``; it needs no onnxscript), checks the file with ``onnx.checker`` and
compares onnxruntime's output with PyTorch's. :func:`export_python` writes an ``nn.Module`` source file that needs
only torch: one attribute per node that holds weights, named by node id, so its ``state_dict()`` keys are
``<node_id>.<param>`` and a weights file of the graph loads into it directly.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import io
import keyword
import math
import operator
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
import torch.fx as fx
from torch import nn

from ..errors import ArchgraphError, ConversionError
from ..format.yaml_io import atomic_write_bytes, atomic_write_text
from ..fx import layers as extra
from ..fx.builder import build, class_name
from ..fx.torchnames import resolve
from ..fx.weights import load_into
from ..graph import Graph, content_hash, input_data, is_tokens, tied_parameters
from ..ops.registry import OPS

PathLike = Union[str, os.PathLike]


#: Weights above this many bytes go to a side file (``<name>.data``): one ONNX protobuf holds at most 2 GiB.
EXTERNAL_DATA_BYTES = int(1.75 * 2 ** 30)


def export_onnx(graph: Graph, weights: Mapping[str, torch.Tensor], path: PathLike, *, opset: int = 17,
                check: bool = True, atol: float = 1e-4, seed: int = 0, dynamic_hw: bool = False,
                external_data: Optional[bool] = None) -> Optional[float]:
    """Write ``graph`` with ``weights`` as an ONNX file (batch axis dynamic) and return the largest absolute
    difference between onnxruntime's and PyTorch's outputs on a random batch of 2 (``None`` with ``check=False``).
    Raises :class:`~archgraph.errors.ConversionError` when the difference exceeds ``atol`` times the largest
    output magnitude (at least 1): float32 rounding grows with the outputs, and a ResNet-50 with random weights
    outputs values in the hundreds.

    ``dynamic_hw=True`` also leaves the height and width of every image input (and the output axes that follow
    them) dynamic, where the graph allows it: the graph at twice the declared height and width must be valid with
    the same weights (no position table, flatten into a linear layer or fixed reshape ties it to one size), and
    onnxruntime must match PyTorch at both sizes (an op the exporter writes with the size as a constant fails that
    check). Otherwise it raises :class:`~archgraph.errors.ConversionError` saying why, and writes nothing.

    A graph with token inputs ``[T]`` is exported with a dynamic sequence axis (the inputs' axis 1 and every
    output axis that follows the length), checked with onnxruntime at ``T`` and at ``T // 2`` tokens; a graph that
    is not valid at the shorter length (one that flattens the sequence into a fixed size) keeps its length fixed.

    ``external_data``: write the weights to ``<path>.data`` beside the model (ONNX's external data, one file), as
    a model over 2 GiB needs; ``None`` (default) does so when the weights exceed :data:`EXTERNAL_DATA_BYTES`.
    Either way the files appear only once the checks pass.

    >>> import archgraph
    >>> g = archgraph.load("examples/seeds/tiny_cnn.yaml")                         # doctest: +SKIP
    >>> w = archgraph.build(g).state_dict()                                        # doctest: +SKIP
    >>> archgraph.export_onnx(g, w, "/tmp/tiny.onnx") < 1e-4                       # doctest: +SKIP
    True
    """
    module = build(graph)
    load_into(module, weights)
    module.eval()
    _exportable_pooling(module)
    example = _example_inputs(graph, seed)
    probe = _twice_the_size(graph, weights) if dynamic_hw else None
    axes = _dynamic_axes(graph, probe[0] if probe else None)
    shorter = _shorter_sequence(graph)
    if shorter is not None:
        axes = _sequence_axes(graph, shorter, axes)
        probe = (shorter, module) if probe is None else probe
    if external_data is None:
        external_data = needs_external_data(weights)
    export = functools.partial(_torch_export, module, example, graph, axes, opset, dynamic_hw)
    if not external_data:
        buffer = io.BytesIO()
        export(buffer)
        data = buffer.getvalue()
        _onnx_check(data)
        error = _compare(data, module, example, probe, graph, atol, seed, path) if check else None
        atomic_write_bytes(path, data)
        return error
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        raw, staged = Path(tmp) / "raw" / "model.onnx", Path(tmp) / path.name
        raw.parent.mkdir()
        export(str(raw))                        # the exporter writes one side file per tensor beside raw
        _onnx_check(str(raw))
        import onnx
        onnx.save_model(onnx.load(str(raw)), str(staged), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{path.name}.data", size_threshold=0)
        error = _compare(staged, module, example, probe, graph, atol, seed, path) if check else None
        os.replace(Path(tmp) / f"{path.name}.data", path.parent / f"{path.name}.data")
        os.replace(staged, path)
    return error


def needs_external_data(weights: Mapping[str, torch.Tensor]) -> bool:
    """Whether :func:`export_onnx` (``external_data=None``) writes ``weights`` to a side file: over
    :data:`EXTERNAL_DATA_BYTES`."""
    return sum(t.numel() * t.element_size() for t in weights.values()) > EXTERNAL_DATA_BYTES


def _torch_export(module: nn.Module, example: tuple, graph: Graph, axes: dict, opset: int, dynamic_hw: bool,
                  target) -> None:
    """``torch.onnx.export`` of ``module`` into ``target`` (a buffer or a file path), its failure as one line."""
    try:
        with warnings.catch_warnings(), _quiet_stdout():
            warnings.simplefilter("ignore", DeprecationWarning)  # "legacy" TorchScript exporter: needs no onnxscript
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes read as constants: the batch is dynamic
            torch.onnx.export(module, example, target, dynamo=False, opset_version=opset,
                              input_names=list(graph.inputs), output_names=list(graph.outputs), dynamic_axes=axes)
    except Exception as err:  # the exporter raises many kinds of errors for an op it cannot express
        # its messages can end with hundreds of lines of TorchScript graph: the first line says what failed
        lines = str(err).strip().splitlines()
        first = lines[0].split(" [Caused by ")[0] if lines else ""
        dynamic = " with a dynamic height and width (export without them)" if dynamic_hw else ""
        raise ConversionError(f"torch.onnx.export failed{dynamic}: {type(err).__name__}: {first}") from None


def _onnx_check(model: Union[bytes, str]) -> None:
    """``onnx.checker`` on the exported bytes (or, with external data, the model file's path)."""
    import onnx
    try:
        onnx.checker.check_model(onnx.load_from_string(model) if isinstance(model, bytes) else model,
                                 full_check=True)
    except Exception as err:
        raise ConversionError(f"the exported ONNX model does not pass onnx.checker: {err}") from None


def _compare(model: Union[bytes, Path], module: nn.Module, example: tuple, probe, graph: Graph, atol: float,
             seed: int, path: PathLike) -> float:
    """onnxruntime against PyTorch at the graph's size (and with ``probe``, the graph at twice it): the largest
    difference, or a ConversionError over ``atol`` x max(1, max |y|)."""
    error, scale = onnx_compare(model, module, example)
    if error > atol * max(1.0, scale):
        raise ConversionError(f"onnxruntime's output differs from PyTorch's by {error:.3g} (outputs up to "
                              f"{scale:.3g}; allowed {atol:g} x max(1, that))", file=str(path))
    if probe is not None:
        big, big_module = probe
        big_error, big_scale = onnx_compare(model, big_module, _example_inputs(big, seed))
        if big_error > atol * max(1.0, big_scale) and not any(_is_image(s) for s in big.inputs.values()):
            raise ConversionError(
                f"onnxruntime differs from PyTorch by {big_error:.3g} at a sequence of "
                f"{', '.join(str(s[0]) for s in big.inputs.values() if is_tokens(s))} tokens (outputs up to "
                f"{big_scale:.3g}): an op was written with the declared length as a constant", file=str(path))
        if big_error > atol * max(1.0, big_scale):
            raise ConversionError(
                f"the graph does not allow a dynamic height and width: exported with them dynamic, onnxruntime "
                f"differs from PyTorch by {big_error:.3g} at {_sizes(big)} (outputs up to {big_scale:.3g}), so "
                f"an op was written with the size of {_sizes(graph)} as a constant (adaptive pooling to a size "
                f"above 1 is one); export without dynamic height and width", file=str(path))
        error = max(error, big_error)
    return error


@contextlib.contextmanager
def _quiet_stdout():
    """Send what the exporter prints to file descriptor 1 (on a failure, the whole TorchScript graph, from C++)
    nowhere; the error raised says what failed."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _sizes(graph: Graph) -> str:
    return ", ".join("x".join(map(str, s[1:])) for s in graph.inputs.values() if _is_image(s))


def _is_image(shape) -> bool:
    return not is_tokens(shape) and len(shape) == 3


def _dynamic_axes(graph: Graph, big: Optional[Graph]) -> dict[str, dict[int, str]]:
    """The exporter's dynamic axes: the batch of every input and output, and with ``big`` (the graph at twice the
    size) the height and width of each image input and every output axis whose size differs between the two."""
    axes = {n: {0: "batch"} for n in [*graph.inputs, *graph.outputs]}
    if big is not None:
        for n, s in graph.inputs.items():
            if _is_image(s):
                axes[n].update({2: "height", 3: "width"})
        for n in graph.outputs:
            for i, (a, b) in enumerate(zip(graph.shape(n), big.shape(n)), start=1):
                if a != b:
                    axes[n][i] = f"{n}_{i}"
    return axes


def _shorter_sequence(graph: Graph) -> Optional[Graph]:
    """The graph with every token input at half its length (at least 1), or ``None`` where it has no token input
    longer than 1 or is not valid at that length."""
    if not any(is_tokens(s) and s[0] > 1 for s in graph.inputs.values()):
        return None
    try:
        return graph.replace(inputs={n: ({"shape": [max(1, s[0] // 2)], "vocab": s.vocab} if is_tokens(s)
                                          else input_data(s)) for n, s in graph.inputs.items()})
    except (ArchgraphError, ValueError):
        return None


def _sequence_axes(graph: Graph, short: Graph, axes: dict) -> dict:
    """``axes`` with the sequence axis of every token input and each output axis that changes with it."""
    axes = {n: dict(a) for n, a in axes.items()}
    for n, s in graph.inputs.items():
        if is_tokens(s):
            axes[n][1] = "sequence"
    for n in graph.outputs:
        for i, (a, b) in enumerate(zip(graph.shape(n), short.shape(n)), start=1):
            if a != b:
                axes[n][i] = "sequence" if i == 1 else f"{n}_{i}"
    return axes


def _twice_the_size(graph: Graph, weights: Mapping[str, torch.Tensor]) -> tuple[Graph, nn.Module]:
    """For ``dynamic_hw``: the graph with every image input at twice its height and width, and its module built
    with the same weights (a ConversionError saying why where the graph does not allow that)."""
    images = [n for n, s in graph.inputs.items() if _is_image(s)]
    if not images:
        raise ConversionError("dynamic height and width need an image input [C, H, W]; the inputs are "
                              + ", ".join(f"{n} {list(s)}" for n, s in graph.inputs.items()))
    twice = ", ".join(f"{2 * s[1]}x{2 * s[2]}" for s in graph.inputs.values() if _is_image(s))
    refused = f"the graph does not allow a dynamic height and width: at twice its size ({_sizes(graph)} -> {twice})"
    try:
        big = graph.replace(inputs={n: ([s[0], 2 * s[1], 2 * s[2]] if n in images else input_data(s))
                                    for n, s in graph.inputs.items()})
        big_module = build(big)
    except (ArchgraphError, RuntimeError, ValueError) as err:
        first = (getattr(err, "message", None) or str(err)).strip().splitlines()
        where = getattr(err, "node", None)
        node = f" at node '{where}'" if where else ""
        raise ConversionError(f"{refused} the graph is not valid{node}: {first[0] if first else ''}") from None
    mismatch = _size_bound_weight(big_module, weights)
    if mismatch:
        raise ConversionError(f"{refused} node '{mismatch}' would need weights of another shape: its weights "
                              "depend on the height and width, as after a flatten into a linear layer or in a "
                              "position table; export without --dynamic-hw") from None
    load_into(big_module, weights)
    big_module.eval()
    return big, big_module


def _size_bound_weight(module: nn.Module, weights: Mapping[str, torch.Tensor]) -> Optional[str]:
    """The first node whose tensor in ``weights`` does not have the shape ``module`` needs (``None``: all fit)."""
    for key, tensor in module.state_dict().items():
        if key in weights and tuple(weights[key].shape) != tuple(tensor.shape):
            return key.partition(".")[0]
    return None


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
                if isinstance(module, extra.Attention):   # its q/k norms are the helper RMSNorm
                    helpers.setdefault("RMSNorm", inspect.getsource(extra.RMSNorm))
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
    for key, source in tied_parameters(graph).items():   # a tied LM head: one tensor
        init.append(f"        self.{key} = self.{source}")
    params = ", ".join(names[n.name] for n in gm.graph.nodes if n.op == "placeholder")
    cls = _safe_class_name(graph.name)
    inputs = ", ".join(f"{_plain_text(k)} {list(v)}" + (f" (token ids < {v.vocab})" if is_tokens(v) else "")
                       for k, v in graph.inputs.items())
    lines = [
        f'"""{cls}: generated by archgraph from graph {_plain_text(graph.name)} (sha256 {content_hash(graph)[:16]}).',
        "",
        f"Standalone: needs only torch. Inputs (per sample, batch axis first): {inputs}.",
        "state_dict() keys are <node_id>.<param>, so the graph's weights load directly:",
        "",
        f"    model = {cls}()",
        "    model.load_state_dict(safetensors.torch.load_file('weights.safetensors'))",
        '"""',
        "from __future__ import annotations  # the helpers' annotations name typing's types, left unevaluated",
        "",
        "import math",
        "",
        "import torch",
        "import torch.nn.functional as F",
        "from torch import nn",
        "",
        f"GRAPH_NAME = {_literal(graph.name)}",
        "",
    ]
    for src in helpers.values():
        lines += ["", src.rstrip(), ""]
    lines += ["", f"class {cls}(nn.Module):", "    def __init__(self):", "        super().__init__()"]
    lines += init or ["        pass"]
    ties = tied_parameters(graph)
    if ties:   # a weights file stores a tied tensor once: the module fills the other key from it
        lines += ["", "    def load_state_dict(self, state_dict, strict=True, assign=False):",
                  f"        \"\"\"Tied weights (stored once in a weights file): {ties!r}.\"\"\"",
                  "        state_dict = dict(state_dict)",
                  f"        for key, source in {ties!r}.items():",
                  "            state_dict.setdefault(key, state_dict[source])",
                  "        return super().load_state_dict(state_dict, strict, assign)"]
    lines += ["", f"    def forward(self, {params}):"] + body
    source = "\n".join(lines) + "\n"
    compile(source, f"<{cls}>", "exec")
    return source


def _literal(text: str) -> str:
    """``text`` as a Python string literal that evaluates to exactly it and cannot end early (ASCII only, every
    quote, backslash and control character escaped): the one form in which text from a graph file reaches the
    generated code."""
    out = ascii(str(text))
    if ast.literal_eval(out) != text:  # cannot happen: ascii() of a str is a literal of it
        raise ConversionError("cannot write the graph name as a Python literal")
    return out


def _plain_text(text: str, limit: int = 80) -> str:
    """``text`` for the docstring: letters, digits and a few harmless signs kept, everything else (quotes,
    backslashes, newlines, non-ASCII) shown as ``?``, so it can neither close the docstring nor start an escape."""
    kept = "".join(ch if ch.isascii() and (ch.isalnum() or ch in " _-.,:;()[]+=/") else "?" for ch in str(text))
    return kept[:limit] + ("..." if len(kept) > limit else "")


def _safe_class_name(name: str) -> str:
    """The class name for a graph name: ASCII letters and digits only, never a keyword."""
    cls = class_name("".join(ch if ch.isascii() else " " for ch in name))
    return cls + "_" if keyword.iskeyword(cls) or cls in _RESERVED else cls


def _plain_attribute(name: str) -> bool:
    return name.isidentifier() and not hasattr(nn.Module, name) and name not in vars(nn.Module())


def _local_names(gm: fx.GraphModule, graph: Graph) -> dict[str, str]:
    taken = set(_RESERVED) | {"LayerNorm2d", "Scale", "GRN", "StochasticDepth", "channel_shuffle", "channel_slice",
                              "RMSNorm", "radix_softmax", "MaskedLayerNorm", "MoE"}
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
    if not callable(target):   # a call_function node's target is a function; a name is a method call
        raise ConversionError(f"cannot write call {target!r} as Python", node=n.name)
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
