"""(Graph, weights) -> a Hugging Face model folder that ``transformers``' ``from_pretrained`` loads.

A graph imported from Hugging Face (:mod:`archgraph.interop.hf`) keeps its node ids: the module paths of the
family's modeling file with ``.`` written ``_`` (``layers_0_self_attn``, ``h_3_mlp_c_fc``). :func:`to_pretrained`
reads the new sizes off the graph (hidden size, layers, heads, kv heads, head size, MLP width, vocabulary, position
table), writes the family's ``config.json`` with them over the source's config, and fills every tensor of the
family's own class (built on the ``meta`` device: no memory) from the graph's weights: the generic way is the
longest prefix of its module path that is a node id; GPT-2's fused ``c_attn`` and ``Conv1D`` layout, BERT's folded
token-type row, ViT's class token and position table and the mixtures of experts' fused expert tensors
(:data:`MOE_TENSORS`) are written back by hand; Gemma's embedding scale is folded in where the stream was resized
(:func:`_gemma_fold`). A causal LM whose head still equals its embedding is written tied (``tie_word_embeddings``),
as it came.

Sizes the family's class expresses load natively: every layer the same head count, kv heads, head size and MLP
width (``archgraph prune --uniform`` keeps them so); GPT-2, BERT and ViT also need ``head_dim * heads`` equal to the
hidden size; the expert families every sparse layer the same expert count, top k and expert width. Where the
layers' sizes differ, the Llama-like families and Gemma get a small modeling file beside the weights
(``modeling_archgraph.py``: the family's classes with each decoder layer built at its own sizes, named in the
config's ``auto_map``; ``from_pretrained(out, trust_remote_code=True)``); other families are refused with the
reason.

>>> to_pretrained(graph, weights, "out/", config)          # doctest: +SKIP
>>> AutoModelForCausalLM.from_pretrained("out/")             # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, TypeVar, Union

import torch

from ..compat import import_transformers
from ..errors import ConversionError
from ..fx.weights import write_safetensors
from ..graph import Graph, is_tokens
from ..ops.attention import Attention
from ..ops.experts import MoE
from ..ops.linear import Embedding, Linear
from ..ops.registry import attention_dims
from ..ops.spec import NodeSpec

PathLike = Union[str, os.PathLike]

#: a shard of ``model.safetensors`` holds at most this many bytes (``save_pretrained``'s default, 5 GB)
MAX_SHARD_BYTES = 5 * 10 ** 9

#: files of a tokenizer (and chat template) copied from the import's source folder when it has them
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "vocab.txt",
                   "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json", "preprocessor_config.json")



def to_pretrained(graph: Graph, weights: Mapping[str, torch.Tensor], out: PathLike, config: Mapping[str, Any],
                  source: Optional[PathLike] = None, *, max_shard_bytes: int = MAX_SHARD_BYTES) -> Path:
    """Write ``graph`` with ``weights`` as a Hugging Face model folder ``out`` (``config.json``,
    ``model.safetensors`` or shards with ``model.safetensors.index.json``, ``generation_config.json`` for a causal
    LM, and the tokenizer files of ``source`` when it has them). ``config``: the source model's config as
    ``config.json`` holds it (the import records it in the weights' metadata, ``hf_config``). Returns ``out``."""
    tr = import_transformers()
    model_type, causal = _family(graph, config)
    sizes = SIZES[model_type](graph)
    per_layer = sizes.pop("layer_sizes", None)
    data = _config_data(tr, config, model_type, sizes)
    data["dtype"] = _dtype_name(weights)
    tied = causal and _tied(graph, weights, model_type)
    data["tie_word_embeddings"] = tied
    out = Path(out)
    cfg, skeleton = _skeleton(tr, model_type, data, per_layer, causal, out)
    state = _state(graph, weights, skeleton, model_type, tied)
    if model_type in FOLD:
        state = FOLD[model_type](graph, state, tied)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(str(out))
    _save_shards(state, out, max_shard_bytes)
    if causal:
        _generation_config(tr, cfg, source, out)
    if source is not None:
        _copy_tokenizer(Path(source), out)
    return out


def _family(graph: Graph, config: Mapping[str, Any]) -> tuple[str, bool]:
    """The source config's ``model_type`` (one :data:`SIZES` knows) and whether it is a causal LM, which the graph
    must agree with (an ``lm_head`` node exactly when it is)."""
    model_type = config.get("model_type")
    if model_type not in SIZES:
        raise ConversionError(f"Hugging Face model type {model_type!r} cannot be exported (supported: "
                              f"{', '.join(SIZES)})")
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.get("architectures") or [])
    if causal != ("lm_head" in graph.nodes):
        raise ConversionError("the graph " + ("has no" if causal else "has an") + " lm_head node but its source "
                              "config says " + ("a causal LM" if causal else "a base model"))
    return str(model_type), causal


def _config_data(tr, config: Mapping[str, Any], model_type: str, sizes: dict) -> dict:
    """The source's config with the graph's ``sizes`` over it (less the keys that name where it came from)."""
    data = {k: v for k, v in config.items() if k not in ("transformers_version", "_name_or_path", "auto_map",
                                                         "layer_sizes")}
    data.update(sizes)
    # a size written under a name the config class maps to another (Qwen3-MoE's num_experts is saved as
    # num_local_experts): the graph's value under the saved name
    aliases = getattr(tr.AutoConfig.for_model(model_type).__class__, "attribute_map", {}) or {}
    for alias, name in aliases.items():
        if alias in sizes and alias != name:
            data[name] = data.pop(alias)
    if getattr(data.get("layer_types"), "__len__", None) and len(data["layer_types"]) != sizes["num_hidden_layers"]:
        data["layer_types"] = list(data["layer_types"])[:sizes["num_hidden_layers"]]
    return data


def _dtype_name(weights: Mapping[str, torch.Tensor]) -> str:
    """The config's ``dtype``: the weights' one floating dtype, ``float32`` when they mix several (or have none)."""
    floating = {t.dtype for t in weights.values() if t.is_floating_point()}
    dtype = next(iter(floating)) if len(floating) == 1 else torch.float32
    return str(dtype).removeprefix("torch.")


def _skeleton(tr, model_type: str, data: dict, per_layer: Optional[list], causal: bool, out: Path) -> tuple:
    """The config and the family's model built from it on the ``meta`` device: the family's own class, or, where
    the layers' sizes differ, the per-layer classes of ``modeling_archgraph.py`` written into ``out``."""
    if per_layer is not None:
        return _per_layer_model(model_type, data, per_layer, causal, out)
    cfg = _config(tr, model_type, data)
    auto = tr.AutoModelForCausalLM if causal else tr.AutoModel
    with torch.device("meta"):
        skeleton = auto.from_config(cfg)
    cfg.architectures = [type(skeleton).__name__]
    return cfg, skeleton


def _copy_tokenizer(source: Path, out: Path) -> None:
    """Copy the :data:`TOKENIZER_FILES` that ``source`` has into ``out``."""
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)


def _config(tr, model_type: str, data: dict):
    """The family's config with the graph's sizes; one its class validates away (transformers checks some
    sizes, such as the hidden size being a multiple of the heads) is a :class:`ConversionError` saying why."""
    try:
        return tr.AutoConfig.for_model(**data)
    except Exception as err:    # noqa: BLE001 - transformers' validators raise their own error classes
        first = str(err).strip().splitlines()[-1].strip() if str(err).strip() else type(err).__name__
        raise ConversionError(f"the {model_type} config refuses the graph's sizes: {first}") from None


# ---- sizes -------------------------------------------------------------------------------------------------------

def _attentions(graph: Graph) -> list[str]:
    return [nid for nid, n in graph.nodes.items() if isinstance(n, Attention)]


def _uniform(name: str, values: list, hint: str = "") -> Any:
    if len(set(values)) > 1:
        raise ConversionError(f"the layers' {name} differ ({values}): the family's own class needs one value for "
                              f"every layer (archgraph prune --uniform keeps them equal){hint}")
    return values[0]


_Spec = TypeVar("_Spec", bound=NodeSpec)


def _node(graph: Graph, nid: str, kind: type[_Spec]) -> _Spec:
    """Node ``nid`` of the graph, which the family's layout says is a ``kind`` node."""
    node = graph.nodes[nid]
    if not isinstance(node, kind):
        raise ConversionError(f"'{nid}' is a {node.op} node where the family has a {kind.__name__.lower()}", node=nid)
    return node


def _dims(graph: Graph) -> list[tuple[int, int, int, int]]:
    """``(hidden, heads, head_dim, kv_heads)`` of every attention node, in order."""
    return [attention_dims(_node(graph, a, Attention), graph.input_shapes(a)) for a in _attentions(graph)]


def _heads(graph: Graph) -> tuple[int, int, int, int]:
    """``(hidden, heads, kv_heads, head_dim)``, the same in every attention node."""
    dims = _dims(graph)
    d, h, hd, kv = (_uniform(n, [x[i] for x in dims]) for i, n in
                    enumerate(("hidden sizes", "head counts", "head sizes", "kv head counts")))
    return d, h, kv, hd


def _width(graph: Graph, pattern: str, layers: int) -> int:
    return _uniform("MLP widths", [_node(graph, pattern.format(i), Linear).out_features for i in range(layers)])


def _vocab(graph: Graph, embedding: str) -> int:
    tokens = graph.input_shapes(embedding)[0]
    if not is_tokens(tokens):
        raise ConversionError(f"'{embedding}' does not read token ids", node=embedding)
    return tokens.vocab


def _llama_sizes(graph: Graph) -> dict:
    """The config's sizes; where the layers' head counts, kv heads or MLP widths differ, also ``layer_sizes``
    (one dict of the three per layer, for the modeling file)."""
    dims = _dims(graph)
    d = _uniform("hidden sizes", [x[0] for x in dims])
    hd = _uniform("head sizes", [x[2] for x in dims])
    n = len(dims)
    layers = [{"num_attention_heads": h, "num_key_value_heads": kv,
               "intermediate_size": _node(graph, f"layers_{i}_mlp_gate_proj", Linear).out_features}
              for i, (_, h, _, kv) in enumerate(dims)]
    sizes = {"hidden_size": d, "num_hidden_layers": n, **layers[0], "head_dim": hd,
             "vocab_size": _vocab(graph, "embed_tokens")}
    if any(layer != layers[0] for layer in layers):
        sizes["layer_sizes"] = layers
        sizes.update({k: max(layer[k] for layer in layers) for k in layers[0]})
    return sizes


def _fixed_head_dim(family: str, d: int, h: int, hd: int) -> None:
    if h * hd != d:
        raise ConversionError(f"{family} needs head_dim x heads = hidden size; here {hd} x {h} != {d} (heads "
                              f"pruned or the stream widened apart from them): its class cannot express it")


def _gpt2_sizes(graph: Graph) -> dict:
    d, h, _, hd = _heads(graph)
    _fixed_head_dim("GPT-2", d, h, hd)
    n = len(_attentions(graph))
    width = _width(graph, "h_{}_mlp_c_fc", n)
    return {"n_embd": d, "n_layer": n, "n_head": h, "n_inner": None if width == 4 * d else width,
            "vocab_size": _vocab(graph, "wte"), "n_positions": graph.shape("wpe")[0]}


def _bert_sizes(graph: Graph) -> dict:
    d, h, _, hd = _heads(graph)
    _fixed_head_dim("BERT", d, h, hd)
    n = len(_attentions(graph))
    return {"hidden_size": d, "num_hidden_layers": n, "num_attention_heads": h,
            "intermediate_size": _width(graph, "encoder_layer_{}_intermediate_dense", n),
            "vocab_size": _vocab(graph, "embeddings_word_embeddings"),
            "max_position_embeddings": graph.shape("embeddings_position_embeddings")[0]}


def _vit_sizes(graph: Graph) -> dict:
    d, h, _, hd = _heads(graph)
    _fixed_head_dim("ViT", d, h, hd)
    n = len(_attentions(graph))
    sizes = {"hidden_size": d, "num_hidden_layers": n, "num_attention_heads": h,
             "intermediate_size": _width(graph, "layers_{}_mlp_fc1", n)}
    if "pooler_dense" in graph.nodes:
        sizes["pooler_output_size"] = _node(graph, "pooler_dense", Linear).out_features
    return sizes


#: model type -> (the config's expert count, its expert width, its dense MLP width or None: every layer sparse)
MOE_FIELDS = {"mixtral": ("num_local_experts", "intermediate_size", None),
              "qwen3_moe": ("num_experts", "moe_intermediate_size", "intermediate_size"),
              "olmoe": ("num_experts", "intermediate_size", None)}


def _moe_sizes(model_type: str) -> Callable[[Graph], dict]:
    """A mixture-of-experts family's sizes: Llama's attention sizes (every layer alike) and the ``moe`` nodes'
    expert count, top k and expert width (every sparse layer alike: the family's class has one of each);
    Qwen3-MoE's dense layers (``mlp_only_layers``) their own width."""
    experts_key, width_key, dense_key = MOE_FIELDS[model_type]

    def sizes(graph: Graph) -> dict:
        d, h, kv, hd = _heads(graph)
        n = len(_attentions(graph))
        moe = {i: _node(graph, f"layers_{i}_mlp", MoE) for i in range(n) if f"layers_{i}_mlp" in graph.nodes}
        if not moe:
            raise ConversionError(f"the graph has no moe node (layers_<i>_mlp): it is not a {model_type} model")
        dense = [i for i in range(n) if i not in moe]
        if dense and dense_key is None:
            raise ConversionError(f"{model_type} has a mixture of experts in every layer; layers {dense} of the "
                                  f"graph have none")
        for nid, node in ((f"layers_{i}_mlp", m) for i, m in moe.items()):
            if getattr(node, "expert_ramp", None) is not None:
                raise ConversionError(f"'{nid}' still masks its new experts (expert_ramp): the {model_type} router "
                                      f"has no mask; train until the mask is 1 (or remove the field) first",
                                      node=nid)
        normalize = _uniform("routers' normalize", [m.normalize for m in moe.values()])
        activation = _uniform("expert activations", [m.activation for m in moe.values()])
        out = {"hidden_size": d, "num_hidden_layers": n, "num_attention_heads": h, "num_key_value_heads": kv,
               "head_dim": hd, "vocab_size": _vocab(graph, "embed_tokens"), "hidden_act": activation,
               experts_key: _uniform("expert counts", [m.num_experts for m in moe.values()]),
               "num_experts_per_tok": _uniform("top k", [m.top_k for m in moe.values()]),
               width_key: _uniform("expert widths", [m.hidden for m in moe.values()])}
        if model_type == "mixtral":
            if not normalize:
                raise ConversionError("Mixtral's router always renormalises its top k; the graph's moe nodes have "
                                      "normalize: false")
        else:
            out["norm_topk_prob"] = normalize
        if dense_key is not None:   # Qwen3-MoE: the dense layers named, whatever step the source had
            out["mlp_only_layers"], out["decoder_sparse_step"] = dense, 1
        if dense and dense_key is not None:   # (dense layers without a key were refused above)
            out[dense_key] = _uniform("dense MLP widths",
                                      [_node(graph, f"layers_{i}_mlp_gate_proj", Linear).out_features for i in dense])
        return out
    return sizes


def _gemma_fold(graph: Graph, state: dict[str, torch.Tensor], tied: bool) -> dict[str, torch.Tensor]:
    """Gemma's class scales the embedding by ``sqrt(hidden_size)`` itself; a graph whose stream was resized keeps
    its import's scale ``s``. The ratio ``c = s / sqrt(hidden_size)`` is folded into the table; a tied head reads
    that table too, so the final norm's gain ``1 + w`` is divided by ``c`` (``w' = (1 + w) / c - 1``): the same
    function up to the dtype's rounding."""
    scale = _node(graph, "embed_tokens", Embedding).scale
    key = next(k for k in state if k.endswith("embed_tokens.weight"))
    table, prefix = state[key], key[:-len("embed_tokens.weight")]
    d = table.shape[1]
    if scale is None:
        raise ConversionError("Gemma's class scales the embedding by sqrt(hidden_size), but the graph's "
                              "embed_tokens has no scale", node="embed_tokens")
    c = scale / float(torch.tensor(d ** 0.5, dtype=table.dtype))
    if c == 1.0:
        return state
    state[key] = table * c
    if tied:
        norm = state[prefix + "norm.weight"]
        state[prefix + "norm.weight"] = ((1.0 + norm.double()) / c - 1.0).to(norm.dtype)
    return state


#: model type -> the config fields read off the graph
SIZES: dict[str, Callable[[Graph], dict]] = {
    "llama": _llama_sizes, "qwen2": _llama_sizes, "mistral": _llama_sizes, "qwen3": _llama_sizes,
    "phi3": _llama_sizes, "olmo2": _llama_sizes, "gpt2": _gpt2_sizes, "bert": _bert_sizes, "vit": _vit_sizes,
    "gemma2": _llama_sizes, "gemma3_text": _llama_sizes, **{t: _moe_sizes(t) for t in MOE_FIELDS}}

#: model type -> what the graph holds and the family's class computes itself, folded into the tensors
FOLD: dict[str, Callable] = {"gemma2": _gemma_fold, "gemma3_text": _gemma_fold}

#: model type -> the graph's embedding node (its table is the tied head's)
EMBEDDING = {"llama": "embed_tokens", "qwen2": "embed_tokens", "mistral": "embed_tokens", "qwen3": "embed_tokens",
             "phi3": "embed_tokens", "olmo2": "embed_tokens", "gpt2": "wte", "gemma2": "embed_tokens",
             "gemma3_text": "embed_tokens", "mixtral": "embed_tokens", "qwen3_moe": "embed_tokens",
             "olmoe": "embed_tokens"}


def _tied(graph: Graph, weights: Mapping[str, torch.Tensor], model_type: str) -> bool:
    """Whether the head is tied to the embedding: ``tied_to`` in the graph, or (a graph whose head was untied)
    the two tables still equal."""
    head, table = weights.get("lm_head.weight"), weights.get(f"{EMBEDDING.get(model_type)}.weight")
    if getattr(graph.nodes.get("lm_head"), "tied_to", None) == EMBEDDING.get(model_type):
        if head is not None and table is not None and head is not table and not torch.equal(head, table):
            raise ConversionError("the graph ties lm_head to its embedding, but the weights give the two different "
                                  "values: the family's class would hold one tensor for both", node="lm_head")
        return True
    return (head is not None and table is not None and "lm_head.bias" not in weights
            and head.shape == table.shape and bool(torch.equal(head, table)))


# ---- per-layer sizes: a modeling file beside the weights ------------------------------------------------------

#: model type -> (transformers module, config class, base model class, causal LM class, decoder layer class)
FAMILY_CLASSES = {
    "llama": ("llama", "LlamaConfig", "LlamaModel", "LlamaForCausalLM", "LlamaDecoderLayer"),
    "qwen2": ("qwen2", "Qwen2Config", "Qwen2Model", "Qwen2ForCausalLM", "Qwen2DecoderLayer"),
    "mistral": ("mistral", "MistralConfig", "MistralModel", "MistralForCausalLM", "MistralDecoderLayer"),
    "qwen3": ("qwen3", "Qwen3Config", "Qwen3Model", "Qwen3ForCausalLM", "Qwen3DecoderLayer"),
    "phi3": ("phi3", "Phi3Config", "Phi3Model", "Phi3ForCausalLM", "Phi3DecoderLayer"),
    "olmo2": ("olmo2", "Olmo2Config", "Olmo2Model", "Olmo2ForCausalLM", "Olmo2DecoderLayer"),
    "gemma2": ("gemma2", "Gemma2Config", "Gemma2Model", "Gemma2ForCausalLM", "Gemma2DecoderLayer"),
    "gemma3_text": ("gemma3", "Gemma3TextConfig", "Gemma3TextModel", "Gemma3ForCausalLM", "Gemma3DecoderLayer"),
}

MODELING_FILE = "modeling_archgraph.py"

MODELING_SOURCE = '''"""{family} with per-layer sizes, written by archgraph's export (`archgraph export --hf`).

The family's own classes, except that each decoder layer is built from the config with its own entry of
`layer_sizes` (num_attention_heads, num_key_value_heads, intermediate_size) written over it: a model pruned or grown
layer by layer. Load it with `AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`.
"""
import copy

from torch import nn
from transformers.models.{module}.configuration_{module} import {config}
from transformers.models.{module}.modeling_{module} import {base}, {causal}, {layer}


class Archgraph{config}({config}):
    model_type = "archgraph_{model_type}"

    def __init__(self, layer_sizes=None, **kwargs):
        self.layer_sizes = list(layer_sizes or [])
        super().__init__(**kwargs)

    def for_layer(self, index):
        """This config with layer `index`'s sizes."""
        config = copy.deepcopy(self)
        for key, value in self.layer_sizes[index].items():
            setattr(config, key, value)
        return config


class Archgraph{base}({base}):
    config_class = Archgraph{config}

    def __init__(self, config):
        super().__init__(config)
        self.layers = nn.ModuleList([{layer}(config.for_layer(i), i) for i in range(config.num_hidden_layers)])
        self.post_init()


class Archgraph{causal}({causal}):
    config_class = Archgraph{config}

    def __init__(self, config):
        super().__init__(config)
        self.model = Archgraph{base}(config)
        self.post_init()
'''


def _per_layer_model(model_type: str, data: dict, per_layer: list[dict], causal: bool, out: Path):
    """``(config, skeleton)`` of a model whose layers' sizes differ: the family's classes with each decoder layer
    built at its own sizes, in a modeling file written to ``out`` (``auto_map`` in the config names it, as
    heterogeneous models on the hub do)."""
    if model_type not in FAMILY_CLASSES:
        raise ConversionError(f"the layers' sizes differ and the {model_type} family has no per-layer modeling file "
                              f"(families with one: {', '.join(FAMILY_CLASSES)}); archgraph prune --uniform keeps "
                              f"them equal")
    import importlib.util
    import sys
    module, config_cls, base, causal_cls, layer = FAMILY_CLASSES[model_type]
    source = MODELING_SOURCE.format(family=config_cls.removesuffix("Config"), module=module, config=config_cls,
                                    base=base, causal=causal_cls, layer=layer, model_type=model_type)
    out.mkdir(parents=True, exist_ok=True)
    (out / MODELING_FILE).write_text(source)
    name = f"archgraph_modeling_{model_type}_{abs(hash(str(out)))}"
    spec = importlib.util.spec_from_file_location(name, out / MODELING_FILE)
    if spec is None or spec.loader is None:
        raise ConversionError(f"cannot load the modeling file written to {out / MODELING_FILE}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    config_class = getattr(mod, f"Archgraph{config_cls}")
    model_class = getattr(mod, f"Archgraph{causal_cls if causal else base}")
    data = {k: v for k, v in data.items() if k != "model_type"}
    cfg = config_class(layer_sizes=per_layer, **data)
    stem = MODELING_FILE.removesuffix(".py")
    cfg.auto_map = {"AutoConfig": f"{stem}.Archgraph{config_cls}", "AutoModel": f"{stem}.Archgraph{base}",
                    "AutoModelForCausalLM": f"{stem}.Archgraph{causal_cls}"}
    cfg.architectures = [model_class.__name__]
    with torch.device("meta"):
        skeleton = model_class(cfg)
    return cfg, skeleton


# ---- tensors -----------------------------------------------------------------------------------------------------

def _state(graph: Graph, weights: Mapping[str, torch.Tensor], skeleton, model_type: str,
           tied: bool) -> dict[str, torch.Tensor]:
    """Every tensor of ``skeleton``'s state dict (a model on ``meta``), from the graph's weights."""
    prefix = skeleton.base_model_prefix + "."
    has_base = any(k.startswith(prefix) for k in skeleton.state_dict())
    special = SPECIAL.get(model_type, {})
    out: dict[str, torch.Tensor] = {}
    for key, want in skeleton.state_dict().items():
        if tied and key == "lm_head.weight":
            continue
        inner = key[len(prefix):] if has_base and key.startswith(prefix) else key
        if inner.startswith("pooler.") and "pooler_dense" not in graph.nodes:   # a graph without the pooler
            continue
        if inner == "embeddings.token_type_embeddings.weight":
            # BERT: the import folds token type 0's row into the position table; rows of zeros keep the function
            out[key] = torch.zeros(want.shape, dtype=weights["embeddings_position_embeddings.weight"].dtype)
            continue
        try:
            tensor = _special(special, inner, graph, weights)
        except KeyError:
            tensor = None
        if tensor is None:
            tensor = _generic(inner, graph, weights)
        if tensor is None:
            raise ConversionError(f"no weight of the graph for the {model_type} tensor {key!r}: the graph is not "
                                  f"laid out as its import wrote it (node ids are the module paths)")
        if tuple(tensor.shape) != tuple(want.shape):
            raise ConversionError(f"the {model_type} tensor {key!r} is {list(want.shape)} with the graph's sizes, "
                                  f"but the graph's weight is {list(tensor.shape)}")
        out[key] = tensor.contiguous()
    return out


def _generic(inner: str, graph: Graph, weights: Mapping[str, torch.Tensor]) -> Optional[torch.Tensor]:
    parts = inner.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        nid, rest = "_".join(parts[:cut]), ".".join(parts[cut:])
        if nid in graph.nodes and f"{nid}.{rest}" in weights:
            return weights[f"{nid}.{rest}"]
    return None


def _special(table, inner: str, graph: Graph, weights) -> Optional[torch.Tensor]:
    for suffix, make in table.items():
        if inner.endswith(suffix):
            return make(inner[:-len(suffix)].rstrip(".").replace(".", "_"), weights)
    return None


def _gpt2_qkv(kind: str):
    def make(layer: str, w):
        parts = [w[f"{layer}_attn.{p}_proj.{kind}"] for p in "qkv"]
        return torch.cat(parts, 0).t() if kind == "weight" else torch.cat(parts, 0)
    return make


def _fused(node: str, parts: tuple[str, ...]):
    def make(layer: str, w):
        return torch.cat([w[f"{layer}_{node}{part}.weight"] for part in parts], 0)
    return make


#: a ``moe`` node's tensors as the installed transformers' expert classes hold them: the router ``gate.weight``
#: ``[E, D]``, the experts fused ``experts.gate_up_proj`` ``[E, 2F, D]`` (gate first) and ``experts.down_proj``
#: ``[E, D, F]``
MOE_TENSORS: dict[str, Callable] = {
    "mlp.gate.weight": lambda p, w: w[f"{p}_mlp.router.weight"],
    "mlp.experts.gate_up_proj": lambda p, w: torch.cat([w[f"{p}_mlp.gate_proj"], w[f"{p}_mlp.up_proj"]], 1),
    "mlp.experts.down_proj": lambda p, w: w[f"{p}_mlp.down_proj"],
}

SPECIAL: dict[str, dict[str, Callable]] = {
    "mixtral": MOE_TENSORS, "qwen3_moe": MOE_TENSORS, "olmoe": MOE_TENSORS,
    "phi3": {   # fused projections, cut in three and two by the import
        "self_attn.qkv_proj.weight": _fused("self_attn", (".q_proj", ".k_proj", ".v_proj")),
        "mlp.gate_up_proj.weight": _fused("mlp", ("_gate_proj", "_up_proj")),
    },
    "gpt2": {
        "attn.c_attn.weight": _gpt2_qkv("weight"), "attn.c_attn.bias": _gpt2_qkv("bias"),
        "attn.c_proj.weight": lambda p, w: w[f"{p}_attn.o_proj.weight"].t(),
        "attn.c_proj.bias": lambda p, w: w[f"{p}_attn.o_proj.bias"],
        "mlp.c_fc.weight": lambda p, w: w[f"{p}_mlp_c_fc.weight"].t(),
        "mlp.c_proj.weight": lambda p, w: w[f"{p}_mlp_c_proj.weight"].t(),
    },
    "bert": {
        **{f"attention.self.{hf}.{k}": (lambda ours, k: lambda p, w: w[f"{p}_attention.{ours}_proj.{k}"])(ours, k)
           for hf, ours in (("query", "q"), ("key", "k"), ("value", "v")) for k in ("weight", "bias")},
        "attention.output.dense.weight": lambda p, w: w[f"{p}_attention.o_proj.weight"],
        "attention.output.dense.bias": lambda p, w: w[f"{p}_attention.o_proj.bias"],
    },
    "vit": {
        "embeddings.cls_token": lambda p, w: w["embeddings_cls_token.weight"].reshape(1, 1, -1),
        "embeddings.position_embeddings": lambda p, w: w["embeddings_position_embeddings.weight"].unsqueeze(0),
    },
}


# ---- files -------------------------------------------------------------------------------------------------------

def _save_shards(state: dict[str, torch.Tensor], out: Path, max_shard_bytes: int) -> None:
    """``model.safetensors``, or past ``max_shard_bytes`` shards ``model-0000i-of-0000n.safetensors`` with
    ``model.safetensors.index.json`` (``save_pretrained``'s layout)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    meta = {"format": "pt"}
    for old in out.glob("model*.safetensors*"):
        old.unlink()
    if len(shards) == 1:
        _write(shards[0], out / "model.safetensors", meta)
        return
    total = sum(t.numel() * t.element_size() for t in state.values())
    index: dict[str, dict[str, Any]] = {"metadata": {"total_size": total}, "weight_map": {}}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        _write(shard, out / name, meta)
        index["weight_map"].update({k: name for k in shard})
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _write(tensors: dict[str, torch.Tensor], path: Path, meta: dict) -> None:
    with open(path, "wb") as fh:     # tensor by tensor: no second copy of the model in memory
        write_safetensors(tensors, fh, meta)


def _generation_config(tr, cfg, source: Optional[PathLike], out: Path) -> None:
    if source is not None and (Path(source) / "generation_config.json").is_file():
        shutil.copyfile(Path(source) / "generation_config.json", out / "generation_config.json")
        return
    tr.GenerationConfig.from_model_config(cfg).save_pretrained(str(out))
