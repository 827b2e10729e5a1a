"""`mlp` and `cnn`: small plain-torch models that train in seconds on a CPU."""

from __future__ import annotations

from torch import nn

from aal_rpc.models.classifier import Classifier, image_shape

CNN_WIDTHS = (32, 64)  # channels of the two conv blocks
CNN_EMBEDDING = 128
CNN_MAX_MAP = 8  # maps larger than 8x8 after the blocks (inputs over 32x32) are average-pooled down to it


def mlp(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    d = 1
    for s in input_shape:
        d *= s
    features = nn.Sequential(nn.Flatten(), nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
    return Classifier(features, 128, num_classes)


def cnn(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    """Two blocks of two 3x3 convs (batchnorm, ReLU) and a 2x2 max pool, then a 128-wide layer on the
    flattened map. The map keeps its spatial detail: 28x28 -> 7x7, 8x8 -> 2x2 (a pool is skipped where the
    map is already 1 pixel wide)."""
    c, h, w = image_shape("cnn", input_shape)
    layers: list[nn.Module] = []
    for width in CNN_WIDTHS:
        layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                   nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        if min(h, w) >= 2:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        c = width
    if max(h, w) > CNN_MAX_MAP:
        h, w = min(h, CNN_MAX_MAP), min(w, CNN_MAX_MAP)
        layers.append(nn.AdaptiveAvgPool2d((h, w)))
    layers += [nn.Dropout(0.25), nn.Flatten(), nn.Linear(c * h * w, CNN_EMBEDDING), nn.ReLU(), nn.Dropout(0.5)]
    return Classifier(nn.Sequential(*layers), CNN_EMBEDDING, num_classes)
