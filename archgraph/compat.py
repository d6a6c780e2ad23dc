"""Importing torchvision everywhere.

torchvision's PyPI wheel cannot load its C++ ops on a CPU-only torch; its import then fails with
``RuntimeError: operator torchvision::nms does not exist`` because it registers fake kernels for ops whose schemas
were never defined. :func:`import_torchvision` retries after defining just those schemas, and only when that exact
failure happens, so a working install is never touched. Datasets, transforms and models work either way; only the
detection ops (nms, roi_align, ...) stay unavailable on such an install.
"""
from __future__ import annotations

import importlib
import sys

_MISSING_OP = "operator torchvision::nms does not exist"
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # keeps the schema definitions alive


def import_torchvision():
    """``import torchvision``, working around a wheel whose C++ ops cannot load (see module docstring)."""
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as err:
        if _MISSING_OP not in str(err):
            raise
    _define_missing_schemas()
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    return importlib.import_module("torchvision")


def _define_missing_schemas() -> None:
    global _library
    import torch
    if _library is None:
        _library = torch.library.Library("torchvision", "FRAGMENT")
    for op, schema in _SCHEMAS.items():
        if not hasattr(torch.ops.torchvision, op):
            _library.define(schema)


def import_timm():
    """``import timm`` (an optional dependency); timm imports torchvision, so that goes through
    :func:`import_torchvision` first."""
    import_torchvision()
    return importlib.import_module("timm")


def import_transformers():
    """``import transformers`` (an optional dependency); its image utilities import torchvision, so that goes
    through :func:`import_torchvision` first (where torchvision is installed)."""
    try:
        import_torchvision()
    except ImportError:
        pass
    return importlib.import_module("transformers")
