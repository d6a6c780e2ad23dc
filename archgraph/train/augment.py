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


def rotate_scale(x: torch.Tensor, degrees: float, scale: float, gen: torch.Generator,
                 label_channels: int = 0) -> torch.Tensor:
    """Rotate each image of ``x`` (``N, C, H, W``) about its centre by an angle drawn uniformly from
    ``[-degrees, degrees]`` and zoom it by a factor from ``[1 - scale, 1 + scale]`` (torchvision's
    ``RandomAffine(degrees, scale=...)``; zeros fill what comes in from outside). Images are resampled bilinearly;
    the last ``label_channels`` channels (per-pixel labels) by their nearest pixel, so labels stay labels. The dtype
    is kept (integer images are rounded back).

    >>> x = torch.zeros(2, 1, 5, 5, dtype=torch.uint8); x[:, :, 2, 2] = 200
    >>> rotate_scale(x, 0.0, 0.0, torch.Generator().manual_seed(0)).equal(x)
    True
    """
    if degrees <= 0 and scale <= 0:
        return x
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * degrees * torch.pi / 180
    zoom = 1 + (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom   # the grid maps output to input coordinates
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros(n, dtype=torch.float64)], 1),
                         torch.stack([sin, cos, torch.zeros(n, dtype=torch.float64)], 1)], 1)
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    grid = torch.nn.functional.affine_grid(theta.to(work).to(x.device), list(x.shape), align_corners=False)
    xf = x.to(work)
    split = x.shape[1] - label_channels
    parts = [torch.nn.functional.grid_sample(xf[:, :split], grid, mode="bilinear", align_corners=False)]
    if label_channels:
        parts.append(torch.nn.functional.grid_sample(xf[:, split:], grid, mode="nearest", align_corners=False))
    out = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
    if x.dtype.is_floating_point:
        return out.to(x.dtype)
    info = torch.iinfo(x.dtype)
    return out.round().clamp(info.min, info.max).to(x.dtype)


def augment(x: torch.Tensor, settings, gen: torch.Generator, label_channels: int = 0) -> torch.Tensor:
    """Apply the run's :class:`~archgraph.train.config.Augment` settings to an image batch (the last
    ``label_channels`` channels are per-pixel labels that move with the image)."""
    if x.dim() != 4:
        return x
    x = rotate_scale(x, settings.rotate, settings.scale, gen, label_channels)
    x = translate(x, settings.translate, gen)
    if settings.flip:
        x = hflip(x, gen)
    return x
