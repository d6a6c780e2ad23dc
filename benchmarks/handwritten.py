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


class MobileNetDepthwise(nn.Module):
    """examples/seeds/mobilenet_depthwise.yaml"""

    def __init__(self):
        super().__init__()
        conv = lambda i, o, k, s=1, g=1: nn.Conv2d(i, o, k, stride=s, padding=k // 2, groups=g, bias=False)
        self.stem, self.stem_bn = conv(3, 16, 3, s=2), nn.BatchNorm2d(16)
        self.dw1, self.dw1_bn = conv(16, 16, 3, g=16), nn.BatchNorm2d(16)
        self.pw1, self.pw1_bn = conv(16, 24, 1), nn.BatchNorm2d(24)
        self.ex, self.ex_bn = conv(24, 48, 1), nn.BatchNorm2d(48)
        self.dw2, self.dw2_bn = conv(48, 48, 3, g=48), nn.BatchNorm2d(48)
        self.proj, self.proj_bn = conv(48, 24, 1), nn.BatchNorm2d(24)
        self.head, self.head_bn = conv(24, 64, 1), nn.BatchNorm2d(64)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu6(self.stem_bn(self.stem(x)))
        x = F.relu6(self.dw1_bn(self.dw1(x)))
        x = self.pw1_bn(self.pw1(x))
        y = F.relu6(self.ex_bn(self.ex(x)))
        y = F.relu6(self.dw2_bn(self.dw2(y)))
        x = self.proj_bn(self.proj(y)) + x
        x = F.hardswish(self.head_bn(self.head(x)))
        return self.fc(self.drop(x.mean((2, 3))))


class DenseNetConcat(nn.Module):
    """examples/seeds/densenet_concat.yaml"""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.l1_bn, self.l1_conv = nn.BatchNorm2d(16), nn.Conv2d(16, 8, 3, padding=1, bias=False)
        self.l2_bn, self.l2_conv = nn.BatchNorm2d(24), nn.Conv2d(24, 8, 3, padding=1, bias=False)
        self.t_bn, self.t_conv = nn.BatchNorm2d(32), nn.Conv2d(32, 16, 1, bias=False)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        s = self.stem(x)
        a = self.l1_conv(F.relu(self.l1_bn(s)))
        b = self.l2_conv(F.relu(self.l2_bn(torch.cat([s, a], 1))))
        t = self.t_conv(F.relu(self.t_bn(torch.cat([s, a, b], 1))))
        return self.fc(F.avg_pool2d(t, 2).mean((2, 3)))


class MLP(nn.Module):
    """examples/seeds/mlp.yaml"""

    def __init__(self):
        super().__init__()
        self.fc1, self.drop = nn.Linear(64, 32), nn.Dropout(0.1)
        self.fc2, self.fc3 = nn.Linear(32, 16), nn.Linear(16, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(self.drop(F.relu(self.fc1(x))))))


class DigitsCNN(nn.Module):
    """examples/seeds/digits_cnn.yaml"""

    def __init__(self):
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.c2, self.bn2 = nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.c1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.c2(x))), 2)
        return self.fc(x.flatten(1))


#: seed name -> (hand-written class, input shape of one sample)
REFERENCES = {"tiny_cnn": (TinyCNN, (1, 28, 28)), "resnet_cifar": (ResNetCifar, (3, 32, 32)),
              "mobilenet_depthwise": (MobileNetDepthwise, (3, 32, 32)),
              "densenet_concat": (DenseNetConcat, (3, 32, 32)), "digits_cnn": (DigitsCNN, (1, 8, 8)),
              "mlp": (MLP, (64,))}
