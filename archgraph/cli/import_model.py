"""archgraph import torchvision:NAME | timm:NAME [--input-shape 3,224,224] [--vocab V] [--num-classes N]
                 [--weights FILE.pth|FILE.safetensors] -o DIR
archgraph import hf:MODEL_TYPE [--seq-len T] [--config KEY=VALUE ...] [--lm-head] -o DIR
archgraph import hf:PATH [--seq-len T] [--dtype bfloat16] -o DIR   (a folder save_pretrained wrote)"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from archgraph.errors import ArchgraphError, ConfigError

from .args import command, folder_output_argument, force_argument, seed_argument
from .outputs import output_folder, write_graph_folder

if TYPE_CHECKING:   # torch is imported where a model is built (the command's --help needs none)
    from torch import Tensor, nn

    from archgraph.graph import Graph

SOURCES = ("torchvision", "timm", "hf")


def register(sub: Any) -> None:   # argparse's subparsers action (its class is private)
    p = command(sub, "import", run, help="import a PyTorch model into a graph and weights",
                description="Trace a model with torch.fx and write DIR/graph.yaml and DIR/weights.safetensors (keys "
                            "<node_id>.<param>). Models come randomly initialised (no pretrained weights are "
                            "downloaded). An op the graph format cannot express is an error naming the op and the fx "
                            "node.")
    p.add_argument("model", metavar="SOURCE:NAME", help="torchvision:NAME (e.g. torchvision:resnet18), timm:NAME "
                                                         "(e.g. timm:efficientnet_b0; built with pretrained=False) "
                                                         "or hf:MODEL_TYPE (gpt2, bert, llama, qwen2, qwen3, "
                                                         "mistral, mixtral, phi3, vit: a Hugging Face model built "
                                                         "from a "
                                                         "small config, checked in float64) or "
                                                         "hf:PATH (a local folder as save_pretrained writes it: "
                                                         "config.json and *.safetensors; a causal LM keeps its LM "
                                                         "head)")
    p.add_argument("--input-shape", default="3,224,224", metavar="C,H,W",
                   help="per-sample input shape: C,H,W, T,D (a sequence) or F (default 3,224,224); with --vocab "
                        "the number of tokens T")
    p.add_argument("--vocab", type=int, default=None, metavar="V",
                   help="the input is T integer token ids in [0, V) (the graph input {shape: [T], vocab: V})")
    p.add_argument("--num-classes", type=int, default=None, metavar="N",
                   help="classifier (or segmentation) outputs (model default)")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="torchvision/timm: a local checkpoint of the original module (a .pth state dict, read with "
                        "torch.load(weights_only=True), or .safetensors) loaded into it before converting; nothing "
                        "is downloaded")
    p.add_argument("--seq-len", type=int, default=None, metavar="T",
                   help="hf: the declared number of tokens (the graph runs on any length up to it, or any length "
                        "with rotary positions; default 16 for hf:MODEL_TYPE, the model's position table for "
                        "hf:PATH)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16", "float64"],
                   help="hf:PATH: the weights' dtype (default: the checkpoint's own)")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="hf: a config field over archgraph's small defaults (e.g. --config num_hidden_layers=4); "
                        "repeatable")
    p.add_argument("--lm-head", action="store_true",
                   help="hf: a causal language model's logits (its head untied from the embedding unless --config "
                        "tie_word_embeddings=true) instead of the "
                        "last hidden state")
    seed_argument(p, "seed of the random initialisation (default 0)")
    folder_output_argument(p, "DIR")
    force_argument(p)


def parse_shape(text: str, vocab: Optional[int] = None) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(","))
    except ValueError:
        raise ConfigError(f"--input-shape must be integers like 3,224,224, got {text!r}", field="input-shape") \
            from None
    if vocab is not None and (vocab <= 0 or len(shape) != 1 or min(shape) <= 0):
        raise ConfigError(f"with --vocab, --input-shape must be the positive number of tokens T and --vocab "
                          f"positive, got {text!r} and {vocab}", field="input-shape")
    if len(shape) not in (1, 2, 3) or min(shape) <= 0:
        raise ConfigError(f"--input-shape must be C,H,W, T,D or F with positive sizes, got {text!r}",
                          field="input-shape")
    return shape


def load_model(spec: str, num_classes: Optional[int], seed: int) -> tuple[nn.Module, str]:
    source, _, name = spec.partition(":")
    if source not in SOURCES or not name:
        raise ConfigError(f"model {spec!r} must be written SOURCE:NAME with SOURCE one of {', '.join(SOURCES)} "
                          f"(e.g. torchvision:resnet18)", field="model")
    if source == "timm":
        from archgraph.compat import import_timm
        try:
            known = import_timm().list_models()
        except ImportError:
            raise ConfigError("timm is not installed (pip install timm)", field="model") from None
    else:
        from archgraph.compat import import_torchvision
        tv = import_torchvision()
        known = tv.models.list_models(module=tv.models) + tv.models.list_models(module=tv.models.segmentation)
    if name not in known:
        import difflib
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        what = "model" if source == "timm" else "classification or segmentation model"
        raise ConfigError(f"{source} has no {what} {name!r}{hint}", field="model")
    if num_classes is not None and num_classes <= 0:
        raise ConfigError("--num-classes must be positive", field="num-classes")
    from archgraph.interop.equivalence import timm_model, torchvision_model
    if source == "timm":
        return timm_model(name, num_classes=num_classes, seed=seed), name
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return torchvision_model(name, seed=seed, **kwargs), name


def read_checkpoint(path: str) -> dict:
    """The state dict in ``path``: a ``.safetensors`` file, or a ``.pth``/``.pt`` file read with
    ``torch.load(weights_only=True)`` (a plain state dict, or one under ``state_dict``/``model``, as training scripts
    save them; a ``module.`` prefix from DataParallel is dropped)."""
    import torch

    from archgraph.fx.weights import load_weights
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no such weights file '{path}'", field="weights")
    if p.suffix == ".safetensors":
        return load_weights(p)
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:   # pickles beyond tensors and plain data are refused, as are damaged files
        raise ConfigError(f"cannot read '{path}' as a state dict with torch.load(weights_only=True): {err}",
                          field="weights") from None
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(torch.is_tensor(v) for v in data.values()):
        raise ConfigError(f"'{path}' does not hold a state dict (names to tensors)", field="weights")
    if data and all(k.startswith("module.") for k in data):
        data = {k[len("module."):]: v for k, v in data.items()}
    return data


def load_checkpoint(module: nn.Module, path: str) -> None:
    """Load the checkpoint at ``path`` into the original ``module``: every tensor must be there with its shape (an
    error names the first missing, extra or misshapen one)."""
    state = read_checkpoint(path)
    own = module.state_dict()
    for key, tensor in own.items():
        if key not in state:
            raise ConfigError(f"'{path}' has no tensor '{key}' of the model", field="weights")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ConfigError(f"tensor '{key}' in '{path}' has shape {list(state[key].shape)}, the model's "
                              f"{list(tensor.shape)} (is --num-classes right?)", field="weights")
    extra = [k for k in state if k not in own]
    if extra:
        raise ConfigError(f"tensor '{extra[0]}' in '{path}' is not one of the model's"
                          + (f" ({len(extra) - 1} more)" if len(extra) > 1 else ""), field="weights")
    module.load_state_dict(state, strict=True)


def parse_config(items: list[str]) -> dict:
    """``KEY=VALUE`` pairs; a value is JSON where it parses (``4``, ``1e-5``, ``true``), else a string."""
    import json
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.isidentifier():
            raise ConfigError(f"--config must be KEY=VALUE, got {item!r}", field="config")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
        check_config_value(key, out[key])
    return out


def check_config_value(key: str, value: object) -> None:
    """A ``--config`` number: finite, not negative, and (an integer) within the width limit: sizes such as
    ``n_embd=-4`` or ``n_head=10**12`` are refused before the model is built."""
    import math

    from archgraph.limits import limit
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"--config {key}={value} is not a finite number", field="config")
    if value < 0:
        raise ConfigError(f"--config {key}={value} is negative; sizes and rates are at least 0", field="config")
    if isinstance(value, int) and value > limit("width"):
        raise ConfigError(f"--config {key}={value:,} is over the width limit of {limit('width'):,} (set "
                          "ARCHGRAPH_MAX_WIDTH to allow it)", field="config")


def import_hf(args: argparse.Namespace) -> tuple[Graph, dict[str, Tensor], dict[str, str]]:
    """``(graph, weights, metadata)``: the metadata records the model's Hugging Face config (and the folder it came
    from) in the weights file, so ``archgraph export --hf`` can write the family's config back after any edit."""
    import json

    from archgraph.interop import hf
    try:
        hf.import_transformers()
    except ImportError:
        raise ConfigError("transformers is not installed (pip install transformers)", field="model") from None
    name = args.model.partition(":")[2]
    folder = Path(name).expanduser()
    if folder.is_dir():
        if args.config or args.lm_head:
            raise ConfigError("--config and --lm-head go with hf:MODEL_TYPE; a folder keeps its own config (a causal "
                              "LM is read with its head)", field="config")
        graph, weights = hf.from_pretrained(folder, args.seq_len, args.dtype)
        config = json.loads((folder / "config.json").read_text())
        return graph, weights, {"hf_config": json.dumps(config), "hf_source": str(folder.resolve())}
    if name not in hf.WALKERS:
        raise ConfigError(f"hf:{name} is not supported (supported: {', '.join(hf.WALKERS)}) and is no folder",
                          field="model")
    sizes = parse_config(args.config)
    try:
        model = hf.build_model(name, lm_head=args.lm_head, seed=args.seed, **sizes)
    except ArchgraphError:
        raise
    except Exception as err:  # transformers' own checks (n_embd not a multiple of n_head, n_head=0, ...)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        settings = " ".join(f"{k}={v}" for k, v in sizes.items()) or "its default config"
        raise ConfigError(f"hf:{name} cannot be built with {settings}: {type(err).__name__}: {first}",
                          field="config") from None
    graph, weights = hf.from_model(model, 16 if args.seq_len is None else args.seq_len)
    config = getattr(model, "config").to_dict()   # a transformers PretrainedConfig (nn.Module types it loosely)
    config["architectures"] = [type(model).__name__]
    return graph, weights, {"hf_config": json.dumps(config)}


def run(args: argparse.Namespace) -> int:
    meta: dict[str, str] = {}
    if args.model.startswith("hf:"):
        if args.weights is not None:
            raise ConfigError("--weights is for torchvision:NAME and timm:NAME models", field="weights")
        graph, weights, meta = import_hf(args)
        output_folder(args.output, args.force)
    else:
        shape = parse_shape(args.input_shape, args.vocab)
        output_folder(args.output, args.force)
        module, name = load_model(args.model, args.num_classes, args.seed)
        if args.weights is not None:
            load_checkpoint(module, args.weights)
        from archgraph.interop.importer import from_module
        graph, weights = from_module(module, input_shape=shape, name=name, vocab=args.vocab)
    out = Path(args.output)
    write_graph_folder(out, graph, weights, {"source": args.model, "seed": args.seed, **meta})
    print(f"wrote {out / 'graph.yaml'} ({len(graph.nodes)} nodes, {graph.params:,} params, {graph.macs:,} MACs) "
          f"and {out / 'weights.safetensors'}")
    return 0
