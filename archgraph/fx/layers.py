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
    """A learnable per-channel multiplier (ConvNeXt's layer scale); ``weight`` has one entry per channel."""

    def __init__(self, num_channels: int, init: float = 1.0):
        super().__init__()
        self.num_channels = num_channels
        self.init = init
        self.weight = nn.Parameter(torch.full((num_channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
