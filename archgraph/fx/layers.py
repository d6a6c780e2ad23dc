"""The few torch modules the graph format needs that PyTorch does not ship."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an ``N, C, H, W`` tensor at each position (as in ConvNeXt).

    Its ``weight`` and ``bias`` have one entry per channel, like a batchnorm's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class MaskedLayerNorm(nn.Module):
    """A layer norm over the last axis whose channels enter through a mask (MSG's masked growth): ``mask`` (a
    buffer, one entry per channel) weights the mean and variance and multiplies the output. A channel whose mask is
    0 changes nothing, so channels added at 0 keep the function exactly; each training forward pass moves every
    entry ``1 / ramp`` closer to 1, where the norm is ``nn.LayerNorm``'s (same ``weight``, ``bias``, ``eps``).
    """

    mask: torch.Tensor   # a buffer (typed here: nn.Module's __getattr__ says Tensor | Module)

    def __init__(self, num_channels: int, ramp: int, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True):
        super().__init__()
        self.num_channels = num_channels
        self.ramp = int(ramp)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if elementwise_affine and bias else None
        self.register_buffer("mask", torch.ones(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mask.to(x.dtype, copy=True)   # the mask is stepped in place below; autograd keeps this copy
        total = m.sum()
        mean = (x * m).sum(-1, keepdim=True) / total
        centred = x - mean
        var = (centred * centred * m).sum(-1, keepdim=True) / total
        y = centred * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        if self.training:
            with torch.no_grad():
                self.mask.add_(1.0 / self.ramp).clamp_(max=1.0)
        return y * m


class MoE(nn.Module):
    """A routed mixture of SwiGLU experts (the ``moe`` op; Mixtral's, Qwen3-MoE's and OLMoE's block): router
    ``[E, D]``, softmax over the experts, the ``top_k`` most probable picked (and renormalised with ``normalize``),
    each picked expert's ``down @ (act(gate @ x) * (up @ x))`` weighted by its probability. Every expert is computed
    for every token and the unpicked ones weighted by zero: the same function as a routed implementation, simple,
    exportable to ONNX and deterministic, but ``num_experts / top_k`` times the expert MACs. With ``ramp`` the log of
    the ``expert_mask`` buffer is added to the router's scores (an expert at 0 is never picked) and each training
    forward pass moves every entry ``1 / ramp`` closer to 1."""

    expert_mask: torch.Tensor   # a buffer, with ``ramp``

    def __init__(self, dim: int, num_experts: int, hidden: int, top_k: int, normalize: bool = True,
                 activation: str = "silu", ramp: int | None = None):
        super().__init__()
        self.dim, self.num_experts, self.hidden, self.top_k = dim, num_experts, hidden, top_k
        self.normalize, self.activation, self.ramp = normalize, activation, ramp
        self.router = nn.Linear(dim, num_experts, bias=False)
        bound_in, bound_hidden = dim ** -0.5, hidden ** -0.5   # nn.Linear's default initialisation, per expert
        self.gate_proj = nn.Parameter(torch.empty(num_experts, hidden, dim).uniform_(-bound_in, bound_in))
        self.up_proj = nn.Parameter(torch.empty(num_experts, hidden, dim).uniform_(-bound_in, bound_in))
        self.down_proj = nn.Parameter(torch.empty(num_experts, dim, hidden).uniform_(-bound_hidden, bound_hidden))
        if ramp is not None:
            self.register_buffer("expert_mask", torch.ones(num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.router(x)
        if self.ramp is not None:
            logits = logits + torch.log(self.expert_mask.to(logits.dtype, copy=True))
            if self.training:
                with torch.no_grad():
                    self.expert_mask.add_(1.0 / self.ramp).clamp_(max=1.0)
        # the probabilities in float32 at least, as the Hugging Face families compute them
        probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
        top, idx = torch.topk(probs, self.top_k, dim=-1)
        if self.normalize:
            top = top / top.sum(dim=-1, keepdim=True)
        weights = torch.zeros_like(probs).scatter(-1, idx, top).to(x.dtype)          # [B, T, E]
        act = getattr(nn.functional, self.activation)   # silu or gelu
        h = act(torch.einsum("btd,efd->btef", x, self.gate_proj)) * torch.einsum("btd,efd->btef", x, self.up_proj)
        y = torch.einsum("btef,edf->bted", h, self.down_proj)
        return torch.einsum("bte,bted->btd", weights, y)


class Scale(nn.Module):
    """A learnable per-channel multiplier (ConvNeXt's layer scale, timm's ``LayerScale`` on tokens); ``weight`` has
    one entry per channel: the first axis of ``[C, H, W]`` and ``[F]``, the last of a sequence ``[T, D]``. With
    ``bias`` a learnable ``bias`` (starting at zero) is added; with ``shared`` both hold one number for every
    channel (timm's ``LearnableAffineBlock``)."""

    def __init__(self, num_channels: int, init: float = 1.0, bias: bool = False, shared: bool = False):
        super().__init__()
        self.num_channels = num_channels
        self.init = init
        self.shared = shared
        size = 1 if shared else num_channels
        self.weight = nn.Parameter(torch.full((size,), float(init)))
        self.bias = nn.Parameter(torch.zeros(size)) if bias else None

    def per_channel(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:   # a sequence [B, T, D]: its channels are last
            return t
        return t.view(-1, *([1] * (x.dim() - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.per_channel(self.weight, x)
        return y if self.bias is None else y + self.per_channel(self.bias, x)


class GRN(nn.Module):
    """Global response normalisation of an ``N, C, H, W`` tensor (ConvNeXt-V2; computed as timm's
    ``GlobalResponseNorm`` computes it): ``x + bias + weight * x * g / (mean_c(g) + eps)``, ``g`` the channels' L2
    norms over the positions; ``weight`` and ``bias`` have one entry per channel and start at zero."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.norm(p=2, dim=(2, 3), keepdim=True)
        n = g / (g.mean(dim=1, keepdim=True) + self.eps)
        return x + torch.addcmul(self.bias.view(1, -1, 1, 1), self.weight.view(1, -1, 1, 1), x * n)


class StochasticDepth(nn.Module):
    """Drops the input of a whole sample (``row``) or batch (``batch``) with probability ``p`` in training, scaling
    the kept ones by ``1 / (1 - p)``; the identity in eval mode (as ``torchvision.ops.StochasticDepth``)."""

    def __init__(self, p: float = 0.0, mode: str = "row"):
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.dim() - 1) if self.mode == "row" else [1] * x.dim()
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle of an ``N, C, H, W`` tensor."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def channel_slice(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Channels ``start .. stop - 1`` of ``x`` (axis 1)."""
    return x[:, start:stop]


class RMSNorm(nn.RMSNorm):
    """``torch.nn.RMSNorm`` written out (``x * rsqrt(mean(x**2) + eps) * weight`` over the last axis), so ONNX
    opset 17 can export it; same parameters and the same values. ``offset``: the gain is ``offset + weight``
    (Gemma's norms: ``1 + weight``, their weights stored as the difference from 1)."""

    def __init__(self, normalized_shape: int | list[int] | tuple[int, ...], eps: float | None = None,
                 elementwise_affine: bool = True, offset: float = 0.0):
        super().__init__(normalized_shape, eps=eps, elementwise_affine=elementwise_affine)
        self.offset = float(offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.eps if self.eps is not None else torch.finfo(x.dtype).eps
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        if self.weight is None:
            return y
        return y * (self.weight + self.offset) if self.offset else y * self.weight


class ScaledEmbedding(nn.Embedding):
    """``nn.Embedding`` whose rows are multiplied by ``scale`` (Gemma's ``sqrt(hidden_size)``, the number rounded to
    the table's dtype first, as Gemma's ``embed_scale`` is)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, scale: float = 1.0):
        super().__init__(num_embeddings, embedding_dim)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        table = self.weight
        return nn.functional.embedding(x, table) * torch.tensor(self.scale, dtype=table.dtype, device=table.device)


def softcap(x: torch.Tensor, cap: float) -> torch.Tensor:
    """``cap * tanh(x / cap)``: ``x`` squashed into ``(-cap, cap)`` (Gemma 2's and 3's final logit soft-capping)."""
    return torch.tanh(x / cap) * cap


class Attention(nn.Module):
    """Multi-head self-attention as in nanoGPT and Hugging Face's Llama: ``q_proj``, ``k_proj``, ``v_proj`` and
    ``o_proj`` linears, heads a view ``[B, H, T, head_dim]`` of one projection, kv heads repeated in ``repeat_kv``
    order (query head ``h`` reads kv head ``h // (num_heads // kv_heads)``), ``F.scaled_dot_product_attention``.
    ``rotary``: Llama's rotary position embeddings on q and k (``rotate_half``; angles in float32, as Llama's)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, kv_heads: int, causal: bool = False,
                 bias: bool = True, dropout: float = 0.0, rotary: bool = False, rope_theta: float = 10000.0,
                 qkv_bias: bool | None = None, rope_scaling: dict | None = None, qk_norm_eps: float | None = None,
                 qk_norm_span: str = "head", window: int | None = None, softcap: float | None = None,
                 scale: float | None = None, qk_norm_offset: float = 0.0):
        super().__init__()
        qkv_bias = bias if qkv_bias is None else qkv_bias
        self.dim, self.num_heads, self.head_dim, self.kv_heads = dim, num_heads, head_dim, kv_heads
        self.causal, self.dropout, self.rotary, self.rope_theta = causal, dropout, rotary, rope_theta
        self.rope_scaling, self.qk_norm_eps, self.qk_norm_span = rope_scaling, qk_norm_eps, qk_norm_span
        self.window, self.softcap, self.scale, self.qk_norm_offset = window, softcap, scale, qk_norm_offset
        self.q_proj = nn.Linear(dim, num_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(num_heads * head_dim, dim, bias=bias)
        if qk_norm_eps is not None:   # Qwen3: an RMSNorm over each head's features of q and of k; OLMo 2: over all
            whole = qk_norm_span == "all"
            self.q_norm = RMSNorm(num_heads * head_dim if whole else head_dim, eps=qk_norm_eps, offset=qk_norm_offset)
            self.k_norm = RMSNorm(kv_heads * head_dim if whole else head_dim, eps=qk_norm_eps, offset=qk_norm_offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k = self.q_proj(x), self.k_proj(x)
        if self.qk_norm_eps is not None and self.qk_norm_span == "all":
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(b, t, self.num_heads, self.head_dim)
        k = k.view(b, t, self.kv_heads, self.head_dim)
        if self.qk_norm_eps is not None and self.qk_norm_span != "all":
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.rotary:
            q, k = self.rotate(q, t), self.rotate(k, t)
        if self.kv_heads != self.num_heads:
            k = k.repeat_interleave(self.num_heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.num_heads // self.kv_heads, dim=1)
        dropout = self.dropout if self.training else 0.0
        if self.softcap is None:
            mask = None if self.window is None else self.allowed(t, x.device)
            y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                           is_causal=self.causal and mask is None, scale=self.scale)
        else:   # Gemma 2: the scores capped at +-softcap (cap * tanh(s / cap)) before the mask and the softmax
            scale = self.scale if self.scale is not None else self.head_dim ** -0.5
            scores = torch.tanh(q.matmul(k.transpose(-2, -1)) * scale / self.softcap) * self.softcap
            if self.causal or self.window is not None:
                scores = scores.masked_fill(~self.allowed(t, x.device), float("-inf"))
            low = scores.dtype in (torch.float16, torch.bfloat16)   # softmax in float32 there, as Hugging Face's
            weights = torch.softmax(scores.float() if low else scores, dim=-1).to(v.dtype)
            y = nn.functional.dropout(weights, dropout, self.training).matmul(v)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))

    def allowed(self, t: int, device: torch.device | str | None) -> torch.Tensor:
        """``[t, t]``: whether query ``i`` reads key ``j``: ``j <= i`` when causal, and with a ``window`` only the
        ``window`` latest positions, itself included (``i - j < window``, Hugging Face's sliding-window mask)."""
        i = torch.arange(t, device=device)[:, None]
        j = torch.arange(t, device=device)[None, :]
        keep = j <= i if self.causal else torch.ones(t, t, dtype=torch.bool, device=device)
        return keep & (i - j < self.window) if self.window is not None else keep

    def inv_freq(self, device: torch.device | str | None) -> torch.Tensor:
        """The rotation frequencies ``rope_theta**(-2i/head_dim)`` in float32, rescaled by ``rope_scaling`` as
        Hugging Face's ``_compute_llama3_parameters`` (or ``linear``) does."""
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device).float() / self.head_dim
        inv_freq = 1.0 / (self.rope_theta ** exponents)
        scaling = self.rope_scaling
        if not scaling:
            return inv_freq
        factor = scaling["factor"]
        if scaling["rope_type"] == "linear":
            return inv_freq / factor
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / high) * ~(wavelen > old / low)
        return torch.where(medium, smoothed, scaled)

    def rotate(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """``x * cos + rotate_half(x) * sin`` on ``[B, H, T, head_dim]``: the pair ``(i, i + head_dim/2)`` turns by
        ``t * rope_theta**(-2i/head_dim)`` at position ``t``."""
        half = self.head_dim // 2
        angles = torch.arange(t, device=x.device).float()[:, None] * self.inv_freq(x.device)[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin


class PositionEmbedding(nn.Module):
    """A learned ``[T, D]`` table added to a ``[B, t, D]`` input of any length ``t`` up to ``T`` (its first ``t``
    rows: a model built for ``T`` tokens also reads shorter sequences)."""

    def __init__(self, num_positions: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_positions, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        if not torch.jit.is_tracing() and t > self.weight.shape[0]:
            raise ValueError(f"a sequence of {t} positions is longer than the position table's "
                             f"{self.weight.shape[0]} rows (the graph's declared length)")
        return x + self.weight[:t]


class ClassToken(nn.Module):
    """Prepends ``tokens`` learned tokens (``weight``, ``[tokens, D]``) to a ``[B, T, D]`` input."""

    def __init__(self, dim: int, tokens: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(tokens, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.weight.expand(x.shape[0], -1, -1), x], dim=1)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W] -> [B, H*W, C]``: an image's positions as tokens."""
    return x.flatten(2).transpose(1, 2)


def token_pool(x: torch.Tensor, mode: str = "mean", skip: int = 0) -> torch.Tensor:
    """``[B, T, D] -> [B, D]``: the mean over the tokens, or the first token, after the first ``skip``."""
    return x[:, skip:].mean(dim=1) if mode == "mean" else x[:, skip]
def _averaging_matrix(size: int, out: int, like: torch.Tensor) -> torch.Tensor:
    """``[out, size]``: row ``i`` averages the window adaptive pooling uses for output ``i``
    (``floor(i * size / out) .. ceil((i + 1) * size / out) - 1``)."""
    m = torch.zeros(out, size, dtype=like.dtype, device=like.device)
    for i in range(out):
        start, stop = (i * size) // out, -((-(i + 1) * size) // out)
        m[i, start:stop] = 1.0 / (stop - start)
    return m


def adaptive_avg_pool2d_exportable(x: torch.Tensor, output_size: int | Sequence[int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d`` written as two fixed averaging matrix products where the output does not divide
    the input (the TorchScript ONNX exporter refuses that case); the same function up to float rounding."""
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % oh == 0 and w % ow == 0:
        return torch.nn.functional.adaptive_avg_pool2d(x, (oh, ow))
    return _averaging_matrix(h, oh, x) @ x @ _averaging_matrix(w, ow, x).t()


def subsample(x: torch.Tensor, stride: Sequence[int] = (2, 2), offset: Sequence[int] = (0, 0)) -> torch.Tensor:
    """``x[:, :, a::s, b::s]`` of an ``N, C, H, W`` tensor: every ``stride``-th position from ``offset`` on."""
    return x[:, :, offset[0]::stride[0], offset[1]::stride[1]]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside the windows of an ``N, C, H, W`` image (the ``window_attention`` op): Swin's
    shifted windows (``shift``, zero padding to whole windows), MaxViT's grid (``grid``), a relative position bias
    (``position_bias`` ``table`` or Swin v2's ``mlp``), Swin v2's cosine attention (``cosine``). The computation
    follows torchvision's ``shifted_window_attention`` step by step, on ``q_proj``/``k_proj``/``v_proj``/``o_proj``
    linears (the logit scale is clamped at ``math.log(100.0)``, written out so the class needs only torch)."""

    relative_position_index: torch.Tensor   # buffers, with a position bias
    relative_coords_table: torch.Tensor

    def __init__(self, dim: int, num_heads: int, head_dim: int, window_size: Sequence[int] = (7, 7),
                 shift_size: Sequence[int] = (0, 0),
                 grid: bool = False, position_bias: str = "table", cpb_hidden: int = 512, cosine: bool = False,
                 scale: float | None = None, bias: bool = True, qkv_bias: bool | None = None, dropout: float = 0.0):
        super().__init__()
        qkv_bias = bias if qkv_bias is None else qkv_bias
        self.dim, self.num_heads, self.head_dim = dim, num_heads, head_dim
        self.window_size, self.shift_size = tuple(window_size), tuple(shift_size)
        self.grid, self.position_bias, self.cpb_hidden, self.cosine = grid, position_bias, cpb_hidden, cosine
        self.scale = head_dim ** -0.5 if scale is None else scale
        self.dropout = dropout
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(dim, inner, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, inner, bias=qkv_bias and not cosine)   # Swin v2 has no key bias
        self.v_proj = nn.Linear(dim, inner, bias=qkv_bias)
        self.o_proj = nn.Linear(inner, dim, bias=bias)
        wh, ww = self.window_size
        if position_bias != "none":
            self.register_buffer("relative_position_index", self.position_index(wh, ww), persistent=False)
        if position_bias == "table":
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        elif position_bias == "mlp":
            self.cpb_mlp = nn.Sequential(nn.Linear(2, cpb_hidden), nn.ReLU(), nn.Linear(cpb_hidden, num_heads,
                                                                                          bias=False))
            self.register_buffer("relative_coords_table", self.coords_table(wh, ww), persistent=False)
        if cosine:
            self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((num_heads, 1, 1))))

    @staticmethod
    def position_index(wh: int, ww: int) -> torch.Tensor:
        """``[wh*ww * wh*ww]``: for tokens ``i, j`` of a window (row-major), the row of the relative position bias table
        of their offset (Swin's and MaxViT's ``relative_position_index``)."""
        coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += wh - 1
        rel[:, :, 1] += ww - 1
        rel[:, :, 0] *= 2 * ww - 1
        return rel.sum(-1).flatten()


    @staticmethod
    def coords_table(wh: int, ww: int) -> torch.Tensor:
        """``[1, 2*wh-1, 2*ww-1, 2]``: Swin v2's log-spaced window offsets, the input of its position bias MLP, in
        float32 as torchvision computes them."""
        dh = torch.arange(-(wh - 1), wh, dtype=torch.float32)
        dw = torch.arange(-(ww - 1), ww, dtype=torch.float32)
        table = torch.stack(torch.meshgrid([dh, dw], indexing="ij")).permute(1, 2, 0).contiguous().unsqueeze(0)
        table[:, :, :, 0] /= wh - 1
        table[:, :, :, 1] /= ww - 1
        table *= 8
        return torch.sign(table) * torch.log2(torch.abs(table) + 1.0) / 3.0


    @staticmethod
    def window_mask(h: int, w: int, window: tuple[int, ...], shift: tuple[int, int],
                            like: torch.Tensor) -> torch.Tensor:
        """``[windows, N, N]``: 0 where two tokens of a shifted window were neighbours before the roll, -100 where not
        (torchvision's ``shifted_window_attention`` mask of a ``h x w`` padded image)."""
        mask = like.new_zeros((h, w))
        rows = ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None))
        cols = ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None))
        count = 0
        for r in rows:
            for c in cols:
                mask[r[0]:r[1], c[0]:c[1]] = count
                count += 1
        mask = mask.view(h // window[0], window[0], w // window[1], window[1]).permute(0, 2, 1, 3)
        mask = mask.reshape(-1, window[0] * window[1])
        mask = mask.unsqueeze(1) - mask.unsqueeze(2)
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)

    def bias(self) -> torch.Tensor | None:
        """``[1, heads, N, N]``: the position bias added to every window's scores."""
        if self.position_bias == "none":
            return None
        n = self.window_size[0] * self.window_size[1]
        table = self.relative_position_bias_table if self.position_bias == "table" else \
            self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        bias = table[self.relative_position_index].view(n, n, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
        return 16 * torch.sigmoid(bias) if self.position_bias == "mlp" else bias

    def attend(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Attention within each window of ``x`` ``[B * windows, N, C]``; ``mask`` ``[windows, N, N]``."""
        bw, n, _ = x.shape
        q, k, v = (p(x).view(bw, n, self.num_heads, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        if self.cosine:
            attn = nn.functional.normalize(q, dim=-1) @ nn.functional.normalize(k, dim=-1).transpose(-2, -1)
            attn = attn * torch.clamp(self.logit_scale, max=4.605170185988092).exp()
        else:
            attn = (q * self.scale).matmul(k.transpose(-2, -1))
        bias = self.bias()
        if bias is not None:
            attn = attn + bias
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(bw // windows, windows, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = nn.functional.softmax(attn, dim=-1)
        attn = nn.functional.dropout(attn, p=self.dropout, training=self.training)
        return self.o_proj(attn.matmul(v).transpose(1, 2).reshape(bw, n, self.num_heads * self.head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)   # B, H, W, C
        b, h, w, c = x.shape
        wh, ww = self.window_size
        if self.grid:
            gh, gw = h // wh, w // ww
            windows = x.reshape(b, wh, gh, ww, gw, c).permute(0, 2, 4, 1, 3, 5).reshape(b * gh * gw, wh * ww, c)
            y = self.attend(windows, None).view(b, gh, gw, wh, ww, c).permute(0, 3, 1, 4, 2, 5)
            return y.reshape(b, h, w, c).permute(0, 3, 1, 2)
        x = nn.functional.pad(x, (0, 0, 0, (ww - w % ww) % ww, 0, (wh - h % wh) % wh))
        ph, pw = x.shape[1], x.shape[2]
        shift = (0 if wh >= ph else self.shift_size[0], 0 if ww >= pw else self.shift_size[1])
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = x.view(b, ph // wh, wh, pw // ww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, c)
        mask = self.window_mask(ph, pw, self.window_size, shift, x) if sum(shift) > 0 else None
        y = self.attend(windows, mask).view(b, ph // wh, pw // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
        y = y.reshape(b, ph, pw, c)
        if sum(shift) > 0:
            y = torch.roll(y, shifts=shift, dims=(1, 2))
        return y[:, :h, :w, :].permute(0, 3, 1, 2)


# ---- split attention ----------------------------------------------------------------------------------------------

def radix_softmax(x: torch.Tensor, radix: int, cardinality: int = 1) -> torch.Tensor:
    """timm's ``RadixSoftmax`` on ``N, C, ...``: the channels ``[cardinality, radix, i]`` softmaxed over the radix
    and laid out ``[radix, cardinality, i]``; a sigmoid when ``radix`` is 1."""
    if radix == 1:
        return torch.sigmoid(x)
    y = x.reshape(x.shape[0], cardinality, radix, -1).transpose(1, 2)
    return torch.softmax(y, dim=1).reshape(x.shape)
