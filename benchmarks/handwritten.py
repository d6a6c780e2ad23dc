"""Hand-written eager PyTorch versions of example seeds: the baselines of the speed benchmarks.

Submodule names equal the graph's node ids, so ``load_state_dict(built.state_dict())`` copies the weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyCNN(nn.Module):
    """examples/seeds/tiny_cnn.yaml"""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.c1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.c2(x))), 2)
        x = F.relu(self.bn3(self.c3(x)))
        return self.fc(x.mean((2, 3)))


class ResNetCifar(nn.Module):
    """examples/seeds/resnet_cifar.yaml"""

    def __init__(self):
        super().__init__()
        conv = lambda i, o, k=3, s=1: nn.Conv2d(i, o, k, stride=s, padding=k // 2, bias=False)
        self.stem, self.stem_bn = conv(3, 16), nn.BatchNorm2d(16)
        self.b1_c1, self.b1_bn1 = conv(16, 16), nn.BatchNorm2d(16)
        self.b1_c2, self.b1_bn2 = conv(16, 16), nn.BatchNorm2d(16)
        self.b2_c1, self.b2_bn1 = conv(16, 32, s=2), nn.BatchNorm2d(32)
        self.b2_c2, self.b2_bn2 = conv(32, 32), nn.BatchNorm2d(32)
        self.b2_short, self.b2_sbn = conv(16, 32, k=1, s=2), nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        y = F.relu(self.b1_bn1(self.b1_c1(x)))
        x = F.relu(self.b1_bn2(self.b1_c2(y)) + x)
        y = F.relu(self.b2_bn1(self.b2_c1(x)))
        x = F.relu(self.b2_bn2(self.b2_c2(y)) + self.b2_sbn(self.b2_short(x)))
        return self.fc(x.mean((2, 3)))


REFERENCES = {"tiny_cnn": (TinyCNN, (1, 28, 28)), "resnet_cifar": (ResNetCifar, (3, 32, 32))}
