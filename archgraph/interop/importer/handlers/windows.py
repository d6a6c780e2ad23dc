"""Importing window attention: torchvision's Swin (v1 and v2) and MaxViT, as ``window_attention`` nodes.

The handler table keeps these modules whole (they are leaves of the fx trace; torchvision's are matched by name)
and each is converted from its parameters:

* Swin's ``ShiftedWindowAttention`` (``ShiftedWindowAttentionV2``) reads a channels-last ``[N, H, W, C]`` view of
  an image: one ``window_attention`` node on the image (``qkv`` split into ``q_proj``/``k_proj``/``v_proj``, ``proj``
  as ``o_proj``; v1's ``relative_position_bias_table``, v2's ``cpb_mlp`` and ``logit_scale`` with ``cosine``), the
  shift as torchvision applies it (none along an axis the window covers);
* Swin's patch merging (the fx-wrapped ``_patch_merging_pad``) is a ``pad`` to even sizes (when needed), four
  ``subsample`` nodes and a ``concat``, so its channels stay visible to the channel analysis;
* MaxViT's ``PartitionAttentionLayer`` cuts ``[N, C, H, W]`` into windows (or a grid), runs a pre-norm attention
  and MLP block on the tokens and puts them back. Norms, linears, activations and residual adds act on each token
  alone, so they commute with the partition: the layer becomes ``layernorm -> window_attention (grid for 'grid') ->
  add`` and ``layernorm -> 1x1 conv -> activation -> 1x1 conv -> add`` on the image;
* archgraph's own ``WindowAttention`` (a built graph imported back) gives its node back.

Any other use of these modules' internals is an error naming the module, as everywhere in the importer.
"""
from __future__ import annotations

import torch
from torch import nn

from ....fx import layers
from .. import table
from ..arguments import module_state, pair
from ..values import CF, CL, Val
from .norms import layernorm_node
from .sequences import activation_node

#: torchvision's classes, matched by name (the table never imports torchvision for them)
SWIN = "torchvision.models.swin_transformer."
MAXVIT = "torchvision.models.maxvit."


def _fields(c, num_heads: int, head_dim: int, channels: int, **fields) -> dict:
    """The node's fields, defaults left out (``head_dim`` when it is ``C // num_heads``)."""
    if head_dim * num_heads != channels:
        fields["head_dim"] = head_dim
    return {"num_heads": num_heads, **{k: v for k, v in fields.items() if v is not None}}


def _check_index(c, index: torch.Tensor, window: tuple[int, int], what: str) -> None:
    if not torch.equal(index.reshape(-1).cpu(), layers.WindowAttention.position_index(*window)):
        raise c.fail(f"its {what} is not the relative position index of a {list(window)} window; only "
                     f"torchvision's own index is supported")


# ---- Swin ---------------------------------------------------------------------------------------------------------

@table.module(SWIN + "ShiftedWindowAttention", SWIN + "ShiftedWindowAttentionV2")
def swin_attention(c, n, m, x):
    """``ShiftedWindowAttention`` / ``ShiftedWindowAttentionV2`` on a channels-last image: one node."""
    x = c.tensor(x)
    if x.layout != CL:
        raise c.fail(f"{type(m).__name__} reads a channels-last [N, H, W, C] image, got a tensor of per-sample "
                     f"shape {list(c.expected(x))}")
    ch, h, w = c.shape(x)
    window = tuple(int(s) for s in m.window_size)
    v2 = hasattr(m, "cpb_mlp")
    _check_index(c, m.relative_position_index, window, "relative_position_index")
    state = _swin_projections(m, v2)
    state.update(_swin_v2_bias(c, m, window) if v2 else
                 {"relative_position_bias_table": m.relative_position_bias_table})
    fields = _swin_fields(c, m, ch, window, _swin_shift(m, (h, w), window), v2)
    out = c.emit(None, "window_attention", [x.node], state, **fields)
    if m.dropout:
        out = c.emit(f"{n.target}.dropout", "dropout", [out], p=float(m.dropout))
    return Val(out, CL)


def _swin_shift(m, size: tuple[int, int], window: tuple[int, ...]) -> tuple[int, ...]:
    """The shift as torchvision applies it: none along an axis the window covers (after padding to whole
    windows)."""
    padded = tuple(-(-size[a] // window[a]) * window[a] for a in (0, 1))
    return tuple(0 if window[a] >= padded[a] else int(m.shift_size[a]) for a in (0, 1))


def _swin_projections(m, v2: bool) -> dict:
    """``qkv`` split into ``q_proj``/``k_proj``/``v_proj``, ``proj`` as ``o_proj`` (v2 has no key bias: torchvision
    zeroes it)."""
    q, k, v = m.qkv.weight.chunk(3)
    state = {"q_proj.weight": q, "k_proj.weight": k, "v_proj.weight": v, "o_proj.weight": m.proj.weight}
    if m.qkv.bias is not None:
        qb, kb, vb = m.qkv.bias.chunk(3)
        state.update({"q_proj.bias": qb, "v_proj.bias": vb, **({} if v2 else {"k_proj.bias": kb})})
    if m.proj.bias is not None:
        state["o_proj.bias"] = m.proj.bias
    return state


def _swin_v2_bias(c, m, window: tuple[int, ...]) -> dict:
    """v2's continuous position bias: ``cpb_mlp`` (checked to be torchvision's) and ``logit_scale``."""
    mlp = m.cpb_mlp
    if not (len(mlp) == 3 and isinstance(mlp[0], nn.Linear) and isinstance(mlp[1], nn.ReLU) and
            isinstance(mlp[2], nn.Linear) and mlp[2].bias is None and mlp[0].in_features == 2):
        raise c.fail("its cpb_mlp is not Linear(2, hidden), ReLU, Linear(hidden, heads, bias=False)")
    expected = layers.WindowAttention.coords_table(*window).to(m.relative_coords_table)
    if not torch.equal(m.relative_coords_table, expected):
        raise c.fail("its relative_coords_table is not torchvision's log-spaced table of the window")
    return {"cpb_mlp.0.weight": mlp[0].weight, "cpb_mlp.0.bias": mlp[0].bias,
            "cpb_mlp.2.weight": mlp[2].weight, "logit_scale": m.logit_scale}


def _swin_fields(c, m, ch: int, window: tuple[int, ...], shift: tuple[int, ...], v2: bool) -> dict:
    """The ``window_attention`` node's fields for a Swin attention, defaults left out."""
    heads = int(m.num_heads)
    bias, qkv_bias = m.proj.bias is not None, m.qkv.bias is not None
    hidden = m.cpb_mlp[0].out_features if v2 else 512
    return _fields(c, heads, ch // heads, ch, window_size=pair(window),
                   shift_size=pair(shift) if any(shift) else None, position_bias="mlp" if v2 else None,
                   cpb_hidden=None if hidden == 512 else hidden, cosine=True if v2 else None, bias=bias,
                   qkv_bias=None if qkv_bias == bias else qkv_bias, dropout=float(m.attention_dropout) or None)


@table.functions_of("subsample")
def f_subsample(c, n, x, *args, **kwargs):
    """archgraph's own ``subsample``, and Swin's patch merging (``_patch_merging_pad`` of a channels-last image:
    pad to even sizes, the four 2x2 phases concatenated along the channels)."""
    if n.target is layers.subsample:
        return _own_subsample(c, x, *args, **kwargs)
    x = c.tensor(x)
    if x.layout != CL:
        raise c.fail(f"patch merging reads a channels-last [N, H, W, C] image, got a tensor of per-sample shape "
                     f"{list(c.expected(x))}")
    _, h, w = c.shape(x)
    src = x.node
    if h % 2 or w % 2:
        src = c.emit(None, "pad", [src], padding=[0, w % 2, 0, h % 2], value=0.0)
    phases = [c.emit(None, "subsample", [src], stride=2, offset=pair(offset))
              for offset in ((0, 0), (1, 0), (0, 1), (1, 1))]
    return Val(c.emit(None, "concat", phases), CL)


def _own_subsample(c, x, stride=(2, 2), offset=(0, 0)):
    return Val(c.emit(None, "subsample", [c.cf(x, 3).node], stride=pair(stride), offset=pair(offset)))


# ---- MaxViT -------------------------------------------------------------------------------------------------------

@table.module(MAXVIT + "PartitionAttentionLayer")
def maxvit_partition_attention(c, n, m, x):
    """``PartitionAttentionLayer``: ``x + attention(norm(x))`` then ``x + mlp(norm(x))`` on the image, the attention
    a ``window_attention`` over its windows (``partition_type`` 'window') or its grid ('grid')."""
    x = c.cf(x, 3)
    ch, h, w = c.shape(x)
    path = n.target
    norm, attn, attn_drop = _parts(c, m.attn_layer, (nn.LayerNorm, None, nn.Dropout), "attn_layer")
    ln2, fc1, act, fc2, mlp_drop = _parts(c, m.mlp_layer, (nn.LayerNorm, nn.Linear, None, nn.Linear, nn.Dropout),
                                          "mlp_layer")
    grid = m.partition_type == "grid"
    size = int(attn.size)
    if attn.max_seq_len != size * size or size != (m.g if grid else m.p):
        raise c.fail(f"its attention's {attn.max_seq_len} tokens are not a {size}x{size} partition")
    spacing = (m.p, m.p) if grid else None
    if h % size or w % size or (grid and (h // size, w // size) != spacing):
        raise c.fail(f"a {'grid' if grid else 'window'} partition of size {size} (every {m.p} positions) does not "
                     f"fit the {h}x{w} positions")
    _check_index(c, attn.relative_position_index, (size, size), "relative_position_index")
    heads, head_dim = int(attn.n_heads), int(attn.head_dim)
    q, k, v = attn.to_qkv.weight.chunk(3)
    state = {"q_proj.weight": q, "k_proj.weight": k, "v_proj.weight": v, "o_proj.weight": attn.merge.weight,
             "relative_position_bias_table": attn.relative_position_bias_table}
    if attn.to_qkv.bias is not None:
        qb, kb, vb = attn.to_qkv.bias.chunk(3)
        state.update({"q_proj.bias": qb, "k_proj.bias": kb, "v_proj.bias": vb})
    if attn.merge.bias is not None:
        state["o_proj.bias"] = attn.merge.bias
    qkv_bias = attn.to_qkv.bias is not None
    scale = float(attn.scale_factor)
    fields = _fields(c, heads, head_dim, ch, window_size=size, grid=True if grid else None,
                     scale=None if scale == head_dim ** -0.5 else scale,
                     bias=attn.merge.bias is not None,
                     qkv_bias=None if qkv_bias == (attn.merge.bias is not None) else qkv_bias)
    x_cl = Val(x.node, CL)
    y = layernorm_node(c, f"{path}.attn_layer.0", x_cl, norm.normalized_shape, norm.eps, norm.weight, norm.bias)
    y = Val(c.emit(f"{path}.attn_layer.1", "window_attention", [y.node], state, **fields), CL)
    y = _residual(c, path, x_cl, _drop(c, f"{path}.attn_layer.2", attn_drop, y), m.stochastic_dropout, "add")
    z = layernorm_node(c, f"{path}.mlp_layer.0", y, ln2.normalized_shape, ln2.eps, ln2.weight, ln2.bias)
    z = activation_node(c, f"{path}.mlp_layer.2", act, _conv1x1(c, f"{path}.mlp_layer.1", fc1, z))
    z = _drop(c, f"{path}.mlp_layer.4", mlp_drop, _conv1x1(c, f"{path}.mlp_layer.3", fc2, z))
    return Val(_residual(c, path, y, z, m.stochastic_dropout, "add_1").node, CF)


def _parts(c, seq, kinds, what: str) -> list:
    if not isinstance(seq, nn.Sequential) or len(seq) != len(kinds) or \
            any(k is not None and type(p) is not k for p, k in zip(seq, kinds)):
        raise c.fail(f"its {what} is not torchvision's ({', '.join(k.__name__ if k else '...' for k in kinds)})")
    return list(seq)


def _conv1x1(c, hint: str, lin: nn.Linear, x: Val) -> Val:
    """A Linear over the tokens of a channels-last image: a 1x1 convolution."""
    state = module_state(lin)
    state["weight"] = state["weight"].reshape(lin.out_features, lin.in_features, 1, 1)
    return Val(c.emit(hint, "conv2d", [x.node], state, out_channels=lin.out_features, kernel_size=1,
                      bias=lin.bias is not None), CL)


def _drop(c, hint: str, module: nn.Dropout, x: Val) -> Val:
    return x if not module.p else Val(c.emit(hint, "dropout", [x.node], p=float(module.p)), x.layout)


def _residual(c, path: str, x: Val, branch: Val, depth, name: str) -> Val:
    """``x + stochastic_depth(branch)`` (no stochastic depth node when its probability is 0)."""
    if depth.p:
        branch = Val(c.emit(f"{path}.stochastic_dropout", "stochastic_depth", [branch.node], p=float(depth.p),
                            mode=depth.mode), branch.layout)
    return Val(c.emit(f"{path}.{name}", "add", [x.node, branch.node]), x.layout)


# ---- archgraph's own module ---------------------------------------------------------------------------------------

@table.module(layers.WindowAttention)
def own_window_attention(c, n, m: layers.WindowAttention, x):
    x = c.cf(x, 3)
    fields = _fields(c, m.num_heads, m.head_dim, m.dim, window_size=pair(m.window_size),
                     shift_size=pair(m.shift_size) if any(m.shift_size) else None, grid=m.grid or None,
                     position_bias=None if m.position_bias == "table" else m.position_bias,
                     cpb_hidden=None if m.cpb_hidden == 512 else m.cpb_hidden, cosine=m.cosine or None,
                     scale=None if m.scale == m.head_dim ** -0.5 else m.scale, bias=m.o_proj.bias is not None,
                     qkv_bias=None if (m.q_proj.bias is None) == (m.o_proj.bias is None) else m.q_proj.bias is not None,
                     dropout=m.dropout or None)
    return Val(c.emit(None, "window_attention", [x.node], module_state(m), **fields))
