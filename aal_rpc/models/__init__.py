"""Model factories by name: `mlp` and `cnn` in plain torch, `resnet18` and `vgg16` through torchvision.

Every model is a `Classifier`: `features` maps an input batch to its penultimate-layer embedding,
`head` maps embeddings to class logits. Strategies that need embeddings (Cluster-Margin) call `embed`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from aal_rpc._vision import import_torchvision


class Classifier(nn.Module):
    def __init__(self, features: nn.Module, embedding_dim: int, num_classes: int):
        super().__init__()
        self.features = features
        self.embedding_dim = embedding_dim
        self.head = nn.Linear(embedding_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _mlp(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    d = 1
    for s in input_shape:
        d *= s
    features = nn.Sequential(nn.Flatten(), nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
    return Classifier(features, 128, num_classes)


def _cnn(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    if len(input_shape) != 3:
        raise ValueError(f"cnn needs image input (C, H, W); got {input_shape}")
    c = input_shape[0]
    features = nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2) if min(input_shape[1:]) >= 8 else nn.Identity(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Linear(64 * 16, 128), nn.ReLU(), nn.Dropout(0.25),
    )
    return Classifier(features, 128, num_classes)


def _resnet18(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    tv = import_torchvision()
    net = tv.models.resnet18(weights=None)
    if input_shape[0] != 3:
        net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    return Classifier(net, 512, num_classes)


def _vgg16(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    tv = import_torchvision()
    net = tv.models.vgg16(weights=None)
    if input_shape[0] != 3:
        net.features[0] = nn.Conv2d(input_shape[0], 64, kernel_size=3, padding=1)
    features = nn.Sequential(net.features, net.avgpool, nn.Flatten(), *list(net.classifier.children())[:-1])
    return Classifier(features, 4096, num_classes)


ARCHITECTURES: dict[str, Callable[[tuple[int, ...], int], Classifier]] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "resnet18": _resnet18,
    "vgg16": _vgg16,
}


def build_model(architecture: str, input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    try:
        factory = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(f"unknown model {architecture!r}; expected one of {sorted(ARCHITECTURES)}") from None
    return factory(tuple(input_shape), num_classes)


def expected_shapes(architecture: str, input_shape: tuple[int, ...], num_classes: int) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of an architecture: what uploaded weights must match."""
    with torch.device("meta"):
        model = build_model(architecture, input_shape, num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
