"""`resnet18` and `vgg16` as CIFAR networks in plain torch: 3x3 stems for 32x32 inputs, 512-d embeddings.

ResNet-18 (He et al. 2016) without the ImageNet stem's 7x7 stride-2 conv and max pool, whose 4x downsampling
leaves a 32x32 image 8x8 before the first block; VGG-16 (Simonyan & Zisserman 2015) with batchnorm and one
512-wide layer in place of the two 4096-wide ones (the CIFAR variant: 4096-wide layers add 100M parameters
for a 1x1x512 map). Any channel count works; on small inputs (8x8 digits) pools that would shrink a map
below 1x1 are skipped.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from aal_rpc.models.classifier import Classifier, image_shape

RESNET18_BLOCKS = ((64, 1), (128, 2), (256, 2), (512, 2))  # (width, stride of the first block), 2 blocks each
VGG16_LAYERS: tuple[int | Literal["M"], ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                                512, 512, 512, "M")
EMBEDDING_DIM = 512


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def resnet18(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    c, _, _ = image_shape("resnet18", input_shape)  # a stride-2 3x3 conv with padding 1 never maps below 1x1
    layers: list[nn.Module] = [nn.Conv2d(c, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    cin = 64
    for width, stride in RESNET18_BLOCKS:
        layers += [BasicBlock(cin, width, stride), BasicBlock(width, width, 1)]
        cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), EMBEDDING_DIM, num_classes)


def vgg16(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    c, h, w = image_shape("vgg16", input_shape)
    layers: list[nn.Module] = []
    for v in VGG16_LAYERS:
        if v == "M":
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            continue
        layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
        c = v
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # 1x1 already for 32x32; larger inputs average
               nn.Linear(512, EMBEDDING_DIM), nn.ReLU(), nn.Dropout(0.5)]
    return Classifier(nn.Sequential(*layers), EMBEDDING_DIM, num_classes)
