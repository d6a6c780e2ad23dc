"""Augmentation of whole batches of image tensors, with random numbers from one CPU generator.

Drawing on the CPU generator keeps runs reproducible on every device and lets a checkpoint save one RNG state.

>>> import torch
>>> x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
>>> translate(x, 1, torch.Generator().manual_seed(0)).shape
torch.Size([1, 1, 4, 4])
"""
from __future__ import annotations

import torch


def translate(x: torch.Tensor, pixels: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image of ``x`` (``N, C, H, W``) by up to ``pixels`` in each direction, filling with zeros
    (the same as torchvision's ``RandomCrop(size, padding=pixels)``)."""
    if pixels <= 0:
        return x
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pixels, pixels, pixels, pixels))
    dy = torch.randint(0, 2 * pixels + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pixels + 1, (n,), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip a random half of the images of ``x`` left to right."""
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def augment(x: torch.Tensor, settings, gen: torch.Generator) -> torch.Tensor:
    """Apply the run's :class:`~archgraph.train.config.Augment` settings to an image batch."""
    if x.dim() != 4:
        return x
    x = translate(x, settings.translate, gen)
    if settings.flip:
        x = hflip(x, gen)
    return x
