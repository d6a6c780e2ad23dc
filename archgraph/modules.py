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
