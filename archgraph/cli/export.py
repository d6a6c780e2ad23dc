"""archgraph export GRAPH [--weights W] [--onnx OUT.onnx [--dynamic-hw]] [--python OUT.py] [--hf OUT_DIR]
                 [--state-dict OUT.safetensors --like torchvision:NAME|timm:NAME]"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Mapping

import archgraph
from archgraph.errors import ConfigError

from .args import command, graph_argument, weights_argument
from .outputs import output_file

if TYPE_CHECKING:
    import torch

    from archgraph.graph import Graph


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "export", run, help="export a graph to ONNX or to a standalone PyTorch file",
                description="Write the graph with its weights as ONNX (checked with onnx.checker; onnxruntime's "
                            "output is compared with PyTorch's), and/or as a standalone Python file defining an "
                            "nn.Module that needs only torch and whose state_dict keys are <node_id>.<param>.")
    graph_argument(p, "the graph file to export")
    weights_argument(p, "weights (needed for --onnx; checked for --python)")
    p.add_argument("--onnx", metavar="OUT.onnx", help="write an ONNX file (weights over 1.75 GiB go to OUT.onnx.data "
                                                      "beside it: ONNX's external data)")
    p.add_argument("--python", metavar="OUT.py", help="write a standalone Python module")
    p.add_argument("--hf", metavar="OUT_DIR",
                   help="write a Hugging Face model folder (config.json of the source family with the graph's sizes, "
                        "model.safetensors, generation_config.json, the source's tokenizer files) that "
                        "transformers' AutoModelForCausalLM (AutoModel for encoders) .from_pretrained loads; for "
                        "a graph imported with 'archgraph import hf:...' (its weights record the source config)")
    p.add_argument("--state-dict", metavar="OUT.safetensors",
                   help="write the weights under the original module's parameter names (with --like), so they load "
                        "into the torchvision/timm model built with the graph's widths")
    p.add_argument("--like", metavar="SOURCE:NAME", help="the model the graph was imported from: torchvision:NAME "
                                                          "or timm:NAME (for --state-dict)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--dynamic-hw", action="store_true",
                   help="leave the height and width of image inputs dynamic in the ONNX file (checked at the "
                        "graph's size and at twice it; refused where the graph fixes its input size)")


def run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    for option, path in (("--onnx", args.onnx), ("--python", args.python), ("--state-dict", args.state_dict)):
        if path:
            output_file(path, option)
    graph = archgraph.load(args.graph)
    weights = _weights(graph, args.weights) if args.weights else None
    if weights is not None:   # --onnx, --state-dict and --hf come with them (_check_arguments)
        if args.onnx:
            export_onnx(graph, weights, args)
        if args.state_dict:
            export_state_dict(graph, weights, args)
        if args.hf:
            export_hf(graph, weights, args)
    if args.python:
        from archgraph.interop.export import export_python
        export_python(graph, args.python)
        print(f"wrote {args.python}")
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    if not args.onnx and not args.python and not args.hf and not args.state_dict:
        raise ConfigError("nothing to do: give --onnx OUT.onnx, --python OUT.py, --hf OUT_DIR and/or --state-dict "
                          "OUT.safetensors")
    if args.state_dict and (not args.like or not args.weights):
        raise ConfigError("--state-dict needs --like torchvision:NAME|timm:NAME and --weights W.safetensors",
                          field="like" if not args.like else "weights")
    if args.like and not args.state_dict:
        raise ConfigError("--like goes with --state-dict OUT.safetensors", field="state-dict")
    for option in ("onnx", "hf"):
        if getattr(args, option) and not args.weights:
            raise ConfigError(f"--{option} needs --weights W.safetensors", field="weights")


def _weights(graph: Graph, path: str) -> dict[str, torch.Tensor]:
    """The weights file, checked against the graph's tensors (shapes only: built on the meta device)."""
    import torch

    from archgraph.fx.builder import build
    from archgraph.fx.weights import check_weights, load_weights
    weights = load_weights(path)
    with torch.device("meta"):
        check_weights(build(graph), weights, path)
    return weights


def export_onnx(graph: Graph, weights: Mapping[str, torch.Tensor], args: argparse.Namespace) -> None:
    from archgraph.interop.export import export_onnx, needs_external_data
    error = export_onnx(graph, weights, args.onnx, opset=args.opset, dynamic_hw=args.dynamic_hw)
    sizes = " at its size and at twice its height and width" if args.dynamic_hw else ""
    also = f" and its weights {args.onnx}.data" if needs_external_data(weights) else ""
    print(f"wrote {args.onnx}{also} (onnxruntime matches PyTorch{sizes}: max abs difference {error:.2e})")


def export_state_dict(graph: Graph, weights: Mapping[str, torch.Tensor],
                      args: argparse.Namespace) -> None:
    from archgraph.fx.weights import save_weights
    from archgraph.interop.statedict import to_original
    state = to_original(graph, weights, args.like)
    save_weights(state, args.state_dict, {"like": args.like})
    print(f"wrote {args.state_dict} ({len(state)} tensors under {args.like}'s names)")


def export_hf(graph: Graph, weights: Mapping[str, torch.Tensor], args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from archgraph.fx.weights import read_metadata
    from archgraph.interop.hf_export import to_pretrained
    meta = read_metadata(args.weights)
    if "hf_config" not in meta:
        raise ConfigError("--hf needs weights whose graph was imported from Hugging Face ('archgraph import "
                          "hf:PATH' records the model's config in them; prune and apply carry it)",
                          field="weights")
    from .outputs import output_folder
    out = output_folder(args.hf, False, "--hf")
    source = meta.get("hf_source")
    to_pretrained(graph, weights, out, json.loads(meta["hf_config"]),
                  source if source and Path(source).is_dir() else None)
    print(f"wrote {out} (a Hugging Face model folder for from_pretrained)")
