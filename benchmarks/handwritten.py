"""The hand-written eager PyTorch baselines of the speed benchmarks.

They are the modules of tests/reference_models.py, which tests/test_seeds_equivalence.py proves equal to the built
graphs (float64, 1e-9); submodule names equal node ids, so ``load_state_dict(built.state_dict())`` copies weights.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reference_models import MLP, DenseNetConcat, DigitsCNN, MobileNetDepthwise, ResNetCifar, TinyCNN  # noqa: E402

#: seed name -> (hand-written class, input shape of one sample)
REFERENCES = {"tiny_cnn": (TinyCNN, (1, 28, 28)), "resnet_cifar": (ResNetCifar, (3, 32, 32)),
              "mobilenet_depthwise": (MobileNetDepthwise, (3, 32, 32)),
              "densenet_concat": (DenseNetConcat, (3, 32, 32)), "digits_cnn": (DigitsCNN, (1, 8, 8)),
              "mlp": (MLP, (64,))}
