"""Hugging Face ``transformers`` models -> (Graph, weights): a local checkpoint folder (:func:`from_pretrained`),
a model in memory (:func:`from_model`) or a small config with random weights (:func:`from_config`; nothing is
downloaded). :mod:`archgraph.interop.hf_export` writes a graph back as a checkpoint folder.

Hugging Face's models do not trace with torch.fx (transformers 5 has no fx tracer of its own any more, and their
mask, cache and rotary code is Python on optional arguments), so each supported family is read module by module,
from the structure its modeling file defines: GPT-2 (``Conv1D`` weights ``[in, out]``, transposed to linears),
BERT (post-norm; zero token-type ids are a constant row added to the position table), Llama (RMSNorm, SwiGLU as
``mul``, grouped-query attention, rotary positions, Llama 3.x rope scaling; Qwen2, Qwen3 with its q/k norms,
Mistral and Phi-3 with its fused projections laid out alike; Mixtral, Qwen3-MoE and OLMoE with ``moe`` nodes),
Gemma 2 and 3 (norms with a gain of ``1 + weight``, a scaled embedding, soft-capping, sliding-window layers) and
ViT; BERT's and ViT's poolers are a second output. A tied LM head is a linear ``tied_to`` the embedding. An
import is exact or it fails: :func:`from_model` runs the model and the graph on the same input in float64 and raises
:class:`~archgraph.errors.ConversionError` when they differ (:func:`max_error` measures it).

>>> from archgraph.interop import hf                                  # doctest: +SKIP
>>> graph, weights = hf.from_config("llama", seq_len=8)              # doctest: +SKIP
>>> [n.op for n in graph.nodes.values()][:4]                          # doctest: +SKIP
['embedding', 'rmsnorm', 'attention', 'add']
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..compat import import_transformers
from ..errors import ConversionError
from ..fx.builder import build
from ..fx.weights import load_into
from ..graph import Graph, TokenShape
from .importer.builder import GraphBuilder

#: small sizes per model type for :func:`from_config` (overridden by its keyword arguments)
SMALL: dict[str, dict[str, Any]] = {
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=100, bos_token_id=0, eos_token_id=0),
    "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100,
                 max_position_embeddings=64),
    "llama": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64, vocab_size=100, max_position_embeddings=64),
    "qwen2": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64, vocab_size=100, max_position_embeddings=64),
    "mistral": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=64, vocab_size=100, max_position_embeddings=64),
    "mixtral": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=48, num_local_experts=4, num_experts_per_tok=2, vocab_size=100,
                    max_position_embeddings=64),
    "qwen3_moe": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                      intermediate_size=64, moe_intermediate_size=24, num_experts=4, num_experts_per_tok=2,
                      norm_topk_prob=True, vocab_size=100, max_position_embeddings=64),
    "olmoe": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=24, num_experts=4, num_experts_per_tok=2, vocab_size=100,
                  max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2),
    "phi3": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=64, vocab_size=100, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                 eos_token_id=2),
    "olmo2": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64, vocab_size=100, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2),
    "qwen3": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                  intermediate_size=64, vocab_size=100, max_position_embeddings=64),
    "vit": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
                patch_size=8),
    "gemma2": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                   intermediate_size=64, vocab_size=100, max_position_embeddings=64, sliding_window=4,
                   query_pre_attn_scalar=16, pad_token_id=0, eos_token_id=1, bos_token_id=2),
    "gemma3_text": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=8, intermediate_size=64, vocab_size=100, max_position_embeddings=64,
                        sliding_window=4, query_pre_attn_scalar=16, layer_types=["sliding_attention",
                                                                                 "full_attention"],
                        pad_token_id=0, eos_token_id=1, bos_token_id=2),
}

#: Hugging Face activation names -> (op, fields)
ACTIVATIONS: dict[str, tuple[str, dict]] = {
    "gelu": ("gelu", {}), "gelu_new": ("gelu", {"approximate": "tanh"}),
    "gelu_pytorch_tanh": ("gelu", {"approximate": "tanh"}), "relu": ("relu", {}), "silu": ("silu", {}),
    "swish": ("silu", {}), "tanh": ("tanh", {}),
}


def from_config(model_type_or_config, seq_len: int = 16, *, lm_head: bool = False, seed: int = 0,
                check: bool = True, **sizes) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Build a randomly initialised model from a config and convert it (see :func:`from_model`).

    ``model_type_or_config``: a model type (``"gpt2"``, ``"bert"``, ``"llama"``, ``"qwen2"``, ``"qwen3"``,
    ``"mistral"``, ``"mixtral"``, ``"qwen3_moe"``, ``"olmoe"``, ``"phi3"``, ``"vit"``: built with the
    :data:`SMALL` sizes updated by ``sizes``) or a ``PretrainedConfig``. ``lm_head``: a causal language model's
    logits (built with ``tie_word_embeddings=False`` unless ``sizes`` say otherwise; a tied head imports tied) instead
    of the last hidden
    state."""
    return from_model(build_model(model_type_or_config, lm_head=lm_head, seed=seed, **sizes), seq_len, check=check)


def build_model(model_type_or_config, *, lm_head: bool = False, seed: int = 0, **sizes) -> nn.Module:
    """A randomly initialised Hugging Face model in eval mode (``AutoModel``, or ``AutoModelForCausalLM`` with
    ``lm_head``), SDPA attention."""
    tr = import_transformers()
    if isinstance(model_type_or_config, str):
        if model_type_or_config not in WALKERS:
            raise ConversionError(f"Hugging Face model type {model_type_or_config!r} is not supported (supported: "
                                  f"{', '.join(WALKERS)})", field="model")
        untied = {"tie_word_embeddings": False} if lm_head else {}
        overrides = {**untied, **SMALL[model_type_or_config], **sizes}
        config = tr.AutoConfig.for_model(model_type_or_config, **overrides)
    else:
        config = model_type_or_config
    auto = tr.AutoModelForCausalLM if lm_head else tr.AutoModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return auto.from_config(config, attn_implementation=attention_implementation(config)).eval()


def attention_implementation(config) -> str:
    """The attention functions a model is read with: SDPA, or the eager one for Gemma (whose soft-capping SDPA
    does not do)."""
    return "eager" if config.model_type in GEMMA else "sdpa"


def from_model(model: nn.Module, seq_len: int = 16, *, check: bool = True) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Convert a Hugging Face model of a supported type to a graph and weights ``{"<node_id>.<param>": tensor}``.

    Text models read ``seq_len`` token ids (the graph input ``input_ids: {shape: [seq_len], vocab: V}``) and output
    the last hidden state ``[seq_len, D]`` (a causal LM: its logits); ViT reads ``pixel_values`` ``[3, H, W]`` at
    the config's image size and outputs the last hidden state; a BERT or ViT model with a pooler has its output as
    a second graph output (``pooler_activation``: the first token through ``pooler.dense`` and the activation, as
    ``pooler_output``). Optional forward arguments
    (attention masks, token types, caches) are the defaults: no padding, token type 0. ``check``: compare with the
    model in float64 (see :func:`max_error`) and raise when they differ by more than ``1e-9 x max(1, max |y|)``."""
    graph, weights = _convert(model, int(seq_len))
    if check:
        _check(model, seq_len)
    return graph, weights


def from_pretrained(path, seq_len: Optional[int] = None, dtype=None, *,
                    check: bool = True) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Read a local folder as ``save_pretrained`` writes it (``config.json`` and ``*.safetensors``, sharded or
    not) into a graph and weights. A checkpoint saved from a ``...ForCausalLM`` (``...LMHeadModel``) is read with
    its LM head (the graph outputs the logits); any other with ``AutoModel`` (the last hidden state).

    ``seq_len``: the graph's declared number of tokens (summary and MACs use it; the built graph runs on any
    length up to a position table's rows, or on any length with rotary positions); by default the model's
    position table (GPT-2's ``n_positions``, BERT's ``max_position_embeddings``), for rotary families its
    ``max_position_embeddings`` up to :data:`DEFAULT_ROTARY_LEN`. ``dtype``: the weights' dtype (a ``torch.dtype``
    or its name; by default the checkpoint's own, so bfloat16 stays bfloat16). The weights share the model's
    tensors: nothing is held twice. ``check``: the float64 comparison of :func:`from_model`, run on an affordable
    copy (see :func:`check_copy`).

    >>> graph, weights = from_pretrained("path/to/Qwen2.5-0.5B")         # doctest: +SKIP
    """
    tr = import_transformers()
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ConversionError("not a Hugging Face model folder: it has no config.json", file=str(folder))
    if not any(folder.glob("*.safetensors")):
        raise ConversionError("the folder has no *.safetensors weights (save_pretrained writes them)",
                              file=str(folder))
    config = tr.AutoConfig.from_pretrained(str(folder))
    if config.model_type not in WALKERS:
        raise ConversionError(f"Hugging Face model type {config.model_type!r} is not supported (supported: "
                              f"{', '.join(WALKERS)})", file=str(folder / "config.json"))
    auto = tr.AutoModelForCausalLM if is_causal_lm(config) else tr.AutoModel
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = auto.from_pretrained(str(folder), dtype=dtype or "auto",
                                     attn_implementation=attention_implementation(config)).eval()
    t = int(seq_len) if seq_len is not None else default_seq_len(config)
    graph, weights = _convert(model, t, copy=False)
    if check:
        _check(check_copy(model), min(t, CHECK_LEN))
    return graph, weights


#: the declared length of a rotary model read without ``seq_len`` at most (it runs on any length)
DEFAULT_ROTARY_LEN = 4096
#: the number of tokens the float64 check of an import runs on at most
CHECK_LEN = 16
#: models with more parameters are checked on a copy of their first :data:`CHECK_LAYERS` layers
CHECK_PARAMS = 50_000_000
CHECK_LAYERS = 2
CHECK_VOCAB = 1024


def is_causal_lm(config) -> bool:
    """Whether a config was saved from a causal language model (its ``architectures``)."""
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in (getattr(config, "architectures", None) or []))


def default_seq_len(config) -> int:
    """A model's declared length when none is given: its position table's rows, or for rotary families its
    ``max_position_embeddings`` up to :data:`DEFAULT_ROTARY_LEN` (16 where the config has none)."""
    if config.model_type == "gpt2":
        return int(config.n_positions)
    if config.model_type == "vit":
        return 16   # unused: ViT reads images
    n = int(getattr(config, "max_position_embeddings", 16) or 16)
    return n if config.model_type == "bert" else min(n, DEFAULT_ROTARY_LEN)


def check_copy(model: nn.Module) -> nn.Module:
    """The model the float64 check runs on: ``model`` itself up to :data:`CHECK_PARAMS` parameters; above, a copy
    of its first :data:`CHECK_LAYERS` layers with the embedding, the final norm and the head cut to their first
    :data:`CHECK_VOCAB` tokens (the check draws token ids below that), sharing ``model``'s tensors, so the check of
    a billion-parameter model costs tens of MB in float64 instead of eight bytes per parameter. Every layer of a
    family is read by the same code, and a token's row of the table is read alike for every token, so the copy
    checks the structure; the other layers' and tokens' weights are the checkpoint's tensors themselves."""
    if sum(p.numel() for p in model.parameters()) <= CHECK_PARAMS:
        return model
    full: Any = model.config     # a Hugging Face config: its fields are set at run time
    config = copy.deepcopy(full)
    layers = min(CHECK_LAYERS, config.num_hidden_layers)
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:layers]
    vocab = min(CHECK_VOCAB, config.vocab_size)
    config.vocab_size = vocab
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if isinstance(getattr(config, key, None), int) and getattr(config, key) >= vocab:
            setattr(config, key, None)
    with torch.device("meta"):
        small = type(model)(config)
    own = small.state_dict()
    state = model.state_dict()
    tables = {k for k, t in state.items() if t.dim() >= 1 and t.shape[0] == full.vocab_size}
    small.load_state_dict({k: state[k][:vocab] if k in tables else state[k] for k in own}, strict=False, assign=True)
    tie = getattr(small, "tie_weights", None)
    if getattr(full, "tie_word_embeddings", False) and tie is not None:
        tie()
    for name, buf in list(small.named_buffers()):     # non-persistent buffers (rotary frequencies): the model's
        if buf.is_meta:
            owner, _, leaf = name.rpartition(".")
            small.get_submodule(owner).register_buffer(leaf, model.get_buffer(name), persistent=False)
    return small.eval()


def _check(model: nn.Module, seq_len: int) -> None:
    err, scale = max_error(model, seq_len)
    if not err <= 1e-9 * max(1.0, scale):
        raise ConversionError(f"the converted {type(model).__name__} differs from the model by {err:.3g} in "
                              f"float64 (max |y| {scale:.3g}): its structure is not the one archgraph reads")


def _convert(model: nn.Module, seq_len: int, copy: bool = True) -> tuple[Graph, dict[str, torch.Tensor]]:
    model_type: Any = getattr(getattr(model, "config", None), "model_type", None)
    walker = WALKERS.get(model_type)
    if walker is None:
        raise ConversionError(f"Hugging Face model type {model_type!r} is not supported (supported: "
                              f"{', '.join(WALKERS)})", field="model")
    base = model.base_model
    b = _Nodes(copy)
    try:
        out = walker(b, base, seq_len)
        if base is not model:
            out = _head(b, model, base, out)
    except AttributeError as err:   # another transformers version names its modules otherwise
        raise ConversionError(f"{type(model).__name__} is not laid out as archgraph reads {model_type} models "
                              f"(transformers 5's modeling file): {err}") from None
    return b.finish(type(model).__name__.lower(), [out] if isinstance(out, str) else list(out))


def max_error(model: nn.Module, seq_len: int = 16, seed: int = 0) -> tuple[float, float]:
    """``(max |model - graph|, max |model|)``: a float64 copy of ``model`` and the graph converted from it, on a
    seeded input of 2 samples.

    Hugging Face computes two things in float32 whatever the model's dtype: Llama's RMSNorm (it casts to float32 and
    back) and the rotary angles. The rotary op computes its angles the same way; the norm is run in the input's
    dtype here (in float32 the two are the same function)."""
    ref = copy.deepcopy(model).double().eval()
    graph, weights = _convert(ref, int(seq_len))
    built = build(graph, dtype=torch.float64)
    load_into(built, weights)
    built.eval()
    name, shape = next(iter(graph.inputs.items()))
    gen = torch.Generator().manual_seed(seed)
    if isinstance(shape, TokenShape):
        x = torch.randint(0, shape.vocab, (2, *shape), generator=gen)
    else:
        x = torch.randn(2, *shape, generator=gen, dtype=torch.float64)
    with torch.no_grad(), _native_rms_norms(ref), _native_routers(ref), _native_softmax(ref):
        out = ref(**{name: x})
        got = built(x)
    if getattr(out, "logits", None) is not None:
        ys = [out.logits]
    else:   # an encoder: its last hidden state, and its pooler's output when the graph has the pooler
        ys = [out.last_hidden_state] + ([out.pooler_output] if len(graph.outputs) > 1 else [])
    gots = list(got) if isinstance(got, (tuple, list)) else [got]
    return (max(float((y - g).abs().max()) for y, g in zip(ys, gots)),
            max(float(y.abs().max()) for y in ys))


@contextlib.contextmanager
def _native_rms_norms(model: nn.Module):
    """Hugging Face's RMSNorms (Llama's, and Gemma's ``1 + weight``) in the input's dtype, not float32."""
    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm") and hasattr(m, "variance_epsilon")]
    gemma = [m for m in model.modules() if type(m).__name__ in ("Gemma2RMSNorm", "Gemma3RMSNorm")]

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    def offset(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight)
    for m in norms:
        m.forward = forward.__get__(m)
    for m in gemma:
        m.forward = offset.__get__(m)
    try:
        yield
    finally:
        for m in norms + gemma:
            del m.forward


@contextlib.contextmanager
def _native_softmax(model: nn.Module):
    """Gemma's eager attention takes its softmax in float32 whatever the dtype; in the float64 check it is taken in
    the input's dtype, as the attention op does (in float32 the two are the same function)."""
    modules: set[Any] = {importlib.import_module(type(m).__module__) for m in model.modules()
               if type(m).__name__ in ("Gemma2Attention", "Gemma3Attention")}
    saved = {mod: mod.eager_attention_forward for mod in modules}

    def eager(module, query, key, value, attention_mask, dropout=0.0, scaling=None, softcap=None, **kwargs):
        rep = module.num_key_value_groups
        k, v = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
        scores = torch.matmul(query, k.transpose(2, 3)) * scaling
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        if attention_mask is not None:
            scores = scores + attention_mask
        weights = torch.softmax(scores, dim=-1)
        return torch.matmul(weights, v).transpose(1, 2).contiguous(), weights
    for mod in modules:
        mod.eager_attention_forward = eager
    try:
        yield
    finally:
        for mod, fn in saved.items():
            mod.eager_attention_forward = fn


# ---- building nodes ------------------------------------------------------------------------------------------------

class _Nodes(GraphBuilder):
    """Graph nodes in the making, through the importer's :class:`~.importer.builder.GraphBuilder` (each node is
    validated and its shape inferred when it is added), with the walkers' helpers for Hugging Face's layers."""

    def emit(self, nid: str, op: str, inputs: list[str], weights: Optional[dict] = None, **fields) -> str:
        return self.add(nid.replace(".", "_"), op, inputs, weights, **fields)

    def linear(self, nid: str, x: str, m: nn.Module) -> str:
        """``nn.Linear``, or GPT-2's ``Conv1D`` (``y = x @ W + b``, ``W`` ``[in, out]``: a linear of ``W.T``), or a
        ``(weight, bias)`` pair."""
        w, bias = m if isinstance(m, tuple) else (_linear_weight(m), getattr(m, "bias", None))
        state = {"weight": w} if bias is None else {"weight": w, "bias": bias}
        return self.emit(nid, "linear", [x], state, out_features=int(w.shape[0]), bias=bias is not None)

    def layernorm(self, nid: str, x: str, m: nn.LayerNorm) -> str:
        if not isinstance(m, nn.LayerNorm):
            raise ConversionError(f"'{nid}' is a {type(m).__name__}, not an nn.LayerNorm", node=nid)
        state = {} if m.weight is None else {"weight": m.weight}
        if m.bias is not None:
            state["bias"] = m.bias
        return self.emit(nid, "layernorm", [x], state, eps=float(m.eps), elementwise_affine=m.weight is not None,
                         bias=m.bias is not None)

    def rmsnorm(self, nid: str, x: str, m: nn.Module) -> str:
        eps = getattr(m, "variance_epsilon", getattr(m, "eps", None))
        if eps is None:
            raise ConversionError(f"'{nid}' is a {type(m).__name__} with no variance_epsilon or eps", node=nid)
        return self.emit(nid, "rmsnorm", [x], {"weight": m.weight}, eps=float(eps))

    def dropout(self, nid: str, x: str, p: float) -> str:
        return x if not p else self.emit(nid, "dropout", [x], p=float(p))

    def activation(self, nid: str, x: str, name) -> str:
        if not isinstance(name, str) or name not in ACTIVATIONS:
            raise ConversionError(f"activation {name!r} is not supported (supported: {', '.join(ACTIVATIONS)})",
                                  node=nid)
        op, fields = ACTIVATIONS[name]
        return self.emit(nid, op, [x], **fields)

    def attention(self, nid: str, x: str, q, k, v, o, num_heads: int, kv_heads: Optional[int] = None,
                  head_dim: Optional[int] = None, extra_state: Optional[dict] = None, **fields) -> str:
        """One ``attention`` node from four projections (linears or ``Conv1D``s, or ``(weight, bias)`` pairs);
        ``extra_state``: its other tensors (Qwen3's ``q_norm.weight``, ``k_norm.weight``)."""
        parts = dict(zip(("q_proj", "k_proj", "v_proj", "o_proj"), (q, k, v, o)))
        pairs = {name: p if isinstance(p, tuple) else (_linear_weight(p), getattr(p, "bias", None))
                 for name, p in parts.items()}
        biased = {name for name, (_, bias) in pairs.items() if bias is not None}
        qkv = {"q_proj", "k_proj", "v_proj"}
        if (biased & qkv) not in (set(), qkv):
            raise ConversionError(f"'{nid}': the attention op has biases on all of q/k/v or on none of them; "
                                  f"these have them on {sorted(biased & qkv)} only", node=nid)
        if (biased & qkv) != (qkv if "o_proj" in biased else set()):    # Qwen2: q/k/v biased, o_proj not
            fields["qkv_bias"] = bool(biased & qkv)
        state = {f"{name}.{key}": t for name, (w, bias) in pairs.items()
                 for key, t in (("weight", w), ("bias", bias)) if t is not None}
        state.update(extra_state or {})
        d = self.shapes[x][-1]
        if head_dim is not None and head_dim * num_heads == d:
            head_dim = None
        if kv_heads == num_heads:
            kv_heads = None
        return self.emit(nid, "attention", [x], state, num_heads=num_heads, head_dim=head_dim, kv_heads=kv_heads,
                         bias="o_proj" in biased, **fields)

    def finish(self, name: str, outputs, keep=None) -> tuple[Graph, dict[str, torch.Tensor]]:
        """The graph, the fields the walkers left ``None`` dropped (the format's defaults)."""
        self.nodes = {k: {f: v for f, v in d.items() if v is not None} for k, d in self.nodes.items()}
        return super().finish(name, outputs, keep)


def _linear_weight(m: nn.Module) -> torch.Tensor:
    if isinstance(m, nn.Linear):
        return m.weight
    if type(m).__name__ == "Conv1D" and hasattr(m, "nf") and isinstance(m.weight, torch.Tensor):  # GPT-2's: [in, out]
        return m.weight.t()
    raise ConversionError(f"a projection of type {type(m).__name__} is not supported (nn.Linear or Conv1D)")


def _tokens(b: _Nodes, t: int, vocab: int, limit: Optional[int] = None) -> str:
    if t <= 0 or (limit is not None and t > limit):
        raise ConversionError(f"seq_len {t} must be between 1 and the model's {limit} positions", field="seq_len")
    return b.input("input_ids", {"shape": [t], "vocab": int(vocab)}, TokenShape((t,), int(vocab)))


def _refuse(condition: bool, message: str) -> None:
    if condition:
        raise ConversionError(message)


# ---- the families ------------------------------------------------------------------------------------------------

def _gpt2(b: _Nodes, base, t: int) -> str:
    cfg = base.config
    _refuse(not cfg.scale_attn_weights or cfg.scale_attn_by_inverse_layer_idx,
            "GPT-2 attention must scale by 1/sqrt(head_dim) (scale_attn_weights=True, "
            "scale_attn_by_inverse_layer_idx=False): the attention op scales so")
    x = _tokens(b, t, cfg.vocab_size, cfg.n_positions)
    x = b.emit("wte", "embedding", [x], {"weight": base.wte.weight}, embedding_dim=cfg.n_embd)
    x = b.emit("wpe", "position_embedding", [x], {"weight": base.wpe.weight[:t]})
    x = b.dropout("drop", x, cfg.embd_pdrop)
    for i, block in enumerate(base.h):
        p, attn = f"h_{i}", block.attn
        _refuse(getattr(attn, "is_cross_attention", False), f"h.{i}: cross-attention is not supported")
        w, bias = _linear_weight(attn.c_attn), attn.c_attn.bias
        q, k, v = ((wp, bp) for wp, bp in zip(w.chunk(3), bias.chunk(3)))
        h = b.layernorm(f"{p}_ln_1", x, block.ln_1)
        h = b.attention(f"{p}_attn", h, q, k, v, attn.c_proj, num_heads=cfg.n_head, causal=True,
                        dropout=float(cfg.attn_pdrop))
        x = b.emit(f"{p}_add_1", "add", [b.dropout(f"{p}_attn_resid_dropout", h, cfg.resid_pdrop), x])
        h = b.layernorm(f"{p}_ln_2", x, block.ln_2)
        h = b.activation(f"{p}_mlp_act", b.linear(f"{p}_mlp_c_fc", h, block.mlp.c_fc), cfg.activation_function)
        h = b.dropout(f"{p}_mlp_dropout", b.linear(f"{p}_mlp_c_proj", h, block.mlp.c_proj), cfg.resid_pdrop)
        x = b.emit(f"{p}_add_2", "add", [h, x])
    return b.layernorm("ln_f", x, base.ln_f)


def _bert(b: _Nodes, base, t: int) -> str | list[str]:
    cfg = base.config
    _refuse(cfg.is_decoder, "a BERT decoder (is_decoder=True) is not supported")
    kind = getattr(cfg, "position_embedding_type", "absolute")
    _refuse(kind != "absolute", f"position_embedding_type={kind!r} is not supported (only absolute)")
    emb = base.embeddings
    x = _tokens(b, t, cfg.vocab_size, cfg.max_position_embeddings)
    x = b.emit("embeddings_word_embeddings", "embedding", [x], {"weight": emb.word_embeddings.weight},
               embedding_dim=cfg.hidden_size)
    # token type 0 everywhere: its row is a constant added at every position
    table = emb.position_embeddings.weight[:t] + emb.token_type_embeddings.weight[0]
    x = b.emit("embeddings_position_embeddings", "position_embedding", [x], {"weight": table})
    x = b.dropout("embeddings_dropout", b.layernorm("embeddings_LayerNorm", x, emb.LayerNorm), cfg.hidden_dropout_prob)
    for i, layer in enumerate(base.encoder.layer):
        p, att = f"encoder_layer_{i}", layer.attention
        _refuse(getattr(layer, "add_cross_attention", False), f"encoder.layer.{i}: cross-attention is not supported")
        h = b.attention(f"{p}_attention", x, att.self.query, att.self.key, att.self.value, att.output.dense,
                        num_heads=cfg.num_attention_heads, dropout=float(cfg.attention_probs_dropout_prob))
        h = b.dropout(f"{p}_attention_output_dropout", h, cfg.hidden_dropout_prob)
        x = b.layernorm(f"{p}_attention_output_LayerNorm", b.emit(f"{p}_attention_add", "add", [h, x]),
                        att.output.LayerNorm)
        h = b.activation(f"{p}_intermediate_act", b.linear(f"{p}_intermediate_dense", x, layer.intermediate.dense),
                         cfg.hidden_act)
        h = b.dropout(f"{p}_output_dropout", b.linear(f"{p}_output_dense", h, layer.output.dense),
                      cfg.hidden_dropout_prob)
        x = b.layernorm(f"{p}_output_LayerNorm", b.emit(f"{p}_output_add", "add", [h, x]), layer.output.LayerNorm)
    return _pooler(b, base, x, "tanh")


def _pooler(b: _Nodes, base, x: str, activation: str) -> str | list[str]:
    """The last hidden state, and with a pooler (BERT's and ViT's ``...Model``) its output too: the first token's
    state through ``pooler.dense`` and the activation (the graph's second output, ``pooler_output``)."""
    if getattr(base, "pooler", None) is None:
        return x
    first = b.emit("pooler_first_token", "token_pool", [x], mode="first")
    return [x, b.activation("pooler_activation", b.linear("pooler_dense", first, base.pooler.dense), activation)]


def _rope(cfg, rope: Optional[dict] = None) -> dict:
    """The attention op's rotary fields from a config's ``rope_parameters`` (or ``rope``, Gemma 3's entry for one
    layer type): ``rope_theta``, and ``rope_scaling`` for Llama 3.x's ``llama3`` and ``linear`` scaling."""
    rope = rope if rope is not None else (getattr(cfg, "rope_parameters", None) or {})
    kind = rope.get("rope_type", "default")
    _refuse(kind not in ("default", "llama3", "linear"),
            f"rope_type {kind!r} is not supported (default, llama3 and linear are)")
    _refuse(rope.get("partial_rotary_factor", 1.0) != 1.0, "a partial rotary embedding is not supported")
    fields: dict[str, Any] = {"rope_theta": float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))}
    if kind == "linear":
        fields["rope_scaling"] = {"rope_type": "linear", "factor": float(rope["factor"])}
    elif kind == "llama3":
        fields["rope_scaling"] = {"rope_type": "llama3", "factor": float(rope["factor"]),
                                  "low_freq_factor": float(rope["low_freq_factor"]),
                                  "high_freq_factor": float(rope["high_freq_factor"]),
                                  "original_max_position_embeddings": int(rope["original_max_position_embeddings"])}
    return fields


def _llama(b: _Nodes, base, t: int) -> str:
    cfg = base.config
    rope = _rope(cfg)
    _refuse(getattr(cfg, "clip_qkv", None) is not None, "clip_qkv (OLMoE's clamp of q, k and v) is not supported")
    x = _tokens(b, t, cfg.vocab_size)
    x = b.emit("embed_tokens", "embedding", [x], {"weight": base.embed_tokens.weight},
               embedding_dim=cfg.hidden_size)
    for i, layer in enumerate(base.layers):
        p, att, mlp = f"layers_{i}", layer.self_attn, layer.mlp
        post_norm = hasattr(layer, "post_feedforward_layernorm")   # OLMo 2: norms after the branches, none before
        h = x if post_norm else b.rmsnorm(f"{p}_input_layernorm", x, layer.input_layernorm)
        qk: dict[str, Any] = {}
        if getattr(att, "q_norm", None) is not None:    # Qwen3: an RMSNorm over each q and k head; OLMo 2: over all
            whole = att.q_norm.weight.shape[0] != getattr(att, "head_dim", -1)
            qk = {"qk_norm": True, "qk_norm_eps": float(att.q_norm.variance_epsilon),
                  "extra_state": {"q_norm.weight": att.q_norm.weight, "k_norm.weight": att.k_norm.weight},
                  **({"qk_norm_span": "all"} if whole else {})}
        q, k, v = _qkv(att, cfg)
        h = b.attention(f"{p}_self_attn", h, q, k, v, att.o_proj,
                        num_heads=cfg.num_attention_heads, kv_heads=cfg.num_key_value_heads,
                        head_dim=getattr(att, "head_dim", None), causal=True, rotary=True, **rope, **qk,
                        dropout=float(cfg.attention_dropout), window=_window(att, cfg))
        if post_norm:
            h = b.rmsnorm(f"{p}_post_attention_layernorm", h, layer.post_attention_layernorm)
        x = b.emit(f"{p}_add_1", "add", [x, b.dropout(f"{p}_resid_attn_dropout", h, _resid_dropout(cfg))])
        h = x if post_norm else b.rmsnorm(f"{p}_post_attention_layernorm", x, layer.post_attention_layernorm)
        if hasattr(mlp, "experts"):   # Mixtral, Qwen3-MoE, OLMoE: a routed mixture of SwiGLU experts
            h = b.dropout(f"{p}_resid_mlp_dropout", _experts(b, f"{p}_mlp", h, mlp, cfg), _resid_dropout(cfg))
            x = b.emit(f"{p}_add_2", "add", [x, h])
            continue
        gate_proj, up_proj = _gate_up(mlp)
        gate = b.activation(f"{p}_mlp_act_fn", b.linear(f"{p}_mlp_gate_proj", h, gate_proj), cfg.hidden_act)
        h = b.emit(f"{p}_mlp_mul", "mul", [gate, b.linear(f"{p}_mlp_up_proj", h, up_proj)])
        h = b.dropout(f"{p}_resid_mlp_dropout", b.linear(f"{p}_mlp_down_proj", h, mlp.down_proj), _resid_dropout(cfg))
        if post_norm:
            h = b.rmsnorm(f"{p}_post_feedforward_layernorm", h, layer.post_feedforward_layernorm)
        x = b.emit(f"{p}_add_2", "add", [x, h])
    return b.rmsnorm("norm", x, base.norm)


def _gemma(b: _Nodes, base, t: int) -> str:
    """Gemma 2 and Gemma 3 (text): the embedding scaled by ``sqrt(hidden_size)``, four RMSNorms per layer with a
    gain of ``1 + weight`` (before and after each branch), queries scaled by ``query_pre_attn_scalar ** -0.5``,
    Gemma 2's attention soft-capping, sliding-window layers (Gemma 3's with their own rotary base) and Gemma 3's
    q/k norms."""
    cfg = base.config
    _refuse(bool(getattr(cfg, "use_bidirectional_attention", False)),
            "use_bidirectional_attention (Gemma 3's bidirectional variant) is not supported")
    x = _tokens(b, t, cfg.vocab_size)
    x = b.emit("embed_tokens", "embedding", [x], {"weight": base.embed_tokens.weight}, embedding_dim=cfg.hidden_size,
               scale=float(base.embed_tokens.embed_scale))
    act = cfg.hidden_activation
    for i, layer in enumerate(base.layers):
        p, att, mlp = f"layers_{i}", layer.self_attn, layer.mlp
        h = _gemma_norm(b, f"{p}_input_layernorm", x, layer.input_layernorm)
        rope = cfg.rope_parameters
        if "rope_type" not in rope:   # Gemma 3: one entry per layer type (the local layers' rope_local_base_freq)
            rope = rope[att.layer_type]
        qk: dict[str, Any] = {}
        if getattr(att, "q_norm", None) is not None:
            qk = {"qk_norm": True, "qk_norm_eps": float(att.q_norm.eps), "qk_norm_offset": 1.0,
                  "extra_state": {"q_norm.weight": att.q_norm.weight, "k_norm.weight": att.k_norm.weight}}
        scale = float(att.scaling)
        h = b.attention(f"{p}_self_attn", h, att.q_proj, att.k_proj, att.v_proj, att.o_proj,
                        num_heads=cfg.num_attention_heads, kv_heads=cfg.num_key_value_heads, head_dim=att.head_dim,
                        causal=True, rotary=True, **_rope(cfg, rope), **qk, dropout=float(cfg.attention_dropout),
                        scale=None if scale == att.head_dim ** -0.5 else scale,
                        softcap=att.attn_logit_softcapping, window=att.sliding_window)
        h = _gemma_norm(b, f"{p}_post_attention_layernorm", h, layer.post_attention_layernorm)
        x = b.emit(f"{p}_add_1", "add", [x, h])
        h = _gemma_norm(b, f"{p}_pre_feedforward_layernorm", x, layer.pre_feedforward_layernorm)
        gate = b.activation(f"{p}_mlp_act_fn", b.linear(f"{p}_mlp_gate_proj", h, mlp.gate_proj), act)
        h = b.emit(f"{p}_mlp_mul", "mul", [gate, b.linear(f"{p}_mlp_up_proj", h, mlp.up_proj)])
        h = b.linear(f"{p}_mlp_down_proj", h, mlp.down_proj)
        h = _gemma_norm(b, f"{p}_post_feedforward_layernorm", h, layer.post_feedforward_layernorm)
        x = b.emit(f"{p}_add_2", "add", [x, h])
    return _gemma_norm(b, "norm", x, base.norm)


def _gemma_norm(b: _Nodes, nid: str, x: str, m: Any) -> str:
    """Gemma's RMSNorm: its gain is ``1 + weight``."""
    return b.emit(nid, "rmsnorm", [x], {"weight": m.weight}, eps=float(m.eps), offset=1.0)


def _window(att, cfg) -> Optional[int]:
    """An attention layer's sliding window: its own ``sliding_window`` (Qwen2's sliding layers), or Mistral's
    config's, which every layer reads."""
    if hasattr(att, "sliding_window"):
        return att.sliding_window or None
    return (getattr(cfg, "sliding_window", None) or None) if cfg.model_type == "mistral" else None


def _resid_dropout(cfg) -> float:
    return float(getattr(cfg, "resid_pdrop", 0.0) or 0.0)    # Phi-3's dropouts on the residual branches


def _qkv(att, cfg):
    """q, k and v projections: Llama's three linears, or Phi-3's fused ``qkv_proj`` cut into three (copies: one
    storage may not hold several weights of a safetensors file)."""
    if not hasattr(att, "qkv_proj"):
        return att.q_proj, att.k_proj, att.v_proj
    w = att.qkv_proj.weight
    nq, nk = cfg.num_attention_heads * att.head_dim, cfg.num_key_value_heads * att.head_dim
    bias = att.qkv_proj.bias
    cuts = ((0, nq), (nq, nq + nk), (nq + nk, nq + 2 * nk))
    return tuple((w[a:z].clone(), None if bias is None else bias[a:z].clone()) for a, z in cuts)


def _gate_up(mlp):
    """The MLP's gate and up projections: Llama's two linears, or Phi-3's fused ``gate_up_proj`` (gate first)."""
    if not hasattr(mlp, "gate_up_proj"):
        return mlp.gate_proj, mlp.up_proj
    w, half = mlp.gate_up_proj.weight, mlp.gate_up_proj.weight.shape[0] // 2
    return (w[:half].clone(), None), (w[half:].clone(), None)


def _experts(b: _Nodes, nid: str, x: str, block, cfg) -> str:
    """A sparse mixture-of-experts block (transformers 5's ``gate`` router ``[E, D]`` and ``experts`` holding
    ``gate_up_proj`` ``[E, 2F, D]`` and ``down_proj`` ``[E, D, F]``) as one ``moe`` node."""
    gate_up, down = block.experts.gate_up_proj, block.experts.down_proj
    hidden = int(down.shape[-1])
    _refuse(cfg.hidden_act not in ("silu", "gelu"), f"{nid}: expert activation {cfg.hidden_act!r} is not supported "
                                                     "(silu or gelu)")
    # Mixtral always renormalises the top k; Qwen3-MoE and OLMoE do when their config's norm_topk_prob says so
    normalize = getattr(block.gate, "norm_topk_prob", True)
    state = {"router.weight": block.gate.weight, "gate_proj": gate_up[:, :hidden], "up_proj": gate_up[:, hidden:],
             "down_proj": down}
    return b.emit(nid, "moe", [x], state, num_experts=int(down.shape[0]), top_k=int(block.gate.top_k),
                  hidden=hidden, normalize=bool(normalize), activation=cfg.hidden_act)


@contextlib.contextmanager
def _native_routers(model: nn.Module):
    """transformers takes a router's softmax in float32 whatever the dtype; in the float64 check it is taken in the
    input's dtype, as the ``moe`` op does (in float32 the two are the same function). The experts run in their
    eager loop (the grouped matmul takes no float64)."""
    routers = [m for m in model.modules() if type(m).__name__.endswith("TopKRouter")]
    configs: dict[int, Any] = {
        id(m.config): m.config for m in model.modules()
        if hasattr(m, "_is_expert_parallel") and hasattr(getattr(m, "config", None), "_experts_implementation")}
    saved = {k: c._experts_implementation for k, c in configs.items()}
    for c in configs.values():
        c._experts_implementation = "eager"

    def forward(self, hidden_states):
        logits = nn.functional.linear(hidden_states.reshape(-1, self.hidden_dim), self.weight)
        top, index = torch.topk(torch.softmax(logits, dim=-1), self.top_k, dim=-1)
        if getattr(self, "norm_topk_prob", True):
            top = top / top.sum(dim=-1, keepdim=True)
        return logits, top, index
    for m in routers:
        m.forward = forward.__get__(m)
    try:
        yield
    finally:
        for m in routers:
            del m.forward
        for k, c in configs.items():
            c._experts_implementation = saved[k]


def _vit(b: _Nodes, base, t: int) -> str | list[str]:
    cfg = base.config
    _refuse(not cfg.qkv_bias, "qkv_bias=False is not supported: the attention op has biases on all four "
                              "projections or on none, and ViT's output projection has one")
    emb = base.embeddings
    _refuse(getattr(emb, "mask_token", None) is not None, "a ViT with a mask token is not supported")
    size = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
    x = b.input("pixel_values", [cfg.num_channels, size, size], (cfg.num_channels, size, size))
    proj = emb.patch_embeddings.projection
    x = b.emit("embeddings_patch_embeddings_projection", "conv2d", [x], dict(proj.state_dict()),
               out_channels=proj.out_channels, kernel_size=list(proj.kernel_size), stride=list(proj.stride),
               bias=proj.bias is not None)
    x = b.emit("embeddings_patch_embeddings", "to_tokens", [x])
    x = b.emit("embeddings_cls_token", "class_token", [x], {"weight": emb.cls_token.reshape(1, -1)})
    x = b.emit("embeddings_position_embeddings", "position_embedding", [x],
               {"weight": emb.position_embeddings.reshape(b.shapes[x])})
    x = b.dropout("embeddings_dropout", x, cfg.hidden_dropout_prob)
    for i, layer in enumerate(base.layers):
        p, att, mlp = f"layers_{i}", layer.attention, layer.mlp
        h = b.layernorm(f"{p}_layernorm_before", x, layer.layernorm_before)
        h = b.attention(f"{p}_attention", h, att.q_proj, att.k_proj, att.v_proj, att.o_proj,
                        num_heads=cfg.num_attention_heads, dropout=float(cfg.attention_probs_dropout_prob))
        x = b.emit(f"{p}_add_1", "add", [b.dropout(f"{p}_dropout", h, layer.dropout.p), x])
        h = b.layernorm(f"{p}_layernorm_after", x, layer.layernorm_after)
        h = b.activation(f"{p}_mlp_activation_fn", b.linear(f"{p}_mlp_fc1", h, mlp.fc1), cfg.hidden_act)
        h = b.dropout(f"{p}_dropout_1", b.linear(f"{p}_mlp_fc2", h, mlp.fc2), layer.dropout.p)
        x = b.emit(f"{p}_add_2", "add", [h, x])
    return _pooler(b, base, b.layernorm("layernorm", x, base.layernorm), cfg.pooler_act)


def _head(b: _Nodes, model: nn.Module, base, x: str) -> str:
    """A causal LM's ``lm_head``; one tied to the embedding (``tie_word_embeddings``) is a linear with
    ``tied_to`` the embedding node, its weight the embedding's tensor itself."""
    head = getattr(model, "lm_head", None)
    if not isinstance(head, nn.Linear):
        raise ConversionError(f"{type(model).__name__}: only a base model or a causal LM with an lm_head is supported")
    embed = base.get_input_embeddings()
    if head.weight is getattr(embed, "weight", None):   # tied: the head reads the embedding's table
        table = "wte" if getattr(model.config, "model_type", None) == "gpt2" else "embed_tokens"
        state = {"weight": b.weights[f"{table}.weight"]}
        if head.bias is not None:
            state["bias"] = head.bias
        node = b.emit("lm_head", "linear", [x], {}, out_features=int(head.weight.shape[0]),
                      bias=head.bias is not None, tied_to=table)
        for key, tensor in state.items():   # the very tensor of the table: one tensor, as in the model
            b.weights[f"{node}.{key}"] = tensor if key == "weight" else tensor.detach().clone()
    else:
        node = b.linear("lm_head", x, head)
    cap = getattr(model.config, "final_logit_softcapping", None)   # Gemma: the logits soft-capped
    return node if cap is None else b.emit("lm_head_softcap", "softcap", [node], cap=float(cap))


#: model type -> the function that reads its base model
#: Qwen2 (biases on q/k/v, not on o_proj) and Mistral (its sliding window an attention `window`) are
#: laid out as Llama is; the mixtures of experts too: Mixtral, Qwen3-MoE (Qwen3's per-head q/k norms; the dense
#: layers its ``decoder_sparse_step`` and ``mlp_only_layers`` make are read as Llama's MLP) and OLMoE (OLMo 2's q/k
#: norms over all heads, its norms before the branches as Llama's)
WALKERS: dict[str, Callable] = {"gpt2": _gpt2, "bert": _bert, "llama": _llama, "qwen2": _llama, "mistral": _llama,
                                "qwen3": _llama, "phi3": _llama, "olmo2": _llama, "mixtral": _llama,
                                "qwen3_moe": _llama, "olmoe": _llama, "vit": _vit, "gemma2": _gemma,
                                "gemma3_text": _gemma}

#: the Gemma model types (read with the eager attention: SDPA does not soft-cap)
GEMMA = ("gemma2", "gemma3_text")

