"""The few torch modules the graph format needs that PyTorch does not ship."""
from __future__ import annotations

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


class Scale(nn.Module):
    """A learnable per-channel multiplier (ConvNeXt's layer scale, timm's ``LayerScale`` on tokens); ``weight`` has
    one entry per channel: the first axis of ``[C, H, W]`` and ``[F]``, the last of a sequence ``[T, D]``."""

    def __init__(self, num_channels: int, init: float = 1.0):
        super().__init__()
        self.num_channels = num_channels
        self.init = init
        self.weight = nn.Parameter(torch.full((num_channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:   # a sequence [B, T, D]: its channels are last
            return x * self.weight
        return x * self.weight.view(-1, *([1] * (x.dim() - 2)))


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
    opset 17 can export it; same parameters and the same values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.eps if self.eps is not None else torch.finfo(x.dtype).eps
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return y * self.weight if self.weight is not None else y


class Attention(nn.Module):
    """Multi-head self-attention as in nanoGPT and Hugging Face's Llama: ``q_proj``, ``k_proj``, ``v_proj`` and
    ``o_proj`` linears, heads a view ``[B, H, T, head_dim]`` of one projection, kv heads repeated in ``repeat_kv``
    order (query head ``h`` reads kv head ``h // (num_heads // kv_heads)``), ``F.scaled_dot_product_attention``.
    ``rotary``: Llama's rotary position embeddings on q and k (``rotate_half``; angles in float32, as Llama's)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, kv_heads: int, causal: bool = False,
                 bias: bool = True, dropout: float = 0.0, rotary: bool = False, rope_theta: float = 10000.0,
                 qkv_bias: bool | None = None):
        super().__init__()
        qkv_bias = bias if qkv_bias is None else qkv_bias
        self.dim, self.num_heads, self.head_dim, self.kv_heads = dim, num_heads, head_dim, kv_heads
        self.causal, self.dropout, self.rotary, self.rope_theta = causal, dropout, rotary, rope_theta
        self.q_proj = nn.Linear(dim, num_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(num_heads * head_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.rotary:
            q, k = self.rotate(q, t), self.rotate(k, t)
        if self.kv_heads != self.num_heads:
            k = k.repeat_interleave(self.num_heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.num_heads // self.kv_heads, dim=1)
        y = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                                       is_causal=self.causal)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))

    def rotate(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """``x * cos + rotate_half(x) * sin`` on ``[B, H, T, head_dim]``: the pair ``(i, i + head_dim/2)`` turns by
        ``t * rope_theta**(-2i/head_dim)`` at position ``t``."""
        half = self.head_dim // 2
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=x.device).float() / self.head_dim
        inv_freq = 1.0 / (self.rope_theta ** exponents)
        angles = torch.arange(t, device=x.device).float()[:, None] * inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin


class PositionEmbedding(nn.Module):
    """A learned ``[T, D]`` table added to a ``[B, T, D]`` input."""

    def __init__(self, num_positions: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_positions, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight


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


def adaptive_avg_pool2d_exportable(x: torch.Tensor, output_size) -> torch.Tensor:
    """``F.adaptive_avg_pool2d`` written as two fixed averaging matrix products where the output does not divide
    the input (the TorchScript ONNX exporter refuses that case); the same function up to float rounding."""
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % oh == 0 and w % ow == 0:
        return torch.nn.functional.adaptive_avg_pool2d(x, (oh, ow))
    return _averaging_matrix(h, oh, x) @ x @ _averaging_matrix(w, ow, x).t()
