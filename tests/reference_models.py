"""Hand-written eager PyTorch modules of the example seeds, written from the architecture (not generated from the
graph). Submodules are named by node id, so ``load_state_dict(archgraph.build(g).state_dict())`` copies the weights.

tests/test_seeds_equivalence.py proves each equals its built graph (float64, 1e-9); the speed benchmarks
(benchmarks/step_speed.py, gpu_throughput.py) use the same modules as their hand-written baselines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ---- hand-written modules, one per seed ------------------------------------------------------------------------

def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1):
    """A k x k conv without bias (padding k // 2) and the batchnorm after it."""
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(32, 16)
        self.fc3 = nn.Linear(16, 10)

    def forward(self, x):
        x = self.drop(F.relu(self.fc1(x)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.bn1 = conv_bn(1, 4)
        self.c2, self.bn2 = conv_bn(4, 8)
        self.c3, self.bn3 = conv_bn(8, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.c1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.c2(x))), 2)
        x = F.relu(self.bn3(self.c3(x)))
        return self.fc(x.mean(dim=(2, 3)))


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.bn1 = conv_bn(1, 4)
        self.c2, self.bn2 = conv_bn(4, 8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.c1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.c2(x))), 2)
        return self.fc(torch.flatten(x, 1))


class ResNetCifar(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.stem_bn = conv_bn(3, 16)
        self.b1_c1, self.b1_bn1 = conv_bn(16, 16)
        self.b1_c2, self.b1_bn2 = conv_bn(16, 16)
        self.b2_c1, self.b2_bn1 = conv_bn(16, 32, stride=2)
        self.b2_c2, self.b2_bn2 = conv_bn(32, 32)
        self.b2_short, self.b2_sbn = conv_bn(16, 32, k=1, stride=2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        y = self.b1_bn2(self.b1_c2(F.relu(self.b1_bn1(self.b1_c1(x)))))
        x = F.relu(y + x)
        y = self.b2_bn2(self.b2_c2(F.relu(self.b2_bn1(self.b2_c1(x)))))
        x = F.relu(y + self.b2_sbn(self.b2_short(x)))
        return self.fc(x.mean(dim=(2, 3)))


class DenseNetConcat(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.l1_bn = nn.BatchNorm2d(16)
        self.l1_conv = nn.Conv2d(16, 8, 3, padding=1, bias=False)
        self.l2_bn = nn.BatchNorm2d(24)
        self.l2_conv = nn.Conv2d(24, 8, 3, padding=1, bias=False)
        self.t_bn = nn.BatchNorm2d(32)
        self.t_conv = nn.Conv2d(32, 16, 1, bias=False)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        s = self.stem(x)
        a = self.l1_conv(F.relu(self.l1_bn(s)))
        b = self.l2_conv(F.relu(self.l2_bn(torch.cat([s, a], 1))))
        t = self.t_conv(F.relu(self.t_bn(torch.cat([s, a, b], 1))))
        t = F.avg_pool2d(t, 2)
        return self.fc(t.mean(dim=(2, 3)))


class MobileNetDepthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.stem_bn = conv_bn(3, 16, stride=2)
        self.dw1, self.dw1_bn = conv_bn(16, 16, groups=16)
        self.pw1, self.pw1_bn = conv_bn(16, 24, k=1)
        self.ex, self.ex_bn = conv_bn(24, 48, k=1)
        self.dw2, self.dw2_bn = conv_bn(48, 48, groups=48)
        self.proj, self.proj_bn = conv_bn(48, 24, k=1)
        self.head, self.head_bn = conv_bn(24, 64, k=1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu6(self.stem_bn(self.stem(x)))
        x = F.relu6(self.dw1_bn(self.dw1(x)))
        short = self.pw1_bn(self.pw1(x))
        y = F.relu6(self.ex_bn(self.ex(short)))
        y = F.relu6(self.dw2_bn(self.dw2(y)))
        x = self.proj_bn(self.proj(y)) + short
        x = F.hardswish(self.head_bn(self.head(x)))
        return self.fc(self.drop(x.mean(dim=(2, 3))))


# -- seeds of the per-weight pruning methods (Gumbel, Budget) --

class WideCNN(nn.Module):
    """digits_wide and mnist_wide: conv blocks of 3x3 conv (no bias), batchnorm, ReLU (max-pooled as listed), then a
    linear classifier on the flattened features."""

    def __init__(self, widths, pools, features):
        super().__init__()
        self.pools = pools
        channels = 1
        for i, width in enumerate(widths, 1):
            setattr(self, f"c{i}", nn.Conv2d(channels, width, 3, padding=1, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(width))
            channels = width
        self.depth = len(widths)
        self.fc = nn.Linear(features, 10)

    def forward(self, x):
        for i in range(1, self.depth + 1):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"c{i}")(x)))
            if i in self.pools:
                x = F.max_pool2d(x, 2)
        return self.fc(torch.flatten(x, 1))


def DigitsWide():
    return WideCNN((16, 32), pools=(2,), features=32 * 4 * 4)


def MnistWide():
    return WideCNN((16, 32, 32), pools=(1, 2, 3), features=32 * 3 * 3)


class VGG19Cifar(nn.Module):
    """VGG-19 with batchnorm for CIFAR: blocks of 2, 2, 4, 4, 4 convs (64 to 512 channels), a max-pool after each,
    one linear classifier on the 512 features left."""

    BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))

    def __init__(self):
        super().__init__()
        channels = 3
        for b, (width, n) in enumerate(self.BLOCKS, 1):
            for i in range(1, n + 1):
                setattr(self, f"c{b}_{i}", nn.Conv2d(channels, width, 3, padding=1, bias=False))
                setattr(self, f"bn{b}_{i}", nn.BatchNorm2d(width))
                channels = width
        self.fc = nn.Linear(512, 10)

    def forward(self, x):
        for b, (_, n) in enumerate(self.BLOCKS, 1):
            for i in range(1, n + 1):
                x = F.relu(getattr(self, f"bn{b}_{i}")(getattr(self, f"c{b}_{i}")(x)))
            x = F.max_pool2d(x, 2)
        return self.fc(torch.flatten(x, 1))


HAND_WRITTEN = {
    "mlp": (MLP, (64,)),
    "tiny_cnn": (TinyCNN, (1, 28, 28)),
    "digits_cnn": (DigitsCNN, (1, 8, 8)),
    "resnet_cifar": (ResNetCifar, (3, 32, 32)),
    "densenet_concat": (DenseNetConcat, (3, 32, 32)),
    "mobilenet_depthwise": (MobileNetDepthwise, (3, 32, 32)),
}
HAND_WRITTEN.update({   # seeds of the per-weight pruning methods
    "digits_wide": (DigitsWide, (1, 8, 8)),
    "mnist_wide": (MnistWide, (1, 28, 28)),
    "vgg19_cifar": (VGG19Cifar, (3, 32, 32)),
})


# ---- the GPU-sized seeds of CGaP and SCS (issue 5) ----------------------------------------------------------------

class ResNet20Half(nn.Module):
    """ResNet-20 for CIFAR at half width (8/16/32), option-B shortcuts where the shape changes."""

    def __init__(self):
        super().__init__()
        self.stem, self.stem_bn = conv_bn(3, 8)
        self.blocks = []
        cin = 8
        for s, w in enumerate((8, 16, 32), start=1):
            for b in range(1, 4):
                p, stride = f"s{s}b{b}", 2 if (b == 1 and s > 1) else 1
                self.add_module(f"{p}_c1", nn.Conv2d(cin, w, 3, stride=stride, padding=1, bias=False))
                self.add_module(f"{p}_bn1", nn.BatchNorm2d(w))
                self.add_module(f"{p}_c2", nn.Conv2d(w, w, 3, padding=1, bias=False))
                self.add_module(f"{p}_bn2", nn.BatchNorm2d(w))
                short = stride > 1 or cin != w
                if short:
                    self.add_module(f"{p}_sc", nn.Conv2d(cin, w, 1, stride=stride, bias=False))
                    self.add_module(f"{p}_sbn", nn.BatchNorm2d(w))
                self.blocks.append((p, short))
                cin = w
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        for p, short in self.blocks:
            m = lambda name: getattr(self, f"{p}_{name}")   # noqa: E731
            y = m("bn2")(m("c2")(F.relu(m("bn1")(m("c1")(x)))))
            x = F.relu(y + (m("sbn")(m("sc")(x)) if short else x))
        return self.fc(x.mean(dim=(2, 3)))


class VGG19Quarter(nn.Module):
    """VGG-19 with batchnorm for CIFAR-100 at a quarter of the width (16..128 channels)."""

    STAGES = [[16, 16], [32, 32], [64] * 4, [128] * 4, [128] * 4]

    def __init__(self):
        super().__init__()
        cin = 3
        for s, widths in enumerate(self.STAGES, start=1):
            for i, w in enumerate(widths, start=1):
                self.add_module(f"s{s}c{i}", nn.Conv2d(cin, w, 3, padding=1, bias=False))
                self.add_module(f"s{s}c{i}_bn", nn.BatchNorm2d(w))
                cin = w
        self.fc = nn.Linear(128, 100)

    def forward(self, x):
        for s, widths in enumerate(self.STAGES, start=1):
            for i in range(1, len(widths) + 1):
                x = F.relu(getattr(self, f"s{s}c{i}_bn")(getattr(self, f"s{s}c{i}")(x)))
            x = F.max_pool2d(x, 2)
        return self.fc(torch.flatten(x, 1))


HAND_WRITTEN.update({"resnet20_half_cifar": (ResNet20Half, (3, 32, 32)),
                     "vgg19_quarter_cifar100": (VGG19Quarter, (3, 32, 32))})


# ---- the sequence seeds ---------------------------------------------------------------------------------------

class SelfAttention(nn.Module):
    """nanoGPT's causal self-attention with Llama's projection names, written out with an explicit softmax."""

    def __init__(self, d: int, heads: int, causal: bool):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        b, t, d = x.shape
        hd = d // self.heads
        q, k, v = (p(x).view(b, t, self.heads, hd).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        att = q @ k.transpose(-2, -1) / hd ** 0.5
        if self.causal:
            att = att.masked_fill(torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        return self.o_proj((att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d))


class Table(nn.Module):
    def __init__(self, *shape: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(*shape))


def _blocks(module: nn.Module, depth: int, d: int, heads: int, hidden: int, causal: bool, eps, norm=nn.LayerNorm
            ) -> None:
    for i in range(depth):
        setattr(module, f"b{i}_ln1", norm(d, eps=eps))
        setattr(module, f"b{i}_attn", SelfAttention(d, heads, causal))
        setattr(module, f"b{i}_ln2", norm(d, eps=eps))
        setattr(module, f"b{i}_fc", nn.Linear(d, hidden))
        setattr(module, f"b{i}_proj", nn.Linear(hidden, d))


def _run_blocks(module: nn.Module, x, depth: int):
    for i in range(depth):
        x = x + getattr(module, f"b{i}_attn")(getattr(module, f"b{i}_ln1")(x))
        h = getattr(module, f"b{i}_ln2")(x)
        x = x + getattr(module, f"b{i}_proj")(nn.functional.gelu(getattr(module, f"b{i}_fc")(h)))
    return x


class GPTTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(65, 32)
        self.wpe = Table(32, 32)
        _blocks(self, 2, 32, 2, 128, True, 1e-5)
        self.ln_f = nn.LayerNorm(32)
        self.lm_head = nn.Linear(32, 65, bias=False)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe.weight
        return self.lm_head(self.ln_f(_run_blocks(self, x, 2)))


class ViTTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(1, 32, 7, stride=7)
        self.cls = Table(1, 32)
        self.pos = Table(17, 32)
        _blocks(self, 2, 32, 4, 64, False, 1e-6)
        self.ln_f = nn.LayerNorm(32, eps=1e-6)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.weight.expand(x.shape[0], 1, 32), x], dim=1) + self.pos.weight
        return self.head(self.ln_f(_run_blocks(self, x, 2))[:, 0])


#: a token input is given as {"shape": [T], "vocab": V}
HAND_WRITTEN.update({"gpt_tiny": (GPTTiny, {"shape": (32,), "vocab": 65}), "vit_tiny": (ViTTiny, (1, 28, 28))})


# ---- dense prediction (issue 14) --------------------------------------------------------------------------------

class UNetTiny(nn.Module):
    """The hand-written twin of ``examples/seeds/unet_tiny.yaml`` and, 1 input channel, width 16 and 11 classes,
    of ``unet_scenes.yaml`` / ``unet_scenes64.yaml`` (attribute names are the node ids)."""

    def __init__(self, classes: int = 4, in_channels: int = 3, width: int = 8):
        super().__init__()
        w = width
        self.e1_conv, self.e1_bn = nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w)
        self.e2_conv, self.e2_bn = nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w)
        self.mid_conv, self.mid_bn = nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False), nn.BatchNorm2d(4 * w)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.d2_conv, self.d2_bn = nn.Conv2d(4 * w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w)
        self.up1_conv = nn.Conv2d(2 * w, w, 1)
        self.d1_conv, self.d1_bn = nn.Conv2d(2 * w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w)
        self.head = nn.Conv2d(w, classes, 1)

    def forward(self, x):
        e1 = torch.relu(self.e1_bn(self.e1_conv(x)))
        e2 = torch.relu(self.e2_bn(self.e2_conv(nn.functional.max_pool2d(e1, 2))))
        mid = torch.relu(self.mid_bn(self.mid_conv(nn.functional.max_pool2d(e2, 2))))
        d2 = torch.relu(self.d2_bn(self.d2_conv(torch.cat([self.up2(mid), e2], 1))))
        up1 = self.up1_conv(nn.functional.interpolate(d2, scale_factor=2, mode="nearest"))
        d1 = torch.relu(self.d1_bn(self.d1_conv(torch.cat([up1, e1], 1))))
        return self.head(d1)


HAND_WRITTEN.update({"unet_tiny": (UNetTiny, (3, 32, 32)),
                     "unet_scenes": (lambda: UNetTiny(11, 1, 16), (1, 32, 32)),
                     "unet_scenes64": (lambda: UNetTiny(11, 1, 16), (1, 64, 64))})


# ---- recurrent language models (issue 14) ------------------------------------------------------------------------

class LSTMLM(nn.Module):
    """The hand-written twin of ``examples/seeds/lstm_lm.yaml``: a char-level 2-layer LSTM language model."""

    def __init__(self, vocab: int = 65, dim: int = 32, hidden: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, num_layers=2, batch_first=True, dropout=0.2)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        out, _ = self.lstm(self.embed(tokens))
        return self.head(self.drop(out))


HAND_WRITTEN.update({"lstm_lm": (LSTMLM, {"shape": (32,), "vocab": 65})})


# ---- the seeds of the text and scene examples ------------------------------------------------------------------

class GPTText(nn.Module):
    """``examples/seeds/gpt_text.yaml``: one pre-norm block with rmsnorms (eps None: the dtype's epsilon)."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(128, 32)
        self.wpe = Table(32, 32)
        _blocks(self, 1, 32, 2, 64, True, None, norm=nn.RMSNorm)
        self.ln_f = nn.RMSNorm(32, eps=None)
        self.lm_head = nn.Linear(32, 128, bias=False)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe.weight
        return self.lm_head(self.ln_f(_run_blocks(self, x, 1)))


class LSTMText(nn.Module):
    """``examples/seeds/lstm_text.yaml``."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(128, 32)
        self.lstm = nn.LSTM(32, 64, batch_first=True)
        self.head = nn.Linear(64, 128)

    def forward(self, tokens):
        return self.head(self.lstm(self.embed(tokens))[0])


class FCNScenes(nn.Module):
    """``examples/seeds/fcn_scenes.yaml`` (``dilation`` 4) and ``fcn_scenes64.yaml`` (8)."""

    def __init__(self, last_dilation: int = 4):
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.bn2 = nn.Conv2d(8, 16, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(16)
        d = last_dilation
        self.c3, self.bn3 = nn.Conv2d(16, 16, 3, padding=d, dilation=d, bias=False), nn.BatchNorm2d(16)
        self.out = nn.Conv2d(16, 11, 1)

    def forward(self, x):
        x = torch.relu(self.bn1(self.c1(x)))
        x = torch.relu(self.bn2(self.c2(x)))
        return self.out(torch.relu(self.bn3(self.c3(x))))


HAND_WRITTEN.update({"gpt_text": (GPTText, {"shape": (32,), "vocab": 128}),
                     "lstm_text": (LSTMText, {"shape": (32,), "vocab": 128}),
                     "fcn_scenes": (FCNScenes, (1, 32, 32)),
                     "fcn_scenes64": (lambda: FCNScenes(8), (1, 64, 64))})


# ---- the MNIST GNAP seeds (issue 16) -----------------------------------------------------------------------------

class MnistDeep(nn.Module):
    """``examples/seeds/mnist_deep*.yaml``: conv-conv-pool, conv-conv-pool, conv (3x3, batchnorm, ReLU), global
    average pooling, a linear classifier."""

    def __init__(self, *widths: int):
        super().__init__()
        chans = (1, *widths)
        for i in range(5):
            setattr(self, f"c{i + 1}", nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False))
            setattr(self, f"bn{i + 1}", nn.BatchNorm2d(chans[i + 1]))
        self.fc = nn.Linear(widths[-1], 10)

    def forward(self, x):
        for i in range(5):
            x = torch.relu(getattr(self, f"bn{i + 1}")(getattr(self, f"c{i + 1}")(x)))
            if i in (1, 3):
                x = nn.functional.max_pool2d(x, 2)
        return self.fc(x.mean((2, 3)))


HAND_WRITTEN.update({"mnist_deep": (lambda: MnistDeep(8, 8, 12, 12, 16), (1, 28, 28)),
                     "mnist_deep_1k5": (lambda: MnistDeep(4, 6, 8, 8, 12), (1, 28, 28)),
                     "mnist_deep_575": (lambda: MnistDeep(4, 4, 6, 6, 8), (1, 28, 28)),
                     "fashion_deep": (lambda: MnistDeep(16, 16, 24, 24, 32), (1, 28, 28))})


# ---- the seeds of the user-data examples (examples/data_*.yaml) ----------------------------------------------------

class ShapesCNN(nn.Module):
    """``examples/seeds/shapes_cnn.yaml``: three conv-bn-relu stages (pooling after the first two), global average
    pooling, three classes."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn1 = conv_bn(3, 8)
        self.c2, self.bn2 = conv_bn(8, 16)
        self.c3, self.bn3 = conv_bn(16, 16)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.c1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.c2(x))), 2)
        x = F.relu(self.bn3(self.c3(x)))
        return self.fc(x.mean(dim=(2, 3)))


class GPTBpe(nn.Module):
    """``examples/seeds/gpt_bpe.yaml``: two pre-norm blocks (4 heads of 16, a 4x GELU MLP) over 512 BPE ids."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(512, 64)
        self.wpe = Table(64, 64)
        _blocks(self, 2, 64, 4, 256, True, 1e-5)
        self.ln_f = nn.LayerNorm(64)
        self.lm_head = nn.Linear(64, 512, bias=False)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe.weight[: idx.shape[1]]
        return self.lm_head(self.ln_f(_run_blocks(self, x, 2)))


HAND_WRITTEN.update({"shapes_cnn": (ShapesCNN, (3, 32, 32)),
                     "gpt_bpe": (GPTBpe, {"shape": (64,), "vocab": 512})})


# ---- the headline seeds (issue 30) --------------------------------------------------------------------------------

class UNetScenesDeep(nn.Module):
    """``examples/seeds/unet_scenes_deep.yaml``: a three-stage U-Net (16, 32, 64 channels, a 64-channel bottleneck at
    a quarter of a quarter of a quarter of the input), two transposed-conv upsamplings and one nearest one with a
    1x1 conv, skip concats, 11 classes."""

    def __init__(self):
        super().__init__()
        self.e1_conv, self.e1_bn = conv_bn(1, 16)
        self.e2_conv, self.e2_bn = conv_bn(16, 32)
        self.e3_conv, self.e3_bn = conv_bn(32, 64)
        self.mid_conv, self.mid_bn = conv_bn(64, 64)
        self.up3 = nn.ConvTranspose2d(64, 32, 2, stride=2)
        self.d3_conv, self.d3_bn = conv_bn(96, 32)
        self.up2 = nn.ConvTranspose2d(32, 32, 2, stride=2)
        self.d2_conv, self.d2_bn = conv_bn(64, 32)
        self.up1_conv = nn.Conv2d(32, 16, 1)
        self.d1_conv, self.d1_bn = conv_bn(32, 16)
        self.head = nn.Conv2d(16, 11, 1)

    def forward(self, x):
        e1 = F.relu(self.e1_bn(self.e1_conv(x)))
        e2 = F.relu(self.e2_bn(self.e2_conv(F.max_pool2d(e1, 2))))
        e3 = F.relu(self.e3_bn(self.e3_conv(F.max_pool2d(e2, 2))))
        mid = F.relu(self.mid_bn(self.mid_conv(F.max_pool2d(e3, 2))))
        d3 = F.relu(self.d3_bn(self.d3_conv(torch.cat([self.up3(mid), e3], 1))))
        d2 = F.relu(self.d2_bn(self.d2_conv(torch.cat([self.up2(d3), e2], 1))))
        up1 = self.up1_conv(F.interpolate(d2, scale_factor=2, mode="nearest"))
        d1 = F.relu(self.d1_bn(self.d1_conv(torch.cat([up1, e1], 1))))
        return self.head(d1)


class MnistTiny(nn.Module):
    """``examples/seeds/mnist_tiny.yaml``: a 3x3 conv (6) and max pooling, then four unpadded depthwise-separable
    stages 6->8->11->12->10 (batchnorm and ReLU after each pointwise conv), global average pooling and a linear
    classifier 10->10: 979 parameters."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn1 = conv_bn(1, 6)
        for i, (cin, cout) in enumerate([(6, 8), (8, 11), (11, 12), (12, 10)], 2):
            setattr(self, f"dw{i}", nn.Conv2d(cin, cin, 3, groups=cin, bias=False))
            setattr(self, f"pw{i}", nn.Conv2d(cin, cout, 1, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(cout))
        self.fc = nn.Linear(10, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.c1(x))), 2)
        for i in range(2, 6):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"pw{i}")(getattr(self, f"dw{i}")(x))))
        return self.fc(x.mean(dim=(2, 3)))


class UNetScenes64Deep(nn.Module):
    """``examples/seeds/unet_scenes64_deep.yaml``: a four-stage U-Net for 64x64 scenes (8, 16, 32, 64 channels, a
    64-channel bottleneck at 4x4), three transposed-conv upsamplings and one nearest one with a 1x1 conv, skip
    concats, 11 classes."""

    def __init__(self):
        super().__init__()
        self.e1_conv, self.e1_bn = conv_bn(1, 8)
        self.e2_conv, self.e2_bn = conv_bn(8, 16)
        self.e3_conv, self.e3_bn = conv_bn(16, 32)
        self.e4_conv, self.e4_bn = conv_bn(32, 64)
        self.mid_conv, self.mid_bn = conv_bn(64, 64)
        self.up4 = nn.ConvTranspose2d(64, 32, 2, stride=2)
        self.d4_conv, self.d4_bn = conv_bn(96, 32)
        self.up3 = nn.ConvTranspose2d(32, 32, 2, stride=2)
        self.d3_conv, self.d3_bn = conv_bn(64, 32)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.d2_conv, self.d2_bn = conv_bn(32, 16)
        self.up1_conv = nn.Conv2d(16, 8, 1)
        self.d1_conv, self.d1_bn = conv_bn(16, 8)
        self.head = nn.Conv2d(8, 11, 1)

    def forward(self, x):
        e1 = F.relu(self.e1_bn(self.e1_conv(x)))
        e2 = F.relu(self.e2_bn(self.e2_conv(F.max_pool2d(e1, 2))))
        e3 = F.relu(self.e3_bn(self.e3_conv(F.max_pool2d(e2, 2))))
        e4 = F.relu(self.e4_bn(self.e4_conv(F.max_pool2d(e3, 2))))
        mid = F.relu(self.mid_bn(self.mid_conv(F.max_pool2d(e4, 2))))
        d4 = F.relu(self.d4_bn(self.d4_conv(torch.cat([self.up4(mid), e4], 1))))
        d3 = F.relu(self.d3_bn(self.d3_conv(torch.cat([self.up3(d4), e3], 1))))
        d2 = F.relu(self.d2_bn(self.d2_conv(torch.cat([self.up2(d3), e2], 1))))
        up1 = self.up1_conv(F.interpolate(d2, scale_factor=2, mode="nearest"))
        d1 = F.relu(self.d1_bn(self.d1_conv(torch.cat([up1, e1], 1))))
        return self.head(d1)


HAND_WRITTEN.update({"unet_scenes_deep": (UNetScenesDeep, (1, 32, 32)), "mnist_tiny": (MnistTiny, (1, 28, 28)),
                     "unet_scenes64_deep": (UNetScenes64Deep, (1, 64, 64))})
