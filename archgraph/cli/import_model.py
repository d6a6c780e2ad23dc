"""archgraph import torchvision:NAME | timm:NAME [--input-shape 3,224,224] [--vocab V] [--num-classes N] -o DIR"""
from __future__ import annotations

from pathlib import Path

from archgraph.errors import ConfigError

from .args import command, folder_output_argument, force_argument, seed_argument
from .outputs import output_folder

SOURCES = ("torchvision", "timm")


def register(sub) -> None:
    p = command(sub, "import", run, help="import a PyTorch model into a graph and weights",
                description="Trace a model with torch.fx and write DIR/graph.yaml and DIR/weights.safetensors (keys "
                            "<node_id>.<param>). Models come randomly initialised (no pretrained weights are "
                            "downloaded). An op the graph format cannot express is an error naming the op and the fx "
                            "node.")
    p.add_argument("model", metavar="SOURCE:NAME", help="torchvision:NAME (e.g. torchvision:resnet18) or timm:NAME "
                                                         "(e.g. timm:efficientnet_b0; built with pretrained=False)")
    p.add_argument("--input-shape", default="3,224,224", metavar="C,H,W",
                   help="per-sample input shape: C,H,W, T,D (a sequence) or F (default 3,224,224); with --vocab "
                        "the number of tokens T")
    p.add_argument("--vocab", type=int, default=None, metavar="V",
                   help="the input is T integer token ids in [0, V) (the graph input {shape: [T], vocab: V})")
    p.add_argument("--num-classes", type=int, default=None, metavar="N", help="classifier outputs (model default)")
    seed_argument(p, "seed of the random initialisation (default 0)")
    folder_output_argument(p, "DIR")
    force_argument(p)


def parse_shape(text: str, vocab=None) -> tuple[int, ...]:
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


def load_model(spec: str, num_classes, seed: int):
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
        known = tv.models.list_models(module=tv.models)
    if name not in known:
        import difflib
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        what = "model" if source == "timm" else "classification model"
        raise ConfigError(f"{source} has no {what} {name!r}{hint}", field="model")
    if num_classes is not None and num_classes <= 0:
        raise ConfigError("--num-classes must be positive", field="num-classes")
    from archgraph.interop.equivalence import timm_model, torchvision_model
    if source == "timm":
        return timm_model(name, num_classes=num_classes, seed=seed), name
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return torchvision_model(name, seed=seed, **kwargs), name


def run(args) -> int:
    shape = parse_shape(args.input_shape, args.vocab)
    output_folder(args.output, args.force)
    module, name = load_model(args.model, args.num_classes, args.seed)
    from archgraph.interop.importer import from_module
    from archgraph.format.yaml_io import save
    from archgraph.graph import content_hash
    from archgraph.fx.weights import save_weights
    graph, weights = from_module(module, input_shape=shape, name=name, vocab=args.vocab)
    out = Path(args.output)
    save(graph, out / "graph.yaml")
    save_weights(weights, out / "weights.safetensors",
                 {"graph_sha256": content_hash(graph), "source": args.model, "seed": str(args.seed)})
    print(f"wrote {out / 'graph.yaml'} ({len(graph.nodes)} nodes, {graph.params:,} params, {graph.macs:,} MACs) "
          f"and {out / 'weights.safetensors'}")
    return 0
