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
    return _resample(x, theta, label_channels)


def augment(x: torch.Tensor, settings, gen: torch.Generator, label_channels: int = 0) -> torch.Tensor:
    """Apply the run's :class:`~archgraph.data.settings.Augment` settings to an image batch (the last
    ``label_channels`` channels are per-pixel labels that move with the image)."""
    if x.dim() != 4:
        return x
    x = rotate_scale(x, settings.rotate, settings.scale, gen, label_channels)
    x = translate(x, settings.translate, gen)
    if settings.flip:
        x = hflip(x, gen)
    x = resized_crop(x, settings.random_resized_crop, gen, label_channels)
    return color_jitter(x, settings.color_jitter, gen, label_channels)


def resized_crop(x: torch.Tensor, min_area: float, gen: torch.Generator, label_channels: int = 0) -> torch.Tensor:
    """A random crop of each image of ``x`` covering ``[min_area, 1]`` of its area with an aspect ratio in
    ``[3/4, 4/3]``, stretched back to the image's size (torchvision's ``RandomResizedCrop(size, scale=(min_area,
    1))``, done as one affine resampling: bilinear, labels nearest).

    >>> x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    >>> resized_crop(x, 0.5, torch.Generator().manual_seed(0)).shape
    torch.Size([1, 1, 4, 4])
    """
    if min_area <= 0:
        return x
    n = x.shape[0]
    area = min_area + torch.rand(n, generator=gen, dtype=torch.float64) * (1 - min_area)
    log_ratio = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * torch.log(torch.tensor(4 / 3))
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=1.0)   # the crop's share of the width and height
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * (1 - w)
    ty = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * (1 - h)
    zero = torch.zeros(n, dtype=torch.float64)
    theta = torch.stack([torch.stack([w, zero, tx], 1), torch.stack([zero, h, ty], 1)], 1)
    return _resample(x, theta, label_channels)


def _resample(x: torch.Tensor, theta: torch.Tensor, label_channels: int) -> torch.Tensor:
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    grid = torch.nn.functional.affine_grid(theta.to(work).to(x.device), list(x.shape), align_corners=False)
    xf = x.to(work)
    split = x.shape[1] - label_channels
    parts = [torch.nn.functional.grid_sample(xf[:, :split], grid, mode="bilinear", align_corners=False)]
    if label_channels:
        parts.append(torch.nn.functional.grid_sample(xf[:, split:], grid, mode="nearest", align_corners=False))
    out = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
    return _back(out, x.dtype)


def _back(out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype.is_floating_point:
        return out.to(dtype)
    info = torch.iinfo(dtype)
    return out.round().clamp(info.min, info.max).to(dtype)


def color_jitter(x: torch.Tensor, strength: float, gen: torch.Generator, label_channels: int = 0) -> torch.Tensor:
    """Random brightness, contrast and saturation of each image of ``x``, each factor drawn from
    ``[1 - strength, 1 + strength]`` (torchvision's ``ColorJitter(strength, strength, strength)`` in a fixed order;
    saturation only for three channels). Values are clipped to the dtype's range (integers) or to ``[0, max]``.

    >>> x = torch.full((2, 3, 2, 2), 100, dtype=torch.uint8)
    >>> color_jitter(x, 0.0, torch.Generator()).equal(x)
    True
    """
    if strength <= 0:
        return x
    n = x.shape[0]
    split = x.shape[1] - label_channels
    img = x[:, :split].to(torch.float32)
    top = float(torch.iinfo(x.dtype).max) if not x.dtype.is_floating_point else float(img.max().clamp_min(1.0))

    def factor():
        return (1 + (torch.rand(n, generator=gen) * 2 - 1) * strength).view(n, 1, 1, 1).to(x.device)

    b, c, s = factor(), factor(), factor()
    img = (img * b).clamp(0, top)
    gray = img.mean(1, keepdim=True)
    img = ((img - gray.mean((2, 3), keepdim=True)) * c + gray.mean((2, 3), keepdim=True)).clamp(0, top)
    if split == 3:
        gray = (0.299 * img[:, 0:1] + 0.587 * img[:, 1:2] + 0.114 * img[:, 2:3])
        img = (gray + (img - gray) * s).clamp(0, top)
    out = _back(img, x.dtype)
    return torch.cat([out, x[:, split:]], 1) if label_channels else out
