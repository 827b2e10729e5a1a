"""Model factories by name, all plain torch: `mlp`, `cnn`, `resnet18`, `vgg16` (CIFAR-style) and `text` (hashed
n-grams); torchvision's ImageNet-shaped networks as `tv:resnet18` and `tv:vgg16` (torchvision imported lazily).

Every model is a `Classifier`: `features` maps an input batch to its penultimate-layer embedding,
`head` maps embeddings to class logits. Strategies that need embeddings (Cluster-Margin) call `embed`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from aal_rpc.models.cifar import resnet18, vgg16
from aal_rpc.models.classifier import Classifier
from aal_rpc.models.small import cnn, mlp
from aal_rpc.models.text import text
from aal_rpc.models.tv import tv_resnet18, tv_vgg16

ARCHITECTURES: dict[str, Callable[[tuple[int, ...], int], Classifier]] = {
    "mlp": mlp,
    "cnn": cnn,
    "resnet18": resnet18,
    "vgg16": vgg16,
    "text": text,
    "tv:resnet18": tv_resnet18,
    "tv:vgg16": tv_vgg16,
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


def input_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype a model's input batch must have: int64 for `text`, float32 for the rest."""
    return getattr(model, "input_dtype", torch.float32)


__all__ = ["ARCHITECTURES", "Classifier", "build_model", "expected_shapes", "input_dtype"]
