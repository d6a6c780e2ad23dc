"""Helpers for checking conversions against the original model (tests and benchmarks).

A freshly initialised torchvision model is a weak test of a conversion: its batch norms are near identities (mean 0,
var 1, weight 1, bias 0), ConvNeXt's layer scales are 1e-6 and several mobile nets output values around 1e-10, so a
wrong norm or a dropped residual branch would still "match". :func:`randomize_normalization` gives every norm,
bias and per-channel scale random values first, so outputs are O(1) and every layer shows in them.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import nn

from ..compat import import_timm, import_torchvision


def randomize_normalization(module: nn.Module, seed: int = 0, zeros: bool = False) -> nn.Module:
    """Give the 1-D weights (norm and scale weights, running variances) values in [0.5, 1.5), the biases and
    running means N(0, 0.1) values and relative position bias tables (Swin, MaxViT) N(0, 1) values, in place;
    returns ``module``. ``zeros``: also give every parameter that is still all zero N(0, 0.02) values (a fresh
    torchvision ViT's class token, attention input biases and head are zeros, which makes its output a constant
    and any comparison of outputs vacuous).

    >>> import torch
    >>> bn = randomize_normalization(torch.nn.BatchNorm2d(4))
    >>> bool((bn.running_var != 1).all())
    True
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if not t.is_floating_point():
                continue
            leaf = name.rpartition(".")[2]
            if leaf == "running_var" or "scale" in leaf or (t.dim() <= 1 and leaf == "weight"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif leaf in ("bias", "running_mean"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            elif leaf == "relative_position_bias_table":   # Swin's and MaxViT's, near zero when fresh
                t.copy_(torch.randn(t.shape, generator=gen))
        if zeros:
            for t in module.parameters():
                if t.is_floating_point() and t.numel() and not t.any():
                    t.copy_(torch.randn(t.shape, generator=gen) * 0.02)
    return module


def torchvision_model(name: str, num_classes: int = 1000, seed: int = 0) -> nn.Module:
    """A randomly initialised torchvision classification or segmentation model in eval mode (no download: a
    segmentation model's backbone is random too, and it has no auxiliary head)."""
    tv = import_torchvision()
    kwargs = {}
    if name in tv.models.list_models(module=tv.models.segmentation):
        kwargs = {"weights_backbone": None, "aux_loss": False}
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # googlenet's note about its init
        torch.manual_seed(seed)
        return tv.models.get_model(name, weights=None, num_classes=num_classes, **kwargs).eval()


def timm_model(name: str, num_classes: Optional[int] = None, seed: int = 0) -> nn.Module:
    """A randomly initialised timm model (``timm.create_model(name, pretrained=False)``) in eval mode; nothing is
    downloaded."""
    timm = import_timm()
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        return timm.create_model(name, pretrained=False, **kwargs).eval()


def main_output(y):
    """A model's output tensor: a segmentation model's ``{"out": ...}`` gives its ``out``."""
    return y["out"] if isinstance(y, dict) else y


def max_error(a: nn.Module, b: nn.Module, *inputs: torch.Tensor) -> float:
    """Largest absolute difference between the outputs of ``a`` and ``b`` on ``inputs`` (a dict output: its
    ``out``)."""
    with torch.no_grad():
        return float((main_output(a(*inputs)) - main_output(b(*inputs))).abs().max())
