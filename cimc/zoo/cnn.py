"""Random-weight CNNs in plain PyTorch: ResNet (basic blocks) and MobileNetV2 shapes.

The CIM compilers' benchmarks (PUMA, PIMCOMP, CIM-MLC) are CNNs; these give cimc the same
workloads without torchvision or downloads. Every BatchNorm gets non-trivial statistics
(mean, variance, gamma, beta drawn from a seeded generator), so folding them into the
convs is really exercised. `resnet("resnet18")` is ResNet-18's layer shapes (224x224
inputs in the benchmark); the `tiny` sizes keep tests fast.

    model = build_cnn("resnet", "tiny")          # eval mode, input [1, 3, 32, 32]
    x = cnn_input(model)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cimc.errors import CimcError


@dataclass(frozen=True)
class CnnSize:
    widths: tuple[int, ...]  # per stage (ResNet) or per bottleneck group (MobileNetV2)
    blocks: tuple[int, ...]  # blocks per stage
    stem: int
    classes: int
    image: int  # input height and width


CNN_SIZES: dict[str, dict[str, CnnSize]] = {
    "resnet": {
        "tiny": CnnSize((8, 16), (1, 1), 8, 10, 32),
        "resnet18": CnnSize((64, 128, 256, 512), (2, 2, 2, 2), 64, 1000, 224),
    },
    "mobilenetv2": {
        "tiny": CnnSize((8, 12, 16), (1, 2, 1), 8, 10, 32),
        "mobilenetv2": CnnSize(
            (16, 24, 32, 64, 96, 160, 320), (1, 2, 3, 4, 3, 3, 1), 32, 1000, 224
        ),
    },
}


def _conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(cout)]


class _Basic(nn.Module):
    """ResNet's basic block: two 3x3 conv-BN, a 1x1 conv-BN shortcut when shapes change."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(cin, cout, 3, stride), nn.ReLU(), *_conv_bn(cout, cout, 3, 1)
        )
        same = stride == 1 and cin == cout
        self.short = nn.Identity() if same else nn.Sequential(*_conv_bn(cin, cout, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


class _Inverted(nn.Module):
    """MobileNetV2's inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project (ReLU6)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        h = cin * expand
        self.residual = stride == 1 and cin == cout
        layers = [*_conv_bn(cin, h, 1, 1), nn.ReLU6()] if expand != 1 else []
        layers += [*_conv_bn(h, h, 3, stride, groups=h), nn.ReLU6(), *_conv_bn(h, cout, 1, 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class Cnn(nn.Module):
    def __init__(self, features: nn.Module, width: int, classes: int, image: int) -> None:
        super().__init__()
        self.features = features
        self.fc = nn.Linear(width, classes)
        self.image = image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.fc(torch.flatten(pooled, 1))


def _resnet(size: CnnSize) -> Cnn:
    layers: list[nn.Module] = [*_conv_bn(3, size.stem, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = size.stem
    for stage, (width, count) in enumerate(zip(size.widths, size.blocks, strict=True)):
        for k in range(count):
            layers.append(_Basic(cin, width, 2 if stage > 0 and k == 0 else 1))
            cin = width
    return Cnn(nn.Sequential(*layers), cin, size.classes, size.image)


def _mobilenet_v2(size: CnnSize) -> Cnn:
    layers: list[nn.Module] = [*_conv_bn(3, size.stem, 3, 2), nn.ReLU6()]
    cin = size.stem
    for group, (width, count) in enumerate(zip(size.widths, size.blocks, strict=True)):
        for k in range(count):
            stride = 2 if group in (1, 2, 3, 5) and k == 0 else 1
            layers.append(_Inverted(cin, width, stride, 1 if group == 0 else 6))
            cin = width
    last = 4 * cin
    layers += [*_conv_bn(cin, last, 1, 1), nn.ReLU6()]
    return Cnn(nn.Sequential(*layers), last, size.classes, size.image)


_BUILDERS = {"resnet": _resnet, "mobilenetv2": _mobilenet_v2}


def build_cnn(family: str, size: str = "tiny", seed: int = 0) -> Cnn:
    """An eval-mode CNN with seeded weights and batch-norm statistics."""
    if family not in CNN_SIZES or size not in CNN_SIZES[family]:
        known = ", ".join(f"{f}:{s}" for f in CNN_SIZES for s in CNN_SIZES[f])
        raise CimcError(f"unknown CNN {family}:{size} (known: {known})", "cnn zoo")
    torch.manual_seed(seed)
    model = _BUILDERS[family](CNN_SIZES[family][size])
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.copy_(_uniform(rng, -0.5, 0.5, n))
                module.running_var.copy_(_uniform(rng, 0.5, 2.0, n))
                module.weight.copy_(_uniform(rng, 0.5, 1.5, n))
                module.bias.copy_(_uniform(rng, -0.3, 0.3, n))
    return model.eval()


def _uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> torch.Tensor:
    return torch.from_numpy(rng.uniform(lo, hi, n).astype(np.float32))


def cnn_input(model: Cnn, seed: int = 1) -> torch.Tensor:
    """One normalized image [1, 3, H, W] for `model`."""
    rng = np.random.default_rng(seed)
    shape = (1, 3, model.image, model.image)
    return torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
